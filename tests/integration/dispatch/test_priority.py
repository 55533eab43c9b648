"""Priority lanes: a high-priority delivery overtakes a bulk backlog on a real worker; workers can be
dedicated to a lane; the sweep re-enqueues into the delivery's own lane."""

from __future__ import annotations

import json
from pathlib import Path

import dramatiq
import pytest

import chimeway
from chimeway import db
from chimeway.api import sweep
from chimeway.dispatch.actors import LANES
from chimeway.states import Priority
from tests.harness.workers import wait_for


def calls_in_order(call_log: Path) -> list[dict]:
    if not call_log.exists():
        return []
    return [json.loads(line) for line in call_log.read_text().splitlines()]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_a_bulk_backlog_on_a_four_thread_worker_then_a_high_priority_delivery_is_sent_within_a_second(
    redis_runtime, workers, call_log
) -> None:
    workers.start(threads=4)
    # Given 400 bulk deliveries of 100 ms each, queued and being worked through
    backlog = chimeway.send_many(
        [{"channel": "email", "recipient": f"u{n}@example.com", "payload": {"fake_outcomes": ["sleep:100"]},
          "priority": "bulk"} for n in range(400)]
    )
    wait_for(lambda: len(calls_in_order(call_log)) >= 8, 30, "the backlog to be in progress")
    # When a high-priority delivery is sent
    started = len(calls_in_order(call_log))
    urgent = chimeway.send("sms", "+15550100", {"code": "123456"}, priority="high")
    committed = db.now()
    wait_for(lambda: chimeway.get_delivery(urgent.id).status == "succeeded", 30, "the high-priority delivery")
    # Then it was sent within a second of its commit, ahead of all but the bulk sends in progress
    order = [call["delivery_id"] for call in calls_in_order(call_log)]
    overtaken = order.index(urgent.id) - started
    assert overtaken <= 8, f"{overtaken} bulk sends began before it"
    [attempt] = chimeway.attempts(urgent.id)
    assert (attempt.created_at - committed).total_seconds() < 1.0
    assert order.count(backlog[-1].id) == 0  # the backlog was still there


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_a_worker_dedicated_to_the_high_lane_then_it_sends_only_high_deliveries(
    redis_runtime, workers, call_log
) -> None:
    workers.start(threads=2, extra=("--queues", LANES[Priority.HIGH].queue))
    bulk = chimeway.send("email", "a@example.com", {}, priority="bulk")
    urgent = chimeway.send("email", "b@example.com", {}, priority="high")
    wait_for(lambda: chimeway.get_delivery(urgent.id).status == "succeeded", 30, "the high delivery")
    assert chimeway.get_delivery(bulk.id).status == "pending"
    workers.start(threads=2, extra=("--queues", LANES[Priority.BULK].queue))
    wait_for(lambda: chimeway.get_delivery(bulk.id).status == "succeeded", 30, "the bulk delivery")


def test_given_lost_deliveries_of_each_lane_then_the_sweep_re_enqueues_each_into_its_own_lane(configured) -> None:
    # Given one never-enqueued pending delivery per lane, older than the stall threshold
    sent = {priority: chimeway.send("email", "ann@example.com", {}, priority=priority.value) for priority in Priority}
    for queue in configured.broker.queues.values():
        queue.queue.clear()
    db.execute("UPDATE chimeway_deliveries SET updated_at = %s, enqueued_at = NULL",
               (db.to_db_time(db.now().replace(year=2000)),))
    # When the sweep runs
    assert sweep().pending == 3
    # Then each message is on its lane's queue, for that lane's actor
    for priority, delivery in sent.items():
        [raw] = list(configured.broker.queues[LANES[priority].queue].queue)
        message = dramatiq.Message.decode(raw)
        assert (message.args[0], message.actor_name) == (delivery.id, LANES[priority].actor_name)
