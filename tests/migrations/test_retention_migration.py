"""Migration 0008 converts an installation filled under today's schema (version 5): every row stays,
the ledger stays append-only, and prune can then remove the terminal history past retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from chimeway import db as dbmod
from chimeway.errors import EventLedgerImmutableError
from chimeway.ops.retention import prune_history
from chimeway.store import migrator
from chimeway.wiring import runtime as runtime_mod
from tests.migrations.conftest import database_at, fill_history

OLD_DONE, OLD_OPEN, RECENT = (str(uuid.uuid4()) for _ in range(3))


@pytest.fixture
def previous(empty_url: str) -> Iterator[str]:
    """A database at schema version 5 (uuid4 ids) holding old and recent history."""
    fill_history(database_at(empty_url, 5), ((OLD_DONE, "succeeded", 200), (OLD_OPEN, "pending", 200), (RECENT, "succeeded", 1)))
    yield empty_url


def test_given_a_database_filled_by_version_5_when_migrated_then_rows_stay_and_prune_removes_old_history(previous):
    # When the installation is migrated and configured
    runtime = runtime_mod.configure(database_url=previous, redis_url="", environ={})
    try:
        assert migrator.migrate(runtime.database).current >= 7
        database = runtime.database

        def count(table: str) -> int:
            return dbmod.execute(f"SELECT COUNT(*) FROM {table}", db=database).fetchone()[0]

        # Then every row is still there, and still append-only
        assert (count("chimeway_deliveries"), count("chimeway_delivery_attempts"), count("chimeway_events")) == (3, 3, 3)
        with pytest.raises(EventLedgerImmutableError):
            dbmod.execute("DELETE FROM chimeway_events WHERE delivery_id = %s", (OLD_DONE,), database)
        # And prune removes the old terminal delivery with its rows, keeping the open and the recent ones
        result = prune_history(runtime=runtime)
        assert (result.deliveries, result.attempts, result.events) == (1, 1, 1)
        kept = {row[0] for row in dbmod.execute("SELECT id FROM chimeway_deliveries", db=database).fetchall()}
        assert {str(k) for k in kept} == {OLD_OPEN, RECENT}
        assert count("chimeway_delivery_attempts") == 2 and count("chimeway_events") == 2
    finally:
        runtime_mod.reset()
