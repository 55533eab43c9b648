"""Retention under load: prune runs again and again while real workers deliver (the small version of
``make chaos`` with CHAOS_PRUNE_CRON). Nothing open is removed and nothing is lost."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

import chimeway
from chimeway import db
from chimeway.models import Attempt, Delivery, Event, new_id
from chimeway.ops.retention import prune_history
from tests.harness.workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def seed(status: str, days: int) -> str:
    at = db.now() - timedelta(days=days)
    row = Delivery.create(notification_id=new_id(), channel="email", recipient="old@example.com", adapter="fake",
                          status=status, attempt_count=1, created_at=at, updated_at=at)
    Attempt.create(delivery_id=row.id, attempt_number=1, outcome="failed", adapter="fake", created_at=at)
    Event.create(delivery_id=row.id, type="sent", provider="fake", occurred_at=at, received_at=at)
    return row.id


def ok_calls(call_log: Path) -> dict[str, int]:
    """Adapter calls per delivery that were scripted to succeed (the second attempt of each send)."""
    calls: dict[str, int] = {}
    if call_log.exists():
        for line in call_log.read_text().splitlines():
            call = json.loads(line)
            if call["attempt_number"] == 2:
                calls[call["delivery_id"]] = calls.get(call["delivery_id"], 0) + 1
    return calls


def test_given_workers_delivering_when_prune_runs_over_and_over_then_nothing_open_is_removed_and_nothing_is_lost(
    redis_runtime, workers, call_log
):
    # Given old history: terminal deliveries past retention, and open ones older still
    old_done = {seed("succeeded", 200) for _ in range(20)}
    old_open = {seed("pending", 300) for _ in range(3)} | {seed("failed", 300) for _ in range(2)}
    # When workers deliver 40 sends (each fails once, then succeeds after 300 ms, so that delivering
    # them outlasts several prunes) while prune runs in a loop, every other run with a clock 1000 days
    # ahead so that it removes each delivery the moment it is terminal
    # 40 scripted transient failures at once: the circuit breaker would rightly open on them (and keep
    # the sends waiting 30 s a time), and this test is about prune, not the provider
    workers.start(processes=2, threads=4, env={"CHIMEWAY_CIRCUIT_FAILURES": "100000"})
    script = {"fake_outcomes": ["temporary", "sleep:300"]}
    sent = {chimeway.send("email", f"r{i}@example.com", script).id for i in range(40)}
    future = db.now() + timedelta(days=1000)
    runs = removed = 0

    def delivered() -> bool:
        nonlocal runs, removed
        removed += prune_history(runtime=redis_runtime).deliveries
        removed += prune_history(runtime=redis_runtime, now=future).deliveries
        runs += 2
        calls = ok_calls(call_log)
        return all(calls.get(delivery_id) for delivery_id in sent)

    wait_for(delivered, 90, "every send to be delivered")
    wait_for(lambda: not Delivery.select().where(Delivery.id.in_(sent), Delivery.status != "succeeded").exists(),
             30, "every kept send to be recorded as succeeded")
    # Then every send was delivered exactly once, and each one still kept has both its attempts
    assert set(ok_calls(call_log).items()) >= {(delivery_id, 1) for delivery_id in sent}
    for delivery in Delivery.select().where(Delivery.id.in_(sent)):
        assert [a.attempt_number for a in chimeway.attempts(delivery.id)] == [1, 2]
    # And the old open deliveries are all there with their rows; the old terminal ones are gone
    kept = {d.id for d in Delivery.select(Delivery.id)}
    assert old_open <= kept and not old_done & kept
    assert Attempt.select().where(Attempt.delivery_id.in_(old_open)).count() == 5
    assert Event.select().where(Event.delivery_id.in_(old_open)).count() == 5
    assert runs >= 4 and removed >= len(old_done)
    # And no worker logged an error (a write to a delivery prune had removed would)
    for _, log in workers.started:
        assert " ERROR " not in log.read_text() and "CRITICAL" not in log.read_text(), log.read_text()[-3000:]
