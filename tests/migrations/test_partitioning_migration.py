"""Migration 0009 converts a PostgreSQL installation filled under schema 0008: every row stays (in the
legacy partitions), the ledger's keys still refuse a replay, kept rows stay append-only, new months
get partitions of their own, and prune removes the old history from the legacy partition."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from chimeway import db as dbmod
from chimeway.errors import EventLedgerImmutableError
from chimeway.ops.retention import prune_history
from chimeway.store import migrator
from chimeway.webhooks import ledger
from chimeway.wiring import runtime as runtime_mod
from tests.migrations.conftest import database_at, fill_history

OLD_DONE, OLD_OPEN, RECENT = (str(uuid.uuid4()) for _ in range(3))


@pytest.fixture
def previous(pg_empty_url: str) -> Iterator[str]:
    """A PostgreSQL database at schema version 8 holding old and recent history, each event keyed."""
    fill_history(
        database_at(pg_empty_url, 8), ((OLD_DONE, "succeeded", 200), (OLD_OPEN, "pending", 200), (RECENT, "succeeded", 1))
    )
    yield pg_empty_url


def test_given_a_database_filled_under_schema_8_when_migrated_then_history_is_partitioned_and_prunable(previous):
    runtime = runtime_mod.configure(database_url=previous, redis_url="", environ={})
    try:
        # When the installation is migrated
        assert migrator.migrate(runtime.database).applied[0] == "0009_partitioning"
        database = runtime.database

        def rows(sql: str, params: tuple = ()) -> list[tuple]:
            return dbmod.execute(sql, params, database).fetchall()

        # Then every row is still there, in the legacy partitions, and its key came along
        assert rows("SELECT DISTINCT tableoid::regclass::text FROM chimeway_delivery_attempts") == [
            ("chimeway_delivery_attempts_legacy",)
        ]
        assert rows("SELECT DISTINCT tableoid::regclass::text FROM chimeway_events") == [("chimeway_events_legacy",)]
        assert rows("SELECT COUNT(*) FROM chimeway_delivery_attempts")[0][0] == 3
        assert rows("SELECT COUNT(*) FROM chimeway_event_keys")[0][0] == 3
        # a replay of an event stored before the migration is still not stored
        replay = ledger.LedgerEvent(
            tenant_id="default", type="delivered", provider="log", occurred_at=dbmod.now(), received_at=dbmod.now(),
            idempotency_key=f"log:{RECENT}:0", delivery_id=RECENT,
        )
        assert ledger.append(database, [replay]) == set()
        # kept rows are still append-only
        for table in ("chimeway_delivery_attempts", "chimeway_events", "chimeway_events_legacy"):
            with pytest.raises(EventLedgerImmutableError):
                dbmod.execute(f"DELETE FROM {table} WHERE delivery_id = %s", (OLD_DONE,), database)
            with pytest.raises(EventLedgerImmutableError):
                dbmod.execute(f"UPDATE {table} SET provider_message_id = 'x' WHERE delivery_id = %s", (RECENT,), database)
        # and next month has a partition of its own
        today = datetime.now(UTC)
        next_month = datetime(today.year + today.month // 12, today.month % 12 + 1, 2, tzinfo=UTC)
        stored = ledger.append(database, [ledger.LedgerEvent(
            tenant_id="default", type="opened", provider="log", occurred_at=next_month, received_at=next_month,
            idempotency_key="log:next-month:0",
        )])
        assert rows("SELECT tableoid::regclass::text FROM chimeway_events WHERE id = %s", (stored.pop(),)) == [
            (f"chimeway_events_p{next_month:%Y%m}",)
        ]

        # When prune runs (the legacy partition reaches into this month: its old rows go by chunks)
        result = prune_history(runtime=runtime)
        # Then the old terminal delivery went with its rows and key; the open and the recent stayed
        assert (result.deliveries, result.attempts, result.events, result.partitions) == (1, 1, 1, {})
        assert {str(row[0]) for row in rows("SELECT id FROM chimeway_deliveries")} == {OLD_OPEN, RECENT}
        assert {row[0] for row in rows("SELECT idempotency_key FROM chimeway_event_keys")} == {
            f"log:{OLD_OPEN}:0", f"log:{RECENT}:0", "log:next-month:0"
        }
    finally:
        runtime_mod.reset()
