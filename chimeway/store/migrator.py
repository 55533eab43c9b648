"""The migration runner: numbered per-dialect SQL files shipped in ``chimeway/migrations/``.

Each file runs in its own transaction together with its row in ``chimeway_schema_migrations``
(version, name, sha256 checksum). Concurrency: PostgreSQL takes a transaction-level advisory lock
before reading the history, SQLite an EXCLUSIVE transaction, so two processes migrating at once
apply each file exactly once and both succeed. The runner refuses a database that has a version the
code does not know (newer than the code) or whose applied file no longer matches its checksum.

A SQLite file whose first line is ``-- chimeway: foreign-keys-off`` rebuilds tables (SQLite cannot drop
a constraint): it runs with foreign-key enforcement off, as SQLite's rebuild procedure requires, and
commits only if ``PRAGMA foreign_key_check`` then finds nothing.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

import peewee

from chimeway import db as dbmod
from chimeway.errors import MigrationError

HISTORY_TABLE = "chimeway_schema_migrations"
#: Key of the PostgreSQL advisory lock that serializes migrations ("chimeway" as 8 bytes of ASCII).
ADVISORY_LOCK_KEY = int.from_bytes(b"chimeway", "big") & 0x7FFF_FFFF_FFFF_FFFF
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_FOREIGN_KEYS_OFF = "-- chimeway: foreign-keys-off"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrateResult:
    applied: list[str]  #: files applied by this run, e.g. ["0001_initial"]
    current: int  #: the schema version after the run


def dialect_of(db: peewee.Database) -> str:
    if dbmod.is_postgres(db):
        return "postgres"
    if dbmod.is_sqlite(db):
        return "sqlite"
    raise MigrationError(f"unsupported database {type(db).__name__}: Chimeway runs on PostgreSQL or SQLite")


def load_migrations(dialect: str) -> list[Migration]:
    folder = resources.files("chimeway") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), f"{match[1]}_{match[2]}", entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration files out of sequence: expected {expected:04d}, found {migration.name}")
    return found


def migrate(db: peewee.Database, *, to: int | None = None) -> MigrateResult:
    """Bring the schema to the code's version, or only up to version ``to`` (upgrade tests and benches
    fill a database under an earlier schema). Safe to run twice, or from many processes at once."""
    dialect = dialect_of(db)
    known = load_migrations(dialect)
    wanted = known if to is None else known[:to]
    applied = [m.name for m in wanted if _apply_one(db, dialect, m, known=known)]
    return MigrateResult(applied=applied, current=wanted[-1].version if wanted else 0)


def _apply_one(db: peewee.Database, dialect: str, migration: Migration, known: list[Migration]) -> bool:
    """Apply one file if it is not applied yet; verify the history either way. True if applied."""
    if db.in_transaction():
        raise MigrationError("migrate() must not run inside an open transaction")
    ts_type = "timestamptz NOT NULL DEFAULT now()" if dialect == "postgres" else "text NOT NULL DEFAULT CURRENT_TIMESTAMP"
    create_history = (
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (version integer PRIMARY KEY, name text NOT NULL, "
        f"checksum text NOT NULL, applied_at {ts_type})"
    )
    lock = {"lock_type": "EXCLUSIVE"} if dialect == "sqlite" else {}
    rebuild = dialect == "sqlite" and migration.sql.startswith(_FOREIGN_KEYS_OFF)
    # The pragma is a no-op inside a transaction: switch it before BEGIN and restore it after.
    enforced = rebuild and db.execute_sql("PRAGMA foreign_keys").fetchone()[0]
    if enforced:
        db.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        with db.atomic(**lock):
            cursor = db.cursor()
            if dialect == "postgres":
                # Held until this transaction ends: a second migrator waits here, then sees our history.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            cursor.execute(create_history)
            cursor.execute(f"SELECT version, name, checksum FROM {HISTORY_TABLE} ORDER BY version")
            history = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
            _verify(history, known)
            if migration.version in history:
                return False
            for statement in _statements(migration.sql, dialect):
                cursor.execute(statement)
            if rebuild and cursor.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise MigrationError(f"migration {migration.name} left rows whose foreign key matches nothing")
            placeholder = "%s" if dialect == "postgres" else "?"
            cursor.execute(
                f"INSERT INTO {HISTORY_TABLE} (version, name, checksum) VALUES "
                f"({placeholder}, {placeholder}, {placeholder})",
                (migration.version, migration.name, migration.checksum),
            )
            return True
    except MigrationError:
        raise
    except Exception as err:
        raise MigrationError(f"migration {migration.name} failed: {err}") from err
    finally:
        if enforced:
            db.execute_sql("PRAGMA foreign_keys = ON")


def _verify(history: dict[int, tuple[str, str]], known: list[Migration]) -> None:
    by_version = {m.version: m for m in known}
    for version, (name, checksum) in sorted(history.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {name} which this Chimeway does not know: "
                "the database is newer than the code; upgrade Chimeway"
            )
        if checksum != migration.checksum:
            raise MigrationError(
                f"applied migration {name} has changed since it was applied (checksum mismatch): "
                "never edit an applied migration; add a new numbered file instead"
            )


def _statements(script: str, dialect: str) -> list[str]:
    if dialect == "postgres":
        return [script]  # psycopg2 runs a multi-statement script in one execute, inside our transaction
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        not line.strip() or line.strip().startswith("--") for line in pending.splitlines()
    ):
        raise MigrationError("unterminated statement at the end of a migration file")
    return statements


def status(db: peewee.Database) -> dict[str, object]:
    """{'current': applied version, 'latest': code's version, 'pending': [names]} without changing anything."""
    dialect = dialect_of(db)
    known = load_migrations(dialect)
    if HISTORY_TABLE in db.get_tables():
        rows = db.execute_sql(f"SELECT version FROM {HISTORY_TABLE}").fetchall()
        applied = {row[0] for row in rows}
    else:
        applied = set()
    return {
        "current": max(applied, default=0),
        "latest": known[-1].version if known else 0,
        "pending": [m.name for m in known if m.version not in applied],
    }
