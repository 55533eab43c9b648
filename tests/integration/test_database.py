"""The database binding: pooled PostgreSQL with server-side timeouts, WAL SQLite, a shared app database."""

from __future__ import annotations

import threading
import uuid

import peewee
import pytest
from playhouse.pool import MaxConnectionsExceeded

from chimeway import db as dbmod
from chimeway.errors import ConfigurationError
from chimeway.models import Delivery
from chimeway.wiring import runtime as runtime_mod
from chimeway.wiring.config import load_settings


def _new_delivery() -> Delivery:
    return Delivery.create(notification_id=str(uuid.uuid4()), channel="email", recipient="r@example.com", adapter="log")


def test_given_postgresql_every_connection_carries_server_side_timeouts_and_utc(pg_url):
    runtime = runtime_mod.configure(database_url=pg_url, redis_url="", environ={}, statement_timeout_ms=4321)
    try:
        cursor = runtime.database.execute_sql(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('idle_in_transaction_session_timeout'), current_setting('TimeZone')"
        )
        statement, lock, idle, zone = cursor.fetchone()
        assert statement == "4321ms" and lock == "4321ms"
        assert idle == "1min"
        assert zone == "UTC"
        with pytest.raises(peewee.OperationalError, match="statement timeout"):
            runtime.database.execute_sql("SELECT pg_sleep(10)")
    finally:
        runtime_mod.reset()


def test_given_postgresql_each_thread_gets_its_own_connection_up_to_the_pool_size(pg_url):
    runtime = runtime_mod.configure(
        database_url=pg_url, redis_url="", environ={}, db_pool_size=2, db_pool_timeout_seconds=1
    )
    holding = threading.Barrier(3)
    release = threading.Event()
    pids: set[int] = set()

    def hold_a_connection() -> None:
        pids.add(runtime.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
        holding.wait(timeout=10)
        release.wait(timeout=10)
        runtime.database.close()

    threads = [threading.Thread(target=hold_a_connection) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        holding.wait(timeout=10)
        assert len(pids) == 2
        # A third thread finds the pool exhausted and gives up after the checkout timeout.
        with pytest.raises(MaxConnectionsExceeded):
            runtime.database.execute_sql("SELECT 1")
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=20)
        runtime_mod.reset()


def test_given_sqlite_the_database_uses_wal_and_a_busy_timeout(sqlite_url):
    runtime = runtime_mod.configure(database_url=sqlite_url, redis_url="", environ={})
    try:
        assert runtime.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert runtime.database.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30_000
    finally:
        runtime_mod.reset()


def test_given_an_application_database_when_configured_with_it_then_chimeway_shares_its_transactions(
    database_url,
):
    app_db = dbmod.connect(load_settings(environ={}, database_url=database_url))
    runtime = runtime_mod.configure(database=app_db, redis_url="", environ={})
    try:
        assert runtime.database is app_db
        with pytest.raises(RuntimeError), app_db.atomic():
            _new_delivery()
            raise RuntimeError("the application rolls back")
        assert Delivery.select().count() == 0
        with app_db.atomic():
            kept = _new_delivery()
        assert Delivery.get_by_id(kept.id).recipient == "r@example.com"
    finally:
        runtime_mod.reset()
        close_all = getattr(app_db, "close_all", None)
        close_all() if close_all else app_db.close()


def test_given_a_postgresql_url_without_a_database_name_then_configure_fails_naming_the_variable():
    with pytest.raises(ConfigurationError) as caught:
        runtime_mod.configure(database_url="postgresql://postgres@127.0.0.1:5432", redis_url="", environ={})
    assert caught.value.variable == "CHIMEWAY_DATABASE_URL"


def _application_database(pg_url: str, **connect_params) -> peewee.PostgresqlDatabase:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    return peewee.PostgresqlDatabase(parts.path.lstrip("/"), host=parts.hostname, port=parts.port,
                                     user=parts.username, **connect_params)


def _session(database: peewee.Database) -> tuple[str, str]:
    return database.execute_sql("SELECT current_setting('statement_timeout'), current_setting('TimeZone')").fetchone()


def test_given_an_application_database_with_chimeways_session_options_when_sending_then_its_connection_has_them(pg_url):
    app_db = _application_database(pg_url, options=dbmod.session_options(4321))
    runtime_mod.configure(database=app_db, redis_url="", environ={})
    try:
        with app_db.connection_context(), app_db.atomic():  # what a web request does around send()
            delivery = _send_one("a@example.com")
            assert _session(app_db) == ("4321ms", "UTC")
        assert Delivery.get_by_id(delivery.id).status == "pending"
    finally:
        runtime_mod.reset()
        app_db.close()


def test_given_an_application_database_without_them_then_chimeway_leaves_its_sessions_alone(pg_url):
    """As the README says: Chimeway changes no session setting of a database it was handed."""
    app_db = _application_database(pg_url)
    runtime_mod.configure(database=app_db, redis_url="", environ={})
    try:
        with app_db.connection_context():
            _send_one("b@example.com")
            assert _session(app_db)[0] == "0"
    finally:
        runtime_mod.reset()
        app_db.close()


def _send_one(recipient: str) -> Delivery:
    import chimeway

    return chimeway.send("email", recipient, {"subject": "Hi"}, adapter="log")
