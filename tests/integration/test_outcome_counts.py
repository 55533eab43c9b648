"""Terminal outcomes counted per hour as deliveries change (migration 0011, chimeway.ops.outcomes):
whatever happens to a delivery, the counts equal a count of the deliveries themselves, before and
after a fold; status reads a day of outcomes from them, not from the day's deliveries; two workers
finishing deliveries at once never wait for each other, and a fold racing them loses nothing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

import chimeway
from chimeway import db
from chimeway.models import Delivery
from chimeway.ops import outcomes
from chimeway.ops.status import RECENT_WINDOWS, recent
from tests.harness.outcomes import counted_since, drift
from tests.integration.test_status_scale import delivery, reading


def change(row: Delivery, **fields) -> None:
    Delivery.update(**fields).where(Delivery.id == row.id).execute()


def assert_exact(database) -> None:
    """The kept counts equal the deliveries' own, per hour, and status's windows equal a full count."""
    assert drift(database) == {}
    now = db.now()
    for tenant in (None, "acme"):
        windows = {name: [(d["status"], d["reason"], d["count"]) for d in rows]
                   for name, rows in recent(database, tenant).items()}
        assert windows == {name: counted_since(database, now - window, tenant) for name, window in RECENT_WINDOWS.items()}


def test_given_deliveries_changing_in_every_way_then_the_counts_stay_those_of_the_deliveries(configured):
    database = configured.database
    # Given terminal deliveries made as they are (the insert trigger), of two tenants, at all ages
    old = delivery("succeeded", timedelta(days=30))
    late = delivery("succeeded", timedelta(hours=5))
    opened = delivery("succeeded", timedelta(hours=3))
    delivery("suppressed", timedelta(hours=23, minutes=50), reason="channel_disabled", tenant_id="acme")
    exhausted = delivery("cancelled", timedelta(hours=25), reason="retries_exhausted", attempt_count=5, max_attempts=5)
    waiting = delivery("pending", timedelta(minutes=1), tenant_id="acme")
    sending = delivery("dispatched", timedelta(minutes=10))
    assert_exact(database)
    assert len(db.execute("SELECT * FROM chimeway_outcome_changes").fetchall()) == 5
    # When deliveries finish, bounce late, get cancelled and redriven, and change only what is not counted
    change(sending, status="succeeded", updated_at=db.now())
    change(late, status="cancelled", reason="bounced", updated_at=db.now())  # moves to another hour and outcome
    chimeway.cancel(waiting.id)
    chimeway.redrive(exhausted.id)  # out of the terminal states
    change(old, delivered_at=db.now())  # a projection column, same updated_at: nothing to count
    change(opened, opened_at=db.now(), updated_at=db.now())  # same outcome, another hour
    assert len(db.execute("SELECT * FROM chimeway_outcome_changes").fetchall()) == 5 + 1 + 2 + 1 + 1 + 2
    # Then the counts are exact at every step, folded or not
    assert_exact(database)
    assert outcomes.fold(database).changes == 12
    assert_exact(database)
    # And a delete (what prune does) takes the delivery out of its hour; the emptied hour goes at the fold
    db.execute("DELETE FROM chimeway_deliveries WHERE id = %s", (old.id,))
    assert_exact(database)
    assert outcomes.fold(database) == outcomes.Fold(changes=1, emptied=1)
    assert_exact(database)
    assert db.execute("SELECT COUNT(*) FROM chimeway_outcome_hours WHERE deliveries = 0").fetchone()[0] == 0
    assert outcomes.fold(database) == outcomes.Fold(changes=0, emptied=0)


def test_given_a_window_starting_inside_an_hour_then_its_part_of_that_hour_is_counted_to_the_microsecond(configured):
    database = configured.database
    # Given outcomes just before and just after a point 20 minutes into an hour, and later in that hour
    since = (db.now() - timedelta(hours=3)).replace(minute=20, second=0, microsecond=0)
    for offset, status in ((-1, "succeeded"), (0, "succeeded"), (1, "cancelled"), (30 * 60 * 10**6, "succeeded")):
        at = since + timedelta(microseconds=offset)
        delivery(status, timedelta(0), updated_at=at, created_at=at, reason="bounced" if status == "cancelled" else None)
    outcomes.fold(database)
    # Then the one before the start is left out, the rest counted once
    assert outcomes.finished(database, since) == [("cancelled", "bounced", 1), ("succeeded", None, 2)]
    assert outcomes.finished(database, since) == counted_since(database, since)


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_a_day_of_outcomes_then_status_reads_them_from_the_counts_not_the_deliveries(configured):
    database = configured.database
    # Given 300 deliveries that finished 5 hours ago (inside the day's window, in whole hours), folded
    succeeded_hours_ago(database, 300, 5)
    outcomes.fold(database)
    db.execute("ANALYZE chimeway_deliveries", db=database)
    # When status's windows are read
    windows, read = reading(database, lambda: recent(database))
    # Then the day shows all 300 while no more than a handful of delivery rows were read
    assert windows["day"] == [{"status": "succeeded", "reason": None, "count": 300}] and windows["hour"] == []
    assert read < 20, read


def succeeded_hours_ago(database, n: int, hours: int) -> None:
    """``n`` deliveries that succeeded ``hours`` ago, inserted in one statement (the triggers count them)."""
    at = db.to_db_time(db.now() - timedelta(hours=hours), database)
    db.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, created_at, "
        "updated_at) SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'ann@example.com', 'log', 'succeeded', "
        "%s, %s FROM generate_series(1, %s)", (at, at, n), database,
    )


def finish(conn, delivery_id: str) -> None:
    conn.cursor().execute("UPDATE chimeway_deliveries SET status = 'succeeded', updated_at = now() WHERE id = %s",
                          (delivery_id,))


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_two_sessions_finishing_deliveries_at_once_then_neither_waits_and_a_fold_between_loses_nothing(
    configured, database_url
):
    database = configured.database
    first, second = (delivery("dispatched", timedelta(minutes=1)) for _ in range(2))
    a, b = psycopg2.connect(database_url), psycopg2.connect(database_url)
    try:
        # Given a session that finished a delivery and has not committed (same hour, same outcome)
        finish(a, first.id)
        # When a second session finishes another one, then a fold runs while the first is still open
        b.cursor().execute("SET lock_timeout = '2s'")
        started = time.monotonic()
        finish(b, second.id)
        b.commit()
        waited = time.monotonic() - started
        assert outcomes.fold(database).changes == 1  # the committed one only
        a.commit()
        # Then the second never waited for the first (no counter row to lock), and nothing was lost
        assert waited < 1.0, waited
        assert outcomes.fold(database).changes == 1
        assert_exact(database)
        assert db.execute("SELECT SUM(deliveries) FROM chimeway_outcome_hours").fetchone()[0] == 2
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_folds_racing_writers_then_every_change_is_folded_once(configured, database_url):
    database = configured.database
    rows = [delivery("dispatched", timedelta(minutes=1)).id for _ in range(400)]
    errors: list[BaseException] = []

    def finish_all(ids: list[str]) -> None:
        conn = psycopg2.connect(database_url)
        conn.autocommit = True
        try:
            for delivery_id in ids:
                finish(conn, delivery_id)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)
        finally:
            conn.close()

    def fold_until(stop: threading.Event) -> None:
        while not stop.is_set():
            outcomes.fold(database)
        db.database().close()

    # Given two writers finishing deliveries while two folds run over and over
    stop = threading.Event()
    folders = [threading.Thread(target=fold_until, args=(stop,)) for _ in range(2)]
    writers = [threading.Thread(target=finish_all, args=(rows[i::2],)) for i in range(2)]
    for thread in folders + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in folders:
        thread.join()
    outcomes.fold(database)
    # Then every delivery is counted once
    assert errors == []
    assert db.execute("SELECT SUM(deliveries) FROM chimeway_outcome_hours").fetchone()[0] == 400
    assert_exact(database)


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_a_session_in_another_time_zone_then_its_outcomes_go_to_the_utc_hour(configured, database_url):
    # Given a session in India (UTC+05:30), where a local hour starts at half past a UTC hour
    row = delivery("dispatched", timedelta(minutes=1))
    conn = psycopg2.connect(database_url)
    try:
        conn.cursor().execute("SET TimeZone = 'Asia/Kolkata'")
        # When it finishes a delivery at 10:40 UTC (16:10 there)
        conn.cursor().execute("UPDATE chimeway_deliveries SET status = 'succeeded', updated_at = %s WHERE id = %s",
                              (datetime(2026, 11, 30, 10, 40, tzinfo=UTC), row.id))
        conn.commit()
    finally:
        conn.close()
    outcomes.fold(configured.database)
    # Then it is counted in the 10:00 UTC hour, not at 10:30
    assert db.execute("SELECT hour FROM chimeway_outcome_hours").fetchall() == [(datetime(2026, 11, 30, 10, tzinfo=UTC),)]


@pytest.mark.parametrize("dialect", ["postgres"], indirect=True)
def test_given_a_burst_of_changes_folded_then_status_does_not_read_the_pages_they_left(configured):
    database = configured.database
    # Given 20,000 outcomes counted at once (a bulk load, a day without a scheduler), folded, and the
    # changes' heap vacuumed but not truncated (what a vacuum that cannot take its lock leaves)
    succeeded_hours_ago(database, 20_000, 5)
    assert outcomes.fold(database).changes == 20_000
    db.execute("VACUUM (TRUNCATE false, ANALYZE) chimeway_outcome_changes", db=database)
    pages = db.execute("SELECT relpages FROM pg_class WHERE relname = 'chimeway_outcome_changes'").fetchone()[0]
    # When status's windows are read
    before = changes_pages_read(database)
    windows = recent(database)
    # Then the day is right, and the empty pages were not read (the read goes through the index on hour)
    assert windows["day"] == [{"status": "succeeded", "reason": None, "count": 20_000}]
    assert pages > 50 and changes_pages_read(database) - before < 5


def changes_pages_read(database) -> int:
    """Heap pages of chimeway_outcome_changes read so far, from cache or disk."""
    db.execute("SELECT pg_stat_force_next_flush()", db=database)
    db.execute("SELECT pg_stat_clear_snapshot()", db=database)
    return db.execute(
        "SELECT heap_blks_hit + heap_blks_read FROM pg_statio_user_tables WHERE relname = 'chimeway_outcome_changes'",
        db=database,
    ).fetchone()[0]
