"""Migration 0011 counts the outcomes already in the database (both dialects): after it, the hourly
counts equal the terminal deliveries it found, and the triggers keep them so from then on."""

from __future__ import annotations

import uuid

from chimeway import db as dbmod
from chimeway.ops import outcomes
from chimeway.ops.status import collect
from chimeway.store import migrator
from chimeway.wiring import runtime as runtime_mod
from tests.harness.outcomes import drift
from tests.migrations.conftest import database_at, fill_history


def test_given_a_database_filled_under_schema_10_then_the_migration_counts_its_outcomes(empty_url):
    # Given deliveries recorded under schema 10: two succeeded three days ago, one cancelled today, one open
    ids = [str(uuid.uuid4()) for _ in range(4)]
    fill_history(database_at(empty_url, 10), [(ids[0], "succeeded", 3), (ids[1], "succeeded", 3),
                                              (ids[2], "cancelled", 0), (ids[3], "pending", 1)])
    runtime = runtime_mod.configure(database_url=empty_url, redis_url="", environ={})
    try:
        database = runtime.database
        # When status is read before the upgrade (the code is new, the schema not yet), then it is migrated
        before = collect(runtime)
        assert before["schema"]["pending"] == ["0011_outcome_counts"]
        assert migrator.migrate(database).applied == ["0011_outcome_counts"]
        # Then status counted the outcomes from the deliveries before, and reads the same from the counts now
        assert before["recent"]["day"] == [{"status": "cancelled", "reason": None, "count": 1}]
        assert collect(runtime)["recent"] == before["recent"]
        # And the three terminal deliveries are counted in their hours, nothing waits to be folded
        assert drift(database) == {}
        assert sorted(dbmod.execute("SELECT status, deliveries FROM chimeway_outcome_hours", db=database).fetchall()) \
            == [("cancelled", 1), ("succeeded", 2)]
        assert dbmod.execute("SELECT COUNT(*) FROM chimeway_outcome_changes", db=database).fetchone()[0] == 0
        # And the open one is counted when it finishes
        dbmod.execute("UPDATE chimeway_deliveries SET status = 'succeeded', updated_at = %s WHERE id = %s",
                      (dbmod.to_db_time(dbmod.now(), database), ids[3]), database)
        assert outcomes.fold(database).changes == 1
        assert drift(database) == {}
    finally:
        runtime_mod.reset()
