"""Retention (CHIMEWAY_RETENTION_DAYS): prune removes terminal deliveries past retention with their
attempts and ledger events, and old orphans; open deliveries and every row inside retention stay,
and stay append-only."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import psycopg2
import pytest

from chimeway import db
from chimeway.errors import EventLedgerImmutableError
from chimeway.models import Attempt, Delivery, Event, new_id
from chimeway.ops.retention import prune_history


@pytest.fixture
def pg_only(configured) -> None:
    if not db.is_postgres(configured.database):
        pytest.skip("the unlocked first try of a chunk is PostgreSQL's")


def ids(model, **where) -> set[str]:
    query = model.select(model.id)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return {row.id for row in query}


def test_given_old_and_recent_history_when_pruned_then_only_terminal_rows_past_retention_go(
    configured, history, orphan
):
    # Given 90 days of retention, deliveries on both sides of it and orphans
    old_done = [history("succeeded", days=120), history("cancelled", days=100), history("suppressed", days=91)]
    old_open = [history("pending", days=200), history("failed", days=150), history("dispatched", days=120)]
    recent_done = history("succeeded", days=10)
    late_event = history("succeeded", days=120, event_days=5)  # an "opened" of last week keeps it
    old_orphan, young_orphan = orphan(100), orphan(3)

    # When prune runs dry first, then for real
    dry = prune_history(runtime=configured, dry_run=True)
    assert (dry.deliveries, dry.attempts, dry.events, dry.orphans) == (3, 3, 3, 1)
    assert Delivery.select().count() == 8 and Event.select().count() == 10  # a dry run removes nothing
    done = prune_history(runtime=configured)

    # Then exactly the terminal deliveries past retention went, with their attempts and events
    assert (done.deliveries, done.attempts, done.events, done.orphans) == (3, 3, 3, 1)
    assert ids(Delivery) == {*old_open, recent_done, late_event}
    assert {a.delivery_id for a in Attempt.select()} == {*old_open, recent_done, late_event}
    assert ids(Event, delivery_id=None) == {young_orphan}
    assert old_orphan not in ids(Event)
    assert not set(old_done) & ids(Delivery)
    # And a second run finds nothing more
    again = prune_history(runtime=configured)
    assert (again.deliveries, again.attempts, again.events, again.orphans) == (0, 0, 0, 0)


def test_given_retention_zero_when_pruned_then_everything_is_kept(configured, history, orphan):
    history("succeeded", days=3000)
    orphan(3000)
    runtime = replace(configured, settings=replace(configured.settings, retention_days=0))
    result = prune_history(runtime=runtime)
    assert result.cutoff is None and result.deliveries == 0
    assert Delivery.select().count() == 1 and Event.select().count() == 2


def test_given_an_orphan_the_reconciler_may_still_link_then_a_short_retention_keeps_it(configured, orphan):
    # Given 1 day of retention but a reconcile max age of 7 days (the default)
    young = orphan(3)
    runtime = replace(configured, settings=replace(configured.settings, retention_days=1))
    assert prune_history(runtime=runtime).orphans == 0
    assert young in ids(Event)


def test_given_a_prune_has_run_then_kept_rows_are_still_append_only(configured, history):
    # Given a prune that set its horizon 90 days back
    recent = history("succeeded", days=10)
    old_open = history("pending", days=200)
    prune_history(runtime=configured)
    database = configured.database
    # Then a row inside retention cannot be deleted, nor updated
    for table in ("chimeway_delivery_attempts", "chimeway_events"):
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"DELETE FROM {table} WHERE delivery_id = %s", (recent,), database)
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"UPDATE {table} SET provider_message_id = 'x' WHERE delivery_id = %s", (recent,), database)
        # And an open delivery's rows cannot be deleted whatever their age
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"DELETE FROM {table} WHERE delivery_id = %s", (old_open,), database)
    assert Attempt.select().count() == 2 and Event.select().count() == 2


def test_given_no_prune_ever_ran_then_even_old_terminal_rows_cannot_be_deleted(configured, history):
    old = history("succeeded", days=400)
    for table in ("chimeway_delivery_attempts", "chimeway_events"):
        with pytest.raises(EventLedgerImmutableError):
            db.execute(f"DELETE FROM {table} WHERE delivery_id = %s", (old,), configured.database)


def test_given_more_than_a_chunk_then_prune_removes_them_all(configured, history, monkeypatch):
    from chimeway.ops import retention

    monkeypatch.setattr(retention, "CHUNK", 3)
    for _ in range(7):
        history("succeeded", days=120)
    assert prune_history(runtime=configured).deliveries == 7
    assert Delivery.select().count() == 0 and Attempt.select().count() == 0 and Event.select().count() == 0


def test_given_the_oldest_candidates_are_all_kept_by_late_events_then_prune_walks_past_them(
    configured, history, monkeypatch
):
    from chimeway.ops import retention

    monkeypatch.setattr(retention, "CHUNK", 2)
    kept = {history("succeeded", days=130, event_days=1) for _ in range(3)}  # oldest, each with a late event
    for _ in range(3):
        history("succeeded", days=120)
    assert prune_history(runtime=configured).deliveries == 3
    assert ids(Delivery) == kept


@pytest.mark.parametrize("between", [1, 8], ids=["range", "one-by-one"])
def test_given_deliveries_made_between_the_expired_ones_then_prune_takes_only_the_expired_ones(
    configured, history, monkeypatch, between
):
    from chimeway.ops import retention

    # Given two expired deliveries (one chunk) and, made between them, recent and open ones: their ids
    # (UUIDv7, time-ordered) lie between, so on PostgreSQL the chunk's rows are read as a range of ids
    # when few rows of others are in it, one delivery at a time when many are
    monkeypatch.setattr(retention, "CHUNK", 2)
    first = history("succeeded", days=120)
    others = {history("succeeded", days=5) for _ in range(between)} | {history("pending", days=200)}
    last = history("succeeded", days=120, event_days=200)
    statements = _recorded(monkeypatch)
    # When prune runs
    result = prune_history(runtime=configured)
    # Then the expired two went with their rows; the rows of the others, read with them, all stay
    assert (result.deliveries, result.attempts, result.events) == (2, 2, 2)
    assert ids(Delivery) == others and not {first, last} & ids(Delivery)
    assert {a.delivery_id for a in Attempt.select()} == others
    assert {e.delivery_id for e in Event.select()} == others
    one_by_one = any("delivery_id = ANY" in sql or "delivery_id IN (" in sql for sql in statements)
    assert one_by_one == (not db.is_postgres(configured.database) or between == 8)


def _bare(status: str, days: float) -> str:
    """A delivery last changed ``days`` ago with no attempt or event (as after its month's drop)."""
    at = db.now() - timedelta(days=days)
    return Delivery.create(
        notification_id=new_id(), channel="email", recipient="ann@example.com", adapter="log", status=status,
        created_at=at, updated_at=at,
    ).id


def test_given_a_writer_holding_an_expired_delivery_then_prune_neither_waits_for_it_nor_removes_it(
    configured, pg_only
):
    # Given expired deliveries whose rows are gone (the walk tries them without locking first), one
    # of them held by another transaction (a worker, the projection)
    expired = [_bare("succeeded", 120) for _ in range(5)]
    holder = psycopg2.connect(configured.settings.database_url)
    try:
        holder.cursor().execute("SELECT 1 FROM chimeway_deliveries WHERE id = %s FOR UPDATE", (expired[2],))
        # When prune runs (in a thread: waiting for the holder would never end while it holds)
        outcome: list = []
        pruning = threading.Thread(target=lambda: outcome.append(prune_history(runtime=configured)), daemon=True)
        pruning.start()
        pruning.join(60)
        # Then it did not wait for the holder, took the others and left the held one for the next run
        assert not pruning.is_alive() and outcome, "prune waited for the transaction holding a delivery"
        assert outcome[0].deliveries == 4 and ids(Delivery) == {expired[2]}
    finally:
        holder.rollback()
        holder.close()
    assert prune_history(runtime=configured).deliveries == 1


def test_given_a_writer_reopening_an_expired_delivery_as_prune_runs_then_it_is_kept(configured, pg_only):
    # Given expired deliveries with no row left, one of which a writer (a redrive) has reopened and
    # commits while prune's delete waits for it (50 ms, inside the 100 ms it waits)
    expired = [_bare("succeeded", 120) for _ in range(5)]
    writer = psycopg2.connect(configured.settings.database_url)
    try:
        writer.cursor().execute(
            "UPDATE chimeway_deliveries SET status = 'pending', updated_at = now() WHERE id = %s", (expired[2],)
        )
        commit = threading.Timer(0.05, writer.commit)
        commit.start()
        # When prune runs
        result = prune_history(runtime=configured)
        commit.join()
    finally:
        writer.close()
    # Then the delete by place did not follow the row to the version the writer made (or, had the
    # wait run out, the locked walk skipped it): the reopened delivery is kept, open
    assert result.deliveries == 4 and ids(Delivery) == {expired[2]}
    assert Delivery.get_by_id(expired[2]).status == "pending"


def test_given_expired_deliveries_with_no_row_left_then_each_chunk_goes_in_one_unlocked_statement(
    configured, pg_only, monkeypatch
):
    from chimeway.ops import retention

    # Given expired deliveries whose attempts and events are gone (as after their month's drop), in
    # three chunks
    monkeypatch.setattr(retention, "CHUNK", 2)
    expired = {_bare("succeeded", 120) for _ in range(5)}
    kept = _bare("succeeded", 5)
    statements = _recorded(monkeypatch)
    # When prune runs
    result = prune_history(runtime=configured)
    # Then they went chunk by chunk in the single statement, none locked beforehand
    assert result.deliveries == 5 and ids(Delivery) == {kept} and not expired & ids(Delivery)
    assert sum("WITH chunk" in sql for sql in statements) == 3
    assert not any("FOR UPDATE" in sql for sql in statements)


def test_given_a_candidate_that_still_has_rows_then_the_chunk_is_undone_and_taken_again_locked(
    configured, history, pg_only, monkeypatch
):
    # Given expired deliveries, one of which still has its attempt and its event (in a partition not
    # dropped, or committed just after the chunk was read)
    bare = {_bare("succeeded", 120) for _ in range(3)}
    with_rows = history("succeeded", days=120)
    assert ids(Delivery) == bare | {with_rows}
    statements = _recorded(monkeypatch)
    # When prune runs
    result = prune_history(runtime=configured)
    # Then the unlocked delete was refused by the delete trigger and undone, and the chunk taken again
    # with its candidates locked: everything expired went, rows first
    assert (result.deliveries, result.attempts, result.events) == (4, 1, 1)
    assert ids(Delivery) == set() and Attempt.select().count() == 0 and Event.select().count() == 0
    tries = [sql for sql in statements if "WITH chunk" in sql or "FOR UPDATE OF d" in sql]
    assert ["WITH chunk" in sql for sql in tries[:2]] == [True, False]


def _recorded(monkeypatch) -> list[str]:
    """The SQL text of every statement run through chimeway.db.execute from now on."""
    statements: list[str] = []
    execute = db.execute
    monkeypatch.setattr(db, "execute", lambda sql, *args, **kw: statements.append(sql) or execute(sql, *args, **kw))
    return statements
