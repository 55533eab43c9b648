"""PostgreSQL's monthly partitions (migration 0009): prune drops the months past retention whole, keeps
a month that holds a row of an open delivery, and writers always find a partition; the ledger's
idempotency keys hold across months. Each test has its own database: it drops partitions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from chimeway import db
from chimeway.errors import EventLedgerImmutableError
from chimeway.models import Delivery, new_id
from chimeway.ops.retention import prune_history
from chimeway.store import migrator
from chimeway.webhooks import ledger
from chimeway.wiring import runtime as runtime_mod
from chimeway.wiring.config import load_settings


def month_start(months_ahead: int) -> datetime:
    """The first instant (UTC) of the month ``months_ahead`` after this one."""
    today = datetime.now(UTC)
    index = today.year * 12 + today.month - 1 + months_ahead
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def suffix(months_ahead: int) -> str:
    return f"p{month_start(months_ahead):%Y%m}"


@pytest.fixture
def runtime(pg_empty_url: str) -> Iterator[Any]:
    """Chimeway on a database of its own, migrated: partitions legacy (up to next month), the next
    two months, and DEFAULT."""
    database = db.connect(load_settings(environ={}, database_url=pg_empty_url))
    migrator.migrate(database)
    database.close_all()
    configured = runtime_mod.configure(database_url=pg_empty_url, redis_url="", environ={})
    yield configured
    runtime_mod.reset()


def delivery(status: str, at: datetime, *, attempt: bool = True, event_key: str | None = None) -> str:
    """A delivery last changed at ``at``, with an attempt and (given a key) a ledger event as old."""
    row = Delivery.create(
        notification_id=new_id(), channel="email", recipient="ann@example.com", adapter="log", status=status,
        attempt_count=1, created_at=at, updated_at=at,
    )
    if attempt:
        db.execute(
            "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, created_at) "
            "VALUES (%s, %s, 1, 'succeeded', 'log', %s)", (new_id(), row.id, at),
        )
    if event_key:
        stored = ledger.append(db.database(), [event(at, event_key, row.id)])
        assert stored, "the event's key was free"
    return row.id


def event(at: datetime, key: str, delivery_id: str | None = None) -> ledger.LedgerEvent:
    return ledger.LedgerEvent(
        tenant_id="default", type="delivered", provider="log", occurred_at=at, received_at=at,
        idempotency_key=key, delivery_id=delivery_id,
    )


def partition_of(table: str, row_id: str, column: str = "id") -> str:
    """The partition holding the row of ``table`` whose ``column`` is ``row_id``."""
    return db.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s", (row_id,)).fetchone()[0]


def partition_names() -> set[str]:
    return {row[0] for row in db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits "
        "WHERE inhparent IN ('chimeway_delivery_attempts'::regclass, 'chimeway_events'::regclass)"
    ).fetchall()}


def keys() -> set[str]:
    return {row[0] for row in db.execute("SELECT idempotency_key FROM chimeway_event_keys").fetchall()}


def test_given_months_past_retention_when_pruned_then_their_partitions_are_dropped_but_one_with_an_open_delivery_stays(
    runtime,
):
    # Given next month's and the month after's history, and prune run as if 95 days after the latter
    m0, m1, m2 = month_start(1), month_start(2), month_start(3)
    done_m0 = delivery("succeeded", m0 + timedelta(days=1), event_key="log:done-m0:0")
    done_m1 = delivery("succeeded", m1 + timedelta(days=1), event_key="log:done-m1:0")
    open_m1 = delivery("failed", m1 + timedelta(days=2))  # its attempt sits in the attempts' month m1
    recent = delivery("succeeded", m2 + timedelta(days=6), event_key="log:recent:0")  # past the months made ahead
    assert partition_of("chimeway_delivery_attempts", done_m0, "delivery_id").endswith(suffix(1))
    assert partition_of("chimeway_delivery_attempts", done_m1, "delivery_id").endswith(suffix(2))
    assert partition_of("chimeway_events", recent, "delivery_id") == "chimeway_events_default"
    later = m2 + timedelta(days=95)  # retention 90 days: the cutoff is m2 + 5 days

    # When prune runs dry, then for real
    dry = prune_history(runtime=runtime, now=later, dry_run=True)
    assert Delivery.select().count() == 4 and len(partition_names()) == 8  # a dry run removes nothing
    result = prune_history(runtime=runtime, now=later)
    assert (dry.partitions.keys(), dry.kept_partitions) == (result.partitions.keys(), result.kept_partitions)
    assert (dry.deliveries, dry.attempts, dry.events) == (result.deliveries, result.attempts, result.events)

    # Then the months past retention were dropped whole, except the attempts' month holding the open
    # delivery's attempt, whose expired rest went by the chunked delete
    attempts_m1 = f"chimeway_delivery_attempts_{suffix(2)}"
    assert set(result.partitions) == {
        f"chimeway_delivery_attempts_{suffix(1)}", f"chimeway_events_{suffix(1)}", f"chimeway_events_{suffix(2)}",
        "chimeway_delivery_attempts_legacy", "chimeway_events_legacy",
    }
    assert result.kept_partitions == [attempts_m1]
    assert (result.deliveries, result.attempts, result.events) == (2, 1, 0)
    assert {row.id for row in Delivery.select()} == {open_m1, recent}
    assert partition_of("chimeway_delivery_attempts", open_m1, "delivery_id") == attempts_m1
    # and the dropped events' idempotency keys went with them, the kept one's stayed
    assert keys() == {"log:recent:0"}
    # And the kept partition's rows stay append-only, addressed through the parent or directly
    for table in ("chimeway_delivery_attempts", attempts_m1):
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"DELETE FROM {table} WHERE delivery_id = %s", (open_m1,))
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"UPDATE {table} SET adapter = 'x' WHERE delivery_id = %s", (open_m1,))

    # When the open delivery closes (long ago, as seen from ``later``) and prune runs again
    Delivery.update(status="succeeded", updated_at=m1 + timedelta(days=3)).where(Delivery.id == open_m1).execute()
    again = prune_history(runtime=runtime, now=later)
    # Then its month is dropped too, and it goes with it
    assert set(again.partitions) == {attempts_m1} and again.kept_partitions == []
    assert {row.id for row in Delivery.select()} == {recent}
    assert attempts_m1 not in partition_names()


def test_given_a_month_whose_rows_went_to_the_default_partition_then_prune_leaves_it_there_and_writes_go_on(runtime):
    # Given the ledger's month m1 missing (its rows land in DEFAULT)
    m1 = month_start(2)
    db.execute(f"DROP TABLE chimeway_events_{suffix(2)}")
    stored = ledger.append(db.database(), [event(m1 + timedelta(days=1), "log:in-default:0")])
    # When prune makes the months ahead
    result = prune_history(runtime=runtime)
    # Then it did not fail and left that month in DEFAULT (PostgreSQL refuses a partition over its rows),
    # and the writers still store that month's rows
    assert result.partitions == {}
    assert f"chimeway_events_{suffix(2)}" not in partition_names()
    assert f"chimeway_delivery_attempts_{suffix(2)}" in partition_names()
    later = ledger.append(db.database(), [event(m1 + timedelta(days=2), "log:in-default:1")])
    assert {partition_of("chimeway_events", row_id) for row_id in stored | later} == {"chimeway_events_default"}


def test_given_an_event_key_stored_last_month_then_the_same_key_is_not_stored_again_in_another_month(runtime):
    # Given an event stored in next month's partition
    first = ledger.append(db.database(), [event(month_start(1) + timedelta(days=1), "postmark:evt-9:0")])
    assert partition_of("chimeway_events", first.pop()).endswith(suffix(1))
    # When the provider replays it a month later (another partition)
    replay = ledger.append(db.database(), [event(month_start(2) + timedelta(days=1), "postmark:evt-9:0")])
    # Then it is not stored: the key holds across partitions
    assert replay == set()
    assert db.execute("SELECT COUNT(*) FROM chimeway_events").fetchone()[0] == 1


def test_given_two_transactions_claiming_one_key_then_the_second_waits_and_stores_nothing(runtime, pg_empty_url):
    insert = (
        "INSERT INTO chimeway_events (id, type, provider, occurred_at, received_at, idempotency_key) "
        "VALUES (%s, 'opened', 'log', %s, %s, 'log:race:0') ON CONFLICT DO NOTHING RETURNING id"
    )
    first, second = psycopg2.connect(pg_empty_url), psycopg2.connect(pg_empty_url)
    try:
        # Given a first transaction that stored the key in this month, not committed yet
        at, later = datetime.now(UTC), month_start(1) + timedelta(days=1)
        first.cursor().execute(insert, (new_id(), at, at))
        # When a second one stores the same key in next month's partition
        answer: list[Any] = []
        waiting = threading.Thread(target=lambda: answer.append(_run(second, insert, (new_id(), later, later))))
        waiting.start()
        _wait_until_blocked(pg_empty_url)
        first.commit()
        waiting.join()
        # Then it waited for the first, and stored nothing: the key table holds the one claim
        assert answer == [[]]
        assert db.execute("SELECT COUNT(*) FROM chimeway_events").fetchone()[0] == 1
        assert keys() == {"log:race:0"}
    finally:
        first.close()
        second.close()


def _run(conn: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    cursor = conn.cursor()
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    conn.commit()
    return rows


def _wait_until_blocked(url: str) -> None:
    """Until a session of this database waits for a lock (the second claim behind the first)."""
    name = url.rsplit("/", 1)[1]
    while not db.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock')", (name,)
    ).fetchone()[0]:
        threading.Event().wait(0.01)


def test_given_a_writer_holding_the_table_when_pruned_then_the_drop_waits_for_the_next_prune_and_its_rows_stay(
    runtime, pg_empty_url
):
    # Given next month's terminal history, and a worker's transaction holding the attempts table open
    m0 = month_start(1)
    done = delivery("succeeded", m0 + timedelta(days=1), event_key="log:busy:0")
    writer = psycopg2.connect(pg_empty_url)
    try:
        writer.cursor().execute(
            "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter) "
            "VALUES (%s, %s, 2, 'failed', 'log')", (new_id(), done),
        )
        later = month_start(3) + timedelta(days=95)
        # When prune runs past its retention
        result = prune_history(runtime=runtime, now=later)
        # Then the attempts' months wait (the lock was not granted within LOCK_WAIT), the ledger's went,
        # and the chunked walk left the delivery whose attempt waits in a busy month
        assert f"chimeway_delivery_attempts_{suffix(1)}" in result.busy_partitions
        assert f"chimeway_events_{suffix(1)}" in result.partitions
        assert f"chimeway_delivery_attempts_{suffix(1)}" in partition_names()
        assert result.deliveries == 0 and {row.id for row in Delivery.select()} == {done}
    finally:
        writer.rollback()
        writer.close()
    # When the writer is gone and prune runs again
    again = prune_history(runtime=runtime, now=later)
    # Then the month is dropped and the delivery goes
    assert f"chimeway_delivery_attempts_{suffix(1)}" in again.partitions and again.busy_partitions == []
    assert again.deliveries == 1 and Delivery.select().count() == 0
