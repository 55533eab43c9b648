"""Migration tests: an empty database of each dialect in turn."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

import peewee
import pytest

from chimeway import db as dbmod
from chimeway.store import migrator
from chimeway.wiring.config import load_settings


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_empty_url")
    return f"sqlite:///{tmp_path / 'empty.sqlite3'}"


def database_at(url: str, version: int) -> peewee.Database:
    """A connection to the database at ``url`` with the first ``version`` migrations applied."""
    database = dbmod.connect(load_settings(environ={}, database_url=url))
    migrator.migrate(database, to=version)
    return database


def fill_history(database: peewee.Database, rows: Iterable[tuple[str, str, int]]) -> None:
    """Per (delivery id, status, age in days): the delivery last changed that long ago, one attempt and
    one ledger event as old (idempotency key ``log:<delivery id>:0``), written as SQL of any schema."""
    now = dbmod.now()
    with database.atomic():
        for delivery_id, status, age in rows:
            at = dbmod.to_db_time(now - timedelta(days=age), database)
            dbmod.execute(
                "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, "
                "created_at, updated_at) VALUES (%s, %s, 'email', 'ann@example.com', 'log', %s, %s, %s)",
                (delivery_id, str(uuid.uuid4()), status, at, at), db=database,
            )
            dbmod.execute(
                "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, created_at) "
                "VALUES (%s, %s, 1, 'succeeded', 'log', %s)", (str(uuid.uuid4()), delivery_id, at), db=database,
            )
            dbmod.execute(
                "INSERT INTO chimeway_events (id, delivery_id, type, provider, occurred_at, received_at, idempotency_key) "
                "VALUES (%s, %s, 'delivered', 'log', %s, %s, %s)",
                (str(uuid.uuid4()), delivery_id, at, at, f"log:{delivery_id}:0"), db=database,
            )
    database.close_all() if hasattr(database, "close_all") else database.close()
