"""``chimeway status`` costs what is open and recent, not the history; "stalled" is exactly what the
sweep would re-enqueue; the retention in effect and the oldest rows kept are shown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chimeway import db
from chimeway.api import sweep
from chimeway.models import Delivery, new_id
from chimeway.ops.status import collect


def delivery(status: str, age: timedelta, **fields) -> Delivery:
    at = db.now() - age
    values = dict(notification_id=new_id(), channel="email", recipient="ann@example.com", adapter="log",
                  status=status, created_at=at, updated_at=at)
    values.update(fields)
    return Delivery.create(**values)


def test_given_history_then_status_counts_open_exactly_and_terminal_outcomes_in_recent_windows(configured):
    for _ in range(3):
        delivery("succeeded", timedelta(days=30))
    delivery("succeeded", timedelta(minutes=5))
    delivery("cancelled", timedelta(hours=5), reason="permanent_failure")
    delivery("pending", timedelta(seconds=1))
    delivery("failed", timedelta(days=40), next_attempt_at=db.now() + timedelta(hours=1))
    report = collect(configured)
    assert report["open"] == {"pending": 1, "dispatched": 0, "failed": 1}
    assert report["recent"]["hour"] == [{"status": "succeeded", "reason": None, "count": 1}]
    assert report["recent"]["day"] == [
        {"status": "cancelled", "reason": "permanent_failure", "count": 1},
        {"status": "succeeded", "reason": None, "count": 1},
    ]
    assert report["retention"]["days"] == 90
    assert report["retention"]["oldest_terminal_at"].startswith((db.now() - timedelta(days=30)).date().isoformat())
    assert report["retention"]["oldest_open_at"].startswith((db.now() - timedelta(days=40)).date().isoformat())
    assert set(report["table_estimates"]) >= {"chimeway_deliveries", "chimeway_events"}


def test_given_deliveries_the_sweep_would_and_would_not_take_then_stalled_counts_exactly_those_it_takes(configured):
    # Given rows last changed long ago that the sweep must leave (a retry not yet due, a live lease,
    # a message sent a moment ago) and rows it must take (a retry due long ago changed a moment ago)
    delivery("failed", timedelta(hours=1), next_attempt_at=db.now() + timedelta(hours=1))
    delivery("dispatched", timedelta(hours=1), lease_until=db.now() + timedelta(minutes=5))
    delivery("pending", timedelta(hours=1), enqueued_at=db.now())
    due = delivery("failed", timedelta(seconds=1), next_attempt_at=db.now() - timedelta(hours=1))
    lost = delivery("pending", timedelta(hours=1))
    # When status counts stalled deliveries and then the sweep runs
    stalled = collect(configured)["stalled"]
    taken = sweep()
    # Then both saw the same rows
    assert set(taken.delivery_ids) == {due.id, lost.id}
    assert stalled == taken.reenqueued == 2


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_a_long_history_then_status_reads_only_open_and_recent_rows(configured):
    # Given 400 terminal deliveries from last month, and a few open and recent ones
    delivery("pending", timedelta(seconds=1))
    delivery("succeeded", timedelta(minutes=5))
    old_history(configured.database, "default")
    # When status runs
    report, read = reading(configured.database, lambda: collect(configured))
    # Then it read the open and recent rows (and the oldest per index), never the month of history
    assert read < 20, read
    assert report["table_estimates"]["chimeway_deliveries"] == 402  # from the catalog, after ANALYZE


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_a_long_history_then_the_console_overview_reads_only_open_and_recent_rows_of_its_tenant(configured):
    from chimeway.console.queries import overview

    # Given 400 terminal deliveries of acme from last month, and open and recent ones of two tenants
    delivery("pending", timedelta(seconds=1), tenant_id="acme")
    delivery("failed", timedelta(hours=2), tenant_id="globex", next_attempt_at=db.now() + timedelta(hours=1))
    delivery("cancelled", timedelta(minutes=5), tenant_id="acme", reason="permanent_failure")
    old_history(configured.database, "acme")
    # When acme's overview is read
    acme, read = reading(configured.database, lambda: overview(configured, "acme"))
    # Then it read the open and recent rows, never the month of history, and only acme's counted
    assert read < 20, read
    assert acme["open"] == {"pending": 1, "dispatched": 0, "failed": 0} and acme["estimated_total"] is None
    assert acme["recent"]["hour"] == [{"status": "cancelled", "reason": "permanent_failure", "count": 1}]
    # And unscoped, it counts every tenant's open rows and labels the total an estimate
    everyone = overview(configured, None)
    assert everyone["open_total"] == 2 and everyone["estimated_total"] == 403


def old_history(database, tenant: str) -> None:
    """400 terminal deliveries of ``tenant`` last changed 30 days ago; the table analyzed."""
    at = db.to_db_time(db.now() - timedelta(days=30), database)
    db.execute(
        "INSERT INTO chimeway_deliveries (id, tenant_id, notification_id, channel, recipient, adapter, status, "
        "created_at, updated_at) SELECT gen_random_uuid(), %s, gen_random_uuid(), 'email', 'ann@example.com', "
        "'log', 'succeeded', %s, %s FROM generate_series(1, 400)", (tenant, at, at), database,
    )
    db.execute("ANALYZE chimeway_deliveries", db=database)


def reading(database, read):
    """``read()``'s result and the rows of chimeway_deliveries it read, run with sequential scans
    priced out, so that a query with no index path still shows up as one (on a table this small the
    planner would scan it anyway)."""
    before = tuples_read(database)
    db.execute("SET enable_seqscan = off", db=database)
    try:
        result = read()
    finally:
        db.execute("RESET enable_seqscan", db=database)
    return result, tuples_read(database) - before


def tuples_read(database) -> int:
    """Rows read from chimeway_deliveries so far, by sequential scans and through any of its indexes."""
    db.execute("SELECT pg_stat_force_next_flush()", db=database)  # this backend's counts, published now
    db.execute("SELECT pg_stat_clear_snapshot()", db=database)
    return db.execute(
        "SELECT t.seq_tup_read + (SELECT COALESCE(SUM(i.idx_tup_read), 0) FROM pg_stat_user_indexes i "
        "WHERE i.relid = t.relid) FROM pg_stat_user_tables t WHERE t.relname = 'chimeway_deliveries'",
        db=database,
    ).fetchone()[0]


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_partitioned_attempts_then_the_estimate_sums_their_partitions(configured):
    # Given 300 attempts spread over this month and the next (two partitions, 0009), analyzed
    database = configured.database
    parent = delivery("succeeded", timedelta(minutes=5))
    db.execute(
        "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, created_at) "
        "SELECT gen_random_uuid(), %s, g, 'failed', 'log', now() + (g %% 2) * interval '32 days' "
        "FROM generate_series(1, 300) AS g", (parent.id,), database,
    )
    # analyzed as autovacuum does it: each partition, never the partitioned parent
    for (partition,) in db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'chimeway_delivery_attempts'::regclass",
        db=database,
    ).fetchall():
        db.execute(f"ANALYZE {partition}", db=database)
    # Then status estimates the partitioned table by its partitions (its own catalog row says -1)
    assert collect(configured)["table_estimates"]["chimeway_delivery_attempts"] == 300
