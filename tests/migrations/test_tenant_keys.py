"""Migration 0003: a database filled under the previous schema keeps its rows and gets keys scoped by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import peewee
import pytest

from chimeway import db as dbmod
from chimeway.store import migrator
from chimeway.wiring.config import load_settings

NOTIFICATION = str(uuid.uuid4())
DELIVERY = str(uuid.uuid4())
AT = "2026-01-02 03:04:05.000000"


@pytest.fixture(params=["sqlite", "postgres"])
def previous(request: pytest.FixtureRequest, tmp_path) -> Iterator[peewee.Database]:
    """A database at schema version 2 holding a delivery, its attempt, a ledger event and a raw webhook."""
    url = request.getfixturevalue("pg_empty_url") if request.param == "postgres" else (
        f"sqlite:///{tmp_path / 'previous.sqlite3'}"
    )
    database = dbmod.connect(load_settings(environ={}, database_url=url))
    migrator.migrate(database, to=2)
    with database.atomic():
        _delivery(database, DELIVERY, "acme")
        dbmod.execute(
            "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, created_at) "
            "VALUES (%s, %s, 1, 'succeeded', 'log', %s)", (str(uuid.uuid4()), DELIVERY, AT), db=database,
        )
        _event(database, "globex", delivery_id=DELIVERY)
        _raw(database, "globex")
    yield database
    close_all = getattr(database, "close_all", None)
    close_all() if close_all else database.close()


def _delivery(database: peewee.Database, delivery_id: str, tenant: str, notification: str = NOTIFICATION) -> None:
    dbmod.execute(
        "INSERT INTO chimeway_deliveries (id, tenant_id, notification_id, channel, recipient, adapter, provider, "
        "provider_message_id, created_at, updated_at) VALUES (%s, %s, %s, 'email', 'ann@example.com', 'log', "
        "'postmark', 'pm-1', %s, %s)",
        (delivery_id, tenant, notification, AT, AT), db=database,
    )


def _event(database: peewee.Database, tenant: str, delivery_id: str | None = None) -> None:
    dbmod.execute(
        "INSERT INTO chimeway_events (id, tenant_id, delivery_id, type, provider, occurred_at, received_at, "
        "idempotency_key) VALUES (%s, %s, %s, 'opened', 'postmark', %s, %s, 'postmark:5001:0')",
        (str(uuid.uuid4()), tenant, delivery_id, AT, AT), db=database,
    )


def _raw(database: peewee.Database, tenant: str) -> None:
    dbmod.execute(
        "INSERT INTO chimeway_webhook_events (id, tenant_id, provider, provider_event_id, body, received_at) "
        "VALUES (%s, %s, 'postmark', 'request-1', %s, %s)", (str(uuid.uuid4()), tenant, b"{}", AT), db=database,
    )


def _refused(database: peewee.Database, insert, *args) -> bool:
    try:
        with database.atomic():
            insert(database, *args)
    except peewee.IntegrityError:
        return True
    return False


def _event_refused(database: peewee.Database, tenant: str) -> bool:
    """A ledger event with a taken key is refused (SQLite's unique index) or not stored (PostgreSQL's
    key table, migration 0009, skips it as ON CONFLICT DO NOTHING would)."""
    before = dbmod.execute("SELECT COUNT(*) FROM chimeway_events", db=database).fetchone()[0]
    if _refused(database, _event, tenant):
        return True
    return dbmod.execute("SELECT COUNT(*) FROM chimeway_events", db=database).fetchone()[0] == before


def test_given_a_database_of_the_previous_schema_when_migrating_then_rows_stay_and_keys_are_per_tenant(previous):
    # When
    assert migrator.migrate(previous).applied[0] == "0003_tenant_keys"  # and every later migration
    # Then every row is still there, still linked
    rows = dbmod.execute(
        "SELECT d.tenant_id, a.attempt_number, e.tenant_id, w.tenant_id FROM chimeway_deliveries d "
        "JOIN chimeway_delivery_attempts a ON a.delivery_id = d.id JOIN chimeway_events e ON e.delivery_id = d.id "
        "CROSS JOIN chimeway_webhook_events w", db=previous,
    ).fetchall()
    assert rows == [("acme", 1, "globex", "globex")]
    # and another tenant may reuse each key, while the same tenant still may not
    assert not _refused(previous, _delivery, str(uuid.uuid4()), "globex")
    assert _refused(previous, _delivery, str(uuid.uuid4()), "acme")
    assert _refused(previous, _delivery, str(uuid.uuid4()), "acme", str(uuid.uuid4()))  # the message id 'pm-1'
    assert not _event_refused(previous, "acme")
    assert _event_refused(previous, "globex")
    assert not _refused(previous, _raw, "acme")
    assert _refused(previous, _raw, "globex")

    # and SQLite, whose tables the migration rebuilt with enforcement off, enforces foreign keys again
    if dbmod.is_sqlite(previous):
        assert previous.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert _refused(previous, _event, "initech", str(uuid.uuid4()))
