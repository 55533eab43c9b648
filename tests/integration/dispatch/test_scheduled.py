"""Scheduled sends (send_at / delay): refused when ambiguous, never attempted early, cancellable until
sent, sent on time by a real worker, also after the Redis queues are lost (the sweep honours the time)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import chimeway
from chimeway import db
from chimeway.dispatch.actors import LANES
from chimeway.errors import InvalidSendError
from chimeway.models import Delivery
from chimeway.states import Priority
from chimeway.testing import drain
from tests.harness.workers import wait_for


@pytest.mark.parametrize(("when", "argument"), [
    ({"send_at": datetime(2030, 1, 1, 9, 0)}, "send_at"),  # naive: whose 9 o'clock?
    ({"send_at": "2030-01-01T09:00:00+00:00"}, "send_at"),
    ({"delay": 30}, "delay"),
    ({"delay": timedelta(seconds=-1)}, "delay"),
    ({"delay": timedelta(seconds=5), "send_at": datetime(2030, 1, 1, tzinfo=UTC)}, "send_at"),
])
def test_given_an_ambiguous_time_then_send_refuses_it_and_stores_nothing(runtime, queued, when, argument) -> None:
    with pytest.raises(InvalidSendError) as refused:
        chimeway.send("email", "ann@example.com", {}, **when)
    assert refused.value.argument == argument
    assert Delivery.select().count() == 0 and queued() == 0


def test_given_a_scheduled_delivery_then_a_message_before_its_time_attempts_nothing(runtime, calls) -> None:
    # Given a delivery scheduled in an hour
    sent = chimeway.send("email", "ann@example.com", {}, delay=timedelta(hours=1))
    assert sent.send_at is not None and sent.next_eligible_at == sent.send_at
    # When a message for it is performed now (a duplicate, or the sweep's)
    runtime.actors["deliver"](sent.id)
    # Then nothing was attempted: still pending, scheduled, no adapter call
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.attempt_count, calls(sent.id)) == ("pending", 0, [])
    assert row.send_at == sent.send_at


def test_given_a_send_time_beyond_dramatiqs_longest_delay_then_the_wait_is_made_of_several_messages(
    runtime, queued, calls
) -> None:
    # Given a delivery scheduled in 30 days (Dramatiq refuses delays of 7 days or more)
    sent = chimeway.send("email", "ann@example.com", {}, delay=timedelta(days=30))
    [raw] = list(runtime.broker.queues[f"{LANES[Priority.NORMAL].queue}.DQ"].queue)
    import dramatiq

    eta = datetime.fromtimestamp(dramatiq.Message.decode(raw).options["eta"] / 1000, UTC)
    assert eta < db.now() + timedelta(days=6, minutes=1)
    # When that message comes due, early for the delivery
    runtime.actors["deliver"](sent.id)
    # Then nothing is attempted, and the next step of the wait is enqueued
    assert queued() == 2 and calls(sent.id) == []
    assert chimeway.get_delivery(sent.id).status == "pending"


def test_given_a_scheduled_delivery_then_cancel_works_until_it_is_sent(runtime, worker, calls) -> None:
    sent = chimeway.send("email", "ann@example.com", {}, send_at=db.now() + timedelta(seconds=2))
    assert chimeway.cancel(sent.id) is True
    drain(runtime)  # its delayed message comes due and finds it cancelled
    assert chimeway.get_delivery(sent.id).status == "cancelled" and calls(sent.id) == []


def test_given_a_time_in_the_past_then_the_delivery_is_sent_at_once(runtime, worker, calls) -> None:
    sent = chimeway.send("email", "ann@example.com", {}, send_at=datetime(2020, 1, 1, tzinfo=UTC))
    drain(runtime)
    assert chimeway.get_delivery(sent.id).status == "succeeded"


@pytest.mark.parametrize("read", [True, False])
def test_given_an_sms_fallback_delayed_after_an_email_then_it_is_sent_only_if_the_email_was_not_read(
    runtime, worker, calls, read
) -> None:
    # Given the README's recipe: an email now, an SMS fallback of the same notification a little later
    with runtime.database.atomic():
        email = chimeway.send("email", "ann@example.com", {})
        sms = chimeway.send("sms", "+15550100", {}, notification_id=email.notification_id, delay_fallback=True,
                            delay=timedelta(seconds=1))
    # When the email is read before the SMS is due (or not)
    if read:
        chimeway.mark_read(email.notification_id)
    drain(runtime)
    # Then the SMS is suppressed as already read, or sent
    row = chimeway.get_delivery(sms.id)
    assert (row.status, row.reason, len(calls(sms.id))) == (
        ("suppressed", "already_read", 0) if read else ("succeeded", None, 1)
    )


def test_given_a_lost_scheduled_delivery_then_the_sweep_re_enqueues_it_delayed_to_its_time_in_its_lane(
    database_url
) -> None:
    from chimeway.api import sweep
    from chimeway.wiring import runtime as runtime_mod

    runtime = runtime_mod.configure(database_url=database_url, redis_url="", environ={}, default_adapter="fake",
                                    sweep_stall_seconds=60)
    try:
        # Given scheduled bulk deliveries whose messages were enqueued long ago and lost
        soon = chimeway.send("email", "a@example.com", {}, delay=timedelta(seconds=30), priority="bulk")
        later = chimeway.send("email", "b@example.com", {}, delay=timedelta(hours=1), priority="bulk")
        old = db.to_db_time(db.now() - timedelta(hours=2))
        db.execute("UPDATE chimeway_deliveries SET enqueued_at = %s", (old,))
        for queue in runtime.broker.queues.values():
            queue.queue.clear()
        # When the sweep runs
        result = sweep()
        # Then the one due within the stall window is re-enqueued, on its lane's delay queue, due at its time
        assert result.delivery_ids == (soon.id,)
        delayed = list(runtime.broker.queues[f"{LANES[Priority.BULK].queue}.DQ"].queue)
        assert len(delayed) == 1
        import dramatiq

        message = dramatiq.Message.decode(delayed[0])
        eta = datetime.fromtimestamp(message.options["eta"] / 1000, UTC)
        assert message.args[0] == soon.id and abs(eta - soon.send_at) < timedelta(seconds=5)
        assert later.id not in result.delivery_ids
    finally:
        runtime_mod.reset()


# --- real workers on PostgreSQL and Redis ---------------------------------------------------------


def call_times(call_log: Path) -> dict[str, float]:
    if not call_log.exists():
        return {}
    return {line["delivery_id"]: line["at"] for line in map(json.loads, call_log.read_text().splitlines())}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_scheduled_sends_on_a_real_worker_then_each_is_sent_on_time(redis_runtime, workers, call_log) -> None:
    workers.start(threads=4)
    # Given deliveries scheduled 2 to 4 seconds ahead, by send and by send_many
    first = chimeway.send("sms", "+15550100", {}, delay=timedelta(seconds=2), priority="high")
    many = chimeway.send_many([
        {"channel": "email", "recipient": f"u{n}@example.com", "send_at": db.now() + timedelta(seconds=3 + n / 10)}
        for n in range(10)
    ])
    scheduled = [first, *many]
    # Then each adapter call began at its time, not before and within a second after
    wait_for(lambda: len(call_times(call_log)) == len(scheduled), 30, "every scheduled send")
    times = call_times(call_log)
    for delivery in scheduled:
        late = times[delivery.id] - delivery.send_at.timestamp()
        assert 0 <= late < 1.0, (delivery.id, late)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_the_redis_queues_are_lost_then_the_sweep_sends_a_scheduled_delivery_on_time(
    pg_url, redis_url, redis_namespace, workers, call_log
) -> None:
    from chimeway.wiring import runtime as runtime_mod

    runtime = runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                    default_adapter="fake", environ={}, sweep_stall_seconds=1)
    try:
        # Given a delivery scheduled 4 seconds ahead whose message is lost with the queues (no worker
        # held it yet), and a worker started after the loss
        sent = chimeway.send("email", "ann@example.com", {}, delay=timedelta(seconds=4), priority="bulk")
        lost = list(runtime.redis.scan_iter(match=f"{redis_namespace}:chimeway*"))
        assert lost  # the delay queue held its message
        runtime.redis.delete(*lost)
        workers.start(threads=2)
        # When the sweep runs once the delivery is due within the stall threshold (1 s)
        wait_for(lambda: db.now() > sent.send_at - timedelta(seconds=0.9), 10, "the sweep's window")
        assert chimeway.sweep().delivery_ids == (sent.id,)
        # Then it is sent at its time, not before and within a second after
        wait_for(lambda: sent.id in call_times(call_log), 30, "the scheduled send")
        late = call_times(call_log)[sent.id] - sent.send_at.timestamp()
        assert 0 <= late < 1.0, late
        wait_for(lambda: chimeway.get_delivery(sent.id).status == "succeeded", 10, "success")
    finally:
        runtime_mod.reset()


def test_given_a_delivery_scheduled_for_tomorrow_then_status_does_not_report_it_stalled(runtime) -> None:
    from chimeway.ops.status import collect

    # Given a delivery scheduled for tomorrow, recorded long ago, and one really stalled
    waiting = chimeway.send("email", "ann@example.com", {}, delay=timedelta(days=1))
    stalled = chimeway.send("email", "bob@example.com", {})
    long_ago = db.to_db_time(db.now() - timedelta(hours=3))
    db.execute("UPDATE chimeway_deliveries SET updated_at = %s, enqueued_at = %s WHERE id IN (%s, %s)",
               (long_ago, long_ago, waiting.id, stalled.id))
    # Then only the one not waiting for its time counts as stalled
    assert collect(runtime)["stalled"] == 1
