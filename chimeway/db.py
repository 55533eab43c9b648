"""The database, bound late: models talk to ``proxy``; ``configure()`` points it at a real database.

- ``postgresql://`` → a pooled PostgreSQL database safe for many worker threads: one connection per
  thread, at most ``db_pool_size``, a checkout timeout, and server-side ``statement_timeout``,
  ``lock_timeout`` and ``idle_in_transaction_session_timeout`` so a stuck query or a leaked
  transaction can never hold locks for long. Sessions run in UTC.
- ``sqlite:///path`` → WAL journal, a busy timeout and IMMEDIATE transactions, so concurrent
  writers queue instead of failing with "database is locked" half-way through a transaction.
- an existing Peewee database → shared as it is (the application's connections and transactions).

Hand-written SQL (the hot path) goes through :func:`execute` and the helpers below, which hide the
two dialects' differences: placeholders, timestamps, booleans, JSON, and the append-only error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
from playhouse.pool import PooledPostgresqlDatabase

from chimeway.errors import APPEND_ONLY_SQLSTATE, ConfigurationError, EventLedgerImmutableError
from chimeway.wiring.config import Settings

logger = logging.getLogger("chimeway.db")

#: Every model and query uses this proxy; ``bind()`` decides what is behind it.
proxy = peewee.DatabaseProxy()

_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


class WalSqliteDatabase(peewee.SqliteDatabase):
    """SQLite in WAL mode. Switching a fresh file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once instead of waiting for the busy timeout when two processes open
    the same new file together (two ``chimeway migrate`` at deploy): so connecting retries."""

    def _connect(self) -> Any:
        deadline = time.monotonic() + 30
        while True:
            try:
                return super()._connect()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def session_options(statement_timeout_ms: int = 30_000) -> str:
    """The PostgreSQL session settings of every connection Chimeway opens, as libpq ``options``.

    Chimeway never changes the sessions of a database handed to ``configure(database=app_db)``: an
    application that wants the same guarantees passes this to its own database,
    ``PostgresqlDatabase(..., options=chimeway.db.session_options())``.
    """
    timeout = statement_timeout_ms
    # plan_cache_mode: the worker's prepared statements (Statement below) look rows up by key, and a
    # batch statement's custom plan, which PostgreSQL would otherwise redo at every call because the
    # batch's size changes its estimate, cost more to plan (~3 ms) than to run. Only prepared
    # statements have a plan cache: ad-hoc queries are planned as before.
    return (
        f"-c statement_timeout={timeout} -c lock_timeout={timeout} "
        f"-c idle_in_transaction_session_timeout={max(timeout * 2, 60_000)} -c timezone=UTC "
        "-c plan_cache_mode=force_generic_plan"
    )


def connect(settings: Settings) -> peewee.Database:
    """A new (unconnected) Peewee database for ``settings.database_url``."""
    url = settings.database_url
    if url.startswith("sqlite://"):
        path = ":memory:" if url == "sqlite://:memory:" else unquote(url[len("sqlite:///"):].split("?")[0])
        return WalSqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 30_000},
            timeout=30,
            lock_type="IMMEDIATE",
            check_same_thread=False,
        )
    parts = urlsplit(url)
    if not parts.path.strip("/"):
        raise ConfigurationError(
            "invalid CHIMEWAY_DATABASE_URL: no database name in the URL", variable="CHIMEWAY_DATABASE_URL"
        )
    options = session_options(settings.statement_timeout_ms)
    params: dict[str, Any] = {
        "host": parts.hostname or None,
        "port": parts.port or None,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "options": options,
        "application_name": "chimeway",
        "connect_timeout": 10,
    }
    params.update(dict(parse_qsl(parts.query)))
    return PooledPostgresqlDatabase(
        unquote(parts.path.lstrip("/")),
        max_connections=settings.db_pool_size,
        timeout=settings.db_pool_timeout_seconds,
        stale_timeout=300,
        **{k: v for k, v in params.items() if v is not None},
    )


def bind(database: peewee.Database) -> None:
    proxy.initialize(database)


def database() -> peewee.Database:
    """The database behind the proxy (raises if nothing is configured yet)."""
    if proxy.obj is None:
        raise ConfigurationError("Chimeway is not configured: call chimeway.configure() first")
    return proxy.obj


def is_postgres(db: peewee.Database | None = None) -> bool:
    return isinstance(db or database(), peewee.PostgresqlDatabase)


def is_sqlite(db: peewee.Database | None = None) -> bool:
    return isinstance(db or database(), peewee.SqliteDatabase)


def now() -> datetime:
    """The library's clock: aware UTC. Time comes from Python on both dialects (documented decision)."""
    return datetime.now(UTC)


def to_db_time(value: datetime | None, db: peewee.Database | None = None) -> Any:
    """A timestamp as the dialect stores it: aware datetime for PostgreSQL, sortable UTC text for SQLite."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: Chimeway stores aware UTC timestamps only")
    if is_sqlite(db):
        return value.astimezone(UTC).strftime(_SQLITE_TS)
    return value.astimezone(UTC)


def from_db_time(value: Any) -> datetime | None:
    if type(value) is datetime and value.tzinfo is UTC:  # PostgreSQL's, in a UTC session: as it is
        return value
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if isinstance(value, datetime) else None
    text = str(value)
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


#: One encoder for every JSON column (stateless, so shared by all threads; json.dumps builds one per call).
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def to_db_json(value: Any) -> str:
    return _JSON_ENCODER.encode(value if value is not None else {})


#: The same encoding, strict: a value JSON has no form for raises instead of being stored as its str(),
#: and NaN or Infinity (which PostgreSQL's jsonb refuses) raise instead of being written as bare words.
_STRICT_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def to_db_json_strict(value: Any) -> str:
    """:func:`to_db_json` for a value that must be stored exactly as given, or not at all.

    Raises TypeError (an object JSON has no form for) or ValueError (NaN, Infinity, a circular
    reference, text no database here can store: see :func:`storable_text`).
    """
    try:
        text = _STRICT_JSON_ENCODER.encode(value)
    except ValueError as err:
        if str(err).startswith("Out of range float"):  # the encoder's words for NaN and Infinity
            raise ValueError("NaN and Infinity have no JSON form") from err
        raise
    # Such text shows in the JSON as a \u0000 or \udxxx escape, so the walk runs only when one may be
    # there (any emoji too: the escapes of a surrogate pair are legal).
    if ("\\u0000" in text or "\\ud" in text) and not all(map(storable_text, _strings(value))):
        raise ValueError("a string holds a NUL character or an unpaired surrogate")
    return text


def storable_text(text: str) -> bool:
    """Whether PostgreSQL can store this text: no NUL character, no unpaired surrogate (UTF-8 has no
    form for one). SQLite could, but both dialects accept the same values."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-shaped value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def from_db_json(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str | bytes | bytearray | memoryview):
        return json.loads(bytes(value) if isinstance(value, memoryview) else value)
    return value


_QMARK = re.compile(r"%s")


def sql(text: str, db: peewee.Database | None = None) -> str:
    """Hand-written SQL uses ``%s`` placeholders; SQLite wants ``?``."""
    return _QMARK.sub("?", text) if is_sqlite(db) else text


def execute(text: str, params: Sequence[Any] = (), db: peewee.Database | None = None) -> Any:
    """Run hand-written SQL (``%s`` placeholders) and return the cursor; translates append-only errors."""
    db = db or database()
    drop_broken_connection(db)
    with translate_errors():
        return db.execute_sql(sql(text, db), tuple(params))


def array(values: Sequence[Any]) -> str:
    """PostgreSQL: ``values`` as one array literal (``{"a",NULL}``), for a ``%s::type[]`` parameter.

    A Python list would go as ``ARRAY['a', NULL]``, typed text[] (or timestamptz[]), which an
    ``EXECUTE`` of a prepared statement refuses to coerce to uuid[] or jsonb[]; a literal is untyped
    and becomes whatever array the statement declares.

    One loop, no call per element: a worker's record batch builds fifteen of these per statement."""
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
            continue
        text = value if type(value) is str else value.isoformat() if isinstance(value, datetime) else str(value)
        if "\\" in text or '"' in text:
            text = text.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'"{text}"')
    return "{" + ",".join(parts) + "}"


class Statement:
    """Hand-written SQL that PostgreSQL parses and plans once per connection, not once per call.

    The worker's hot path runs three statements per delivery; planning them (a CTE, subqueries)
    cost PostgreSQL more CPU than executing them. On a database with prepared statements enabled
    (:func:`use_prepared_statements`), :func:`run` sends ``PREPARE name AS …`` the first time a
    connection meets the statement and ``EXECUTE name (…)`` from then on; elsewhere (SQLite, or
    the setting off) it runs the text as :func:`execute` does. Parameters are ``%s`` placeholders,
    each used once; PostgreSQL infers their types from where they stand.
    """

    __slots__ = ("execute_text", "name", "prepare_text", "text")

    def __init__(self, name: str, text: str) -> None:
        count = text.count("%s")
        numbers = iter(range(1, count + 1))
        self.name = name
        self.text = text
        self.prepare_text = f"PREPARE {name} AS " + _QMARK.sub(lambda _: f"${next(numbers)}", text)
        placeholders = ", ".join(["%s"] * count)
        self.execute_text = f"EXECUTE {name} ({placeholders})" if placeholders else f"EXECUTE {name}"


#: Databases whose connections use prepared statements → per connection, the statements prepared on
#: it. Weak both ways: a closed-for-good connection or a dropped database takes its entry along.
_prepared: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, set[str]]] = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()

#: SQLSTATE of "prepared statement does not exist" (a pooler or DISCARD ALL dropped it), of "cached
#: plan must not change result type" (a migration changed a column type under a running worker) and
#: of "prepared statement already exists" (prepared behind our back).
_NO_SUCH_STATEMENT, _STALE_RESULT_TYPE, _DUPLICATE_STATEMENT = "26000", "0A000", "42P05"


def use_prepared_statements(db: peewee.Database, enabled: bool) -> None:
    """Turn :class:`Statement` preparation on or off for ``db`` (PostgreSQL only; CHIMEWAY_DB_PREPARED_STATEMENTS)."""
    with _prepared_lock:
        if enabled and isinstance(db, peewee.PostgresqlDatabase):
            _prepared.setdefault(db, weakref.WeakKeyDictionary())
        else:
            _prepared.pop(db, None)


def run(statement: Statement, params: Sequence[Any] = (), db: peewee.Database | None = None) -> Any:
    """Run a :class:`Statement` (prepared where enabled) and return the cursor."""
    db = db or database()
    per_connection = _prepared.get(db)
    if per_connection is None:
        return execute(statement.text, params, db)
    drop_broken_connection(db)
    conn = db.connection()
    names = per_connection.get(conn)
    if names is None:
        with _prepared_lock:
            names = per_connection.setdefault(conn, set())
    with translate_errors():
        if statement.name not in names:
            _prepare(db, statement, names)
        try:
            return db.execute_sql(statement.execute_text, tuple(params))
        except peewee.DatabaseError as err:
            code = sqlstate(err)
            if code not in (_NO_SUCH_STATEMENT, _STALE_RESULT_TYPE) or db.in_transaction():
                raise
            if code == _NO_SUCH_STATEMENT:
                names.clear()  # the server forgot this session's statements
            else:
                db.execute_sql(f"DEALLOCATE {statement.name}")
            _prepare(db, statement, names)  # prepare again, once
            return db.execute_sql(statement.execute_text, tuple(params))


def _prepare(db: peewee.Database, statement: Statement, names: set[str]) -> None:
    """PREPARE ``statement`` on this thread's connection and note it in ``names`` (its prepared set)."""
    try:
        db.execute_sql(statement.prepare_text)
    except peewee.DatabaseError as err:
        if sqlstate(err) != _DUPLICATE_STATEMENT or db.in_transaction():
            raise
    names.add(statement.name)


def sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of a database error (None for SQLite, or an error of no statement)."""
    return getattr(getattr(err, "orig", None) or err, "pgcode", None)


def drop_broken_connection(db: peewee.Database) -> bool:
    """Close this thread's connection if the server dropped it (a restart, a network cut) and no
    transaction is open, so the next statement reconnects instead of failing forever with
    "connection already closed". A status check on the client, no round trip. True if dropped."""
    if db.is_closed() or db.in_transaction() or db.is_connection_usable():
        return False
    try:
        db.close()
    except Exception:  # the connection is gone either way; the pool discards it
        logger.debug("closing a broken connection failed", exc_info=True)
    return True


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn the append-only triggers' error into EventLedgerImmutableError, once, at the boundary."""
    try:
        yield
    except (peewee.DatabaseError, sqlite3.DatabaseError) as err:
        if is_append_only_violation(err):
            raise EventLedgerImmutableError(str(err).strip()) from err
        raise


def is_append_only_violation(err: BaseException) -> bool:
    original = getattr(err, "orig", None) or (err.args[0] if err.args and isinstance(err.args[0], Exception) else err)
    code = getattr(original, "pgcode", None)
    if code == APPEND_ONLY_SQLSTATE:
        return True
    return f"{APPEND_ONLY_SQLSTATE}:" in str(err) or f"{APPEND_ONLY_SQLSTATE}:" in str(original)


@contextlib.contextmanager
def transaction(db: peewee.Database | None = None) -> Iterator[peewee.Database]:
    """``db.atomic()`` with error translation; joins the caller's transaction when one is open."""
    db = db or database()
    drop_broken_connection(db)
    with translate_errors(), db.atomic():
        yield db
