"""On PostgreSQL concurrent sweeps share the work without sending any row twice."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import psycopg2
import pytest

from chimeway import db
from chimeway import runtime as runtime_mod
from chimeway.dispatch.sweep import SWEEP_LOCK_KEY, SweepResult, sweep
from chimeway.models import Delivery, new_id

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_runtime(pg_url: str) -> Iterator[runtime_mod.Runtime]:
    runtime = runtime_mod.configure(database_url=pg_url, redis_url="", environ={}, db_pool_size=8)
    yield runtime
    runtime_mod.reset()


def lost_rows(count: int) -> list[str]:
    old = db.now() - timedelta(minutes=10)
    rows = [
        {
            "id": new_id(),
            "notification_id": new_id(),
            "channel": "email",
            "recipient": f"user{i}@example.com",
            "adapter": "fake",
            "created_at": old,
            "updated_at": old,
        }
        for i in range(count)
    ]
    Delivery.insert_many(rows).execute()
    return [row["id"] for row in rows]


def deliver_messages(runtime: runtime_mod.Runtime) -> list[str]:
    import dramatiq

    name = runtime.actors["deliver"].actor_name
    messages = [dramatiq.Message.decode(raw) for q in runtime.broker.queues.values() for raw in list(q.queue)]
    return [m.args[0] for m in messages if m.actor_name == name]


def test_two_concurrent_sweeps_never_enqueue_the_same_row_twice(pg_runtime) -> None:
    # Given 300 lost deliveries
    ids = lost_rows(300)
    results: list[SweepResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            for _ in range(3):
                results.append(sweep(batch_size=25))
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    # When four threads sweep at the same moment, three times each
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then every row was re-enqueued exactly once
    assert errors == []
    swept = Counter(i for result in results for i in result.delivery_ids)
    assert set(swept) == set(ids) and set(swept.values()) == {1}
    assert Counter(deliver_messages(pg_runtime)) == Counter(dict.fromkeys(ids, 1))


def test_a_sweep_skips_rows_another_transaction_has_locked(pg_runtime, pg_url) -> None:
    busy, free = lost_rows(2)
    other = psycopg2.connect(pg_url)
    try:
        other.cursor().execute("SELECT id FROM chimeway_deliveries WHERE id = %s FOR UPDATE", (busy,))
        assert sweep() == SweepResult(pending=1, delivery_ids=(free,))
    finally:
        other.rollback()
        other.close()
    assert sweep() == SweepResult(pending=1, delivery_ids=(busy,))


def test_a_sweep_does_nothing_while_another_holds_the_sweep_lock(pg_runtime, pg_url) -> None:
    lost_rows(3)
    other = psycopg2.connect(pg_url)
    try:
        other.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,))
        assert sweep() == SweepResult(skipped=True)
        assert deliver_messages(pg_runtime) == []
    finally:
        other.rollback()
        other.close()
    assert sweep().pending == 3
