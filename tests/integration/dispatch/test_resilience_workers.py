"""When a provider struggles, through real worker processes on PostgreSQL and Redis: a rate limit held
across processes, a provider's Retry-After pausing every worker, a circuit that opens, stops calls
and closes after its probe, and a failover chain. Every wait spends no attempt.

The assertions on time are bounds that a slow machine can only make safer (a call that must not
happen before a moment), and the rate limit's window count, which lateness cannot raise beyond the
burst it allows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import chimeway
from chimeway.models import new_id
from chimeway.ops.status import collect
from chimeway.store import deliveries
from tests.harness.workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def logged(call_log: Path) -> list[dict[str, Any]]:
    if not call_log.exists():
        return []
    return sorted((json.loads(line) for line in call_log.read_text().splitlines() if line.strip()),
                  key=lambda call: call["at"])


def create(outcomes: list[str], adapter: str = "fake", max_attempts: int = 5) -> Any:
    delivery, _ = deliveries.create(
        channel="email", recipient="ann@example.com", adapter=adapter, payload={"fake_outcomes": outcomes},
        metadata={}, tenant_id="default", notification_id=new_id(), idempotency_key=None,
        max_attempts=max_attempts, delay_fallback=False, category=None,
    )
    return delivery


def all_succeeded(ids: list[str]) -> bool:
    return all(chimeway.get_delivery(i).status == "succeeded" for i in ids)


def busiest_second(times: list[float]) -> int:
    """The most calls in any window of one second (windows start at each call)."""
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_given_a_10_per_second_limit_when_60_deliveries_drain_on_two_processes_of_4_threads_then_no_second_carries_more_than_the_limit_plus_a_small_burst(  # noqa: E501
    redis_runtime, workers, call_log
):
    env = {"CHIMEWAY_RATE_LIMITS": "fake=10/1"}
    workers.start(threads=4, env=env)
    workers.start(threads=4, env=env)
    sent = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]}).id for _ in range(60)]
    wait_for(lambda: all_succeeded(sent), 60, "every delivery to succeed")
    calls = logged(call_log)
    assert len(calls) == 60 and len({call["pid"] for call in calls}) == 2  # both processes called
    assert busiest_second([call["at"] for call in calls]) <= 12  # the limit, plus the burst of two it allows
    for delivery_id in sent:  # the waits spent nothing: one claim, one attempt each
        assert chimeway.get_delivery(delivery_id).attempt_count == 1
        assert [a.attempt_number for a in chimeway.attempts(delivery_id)] == [1]


def test_given_a_429_with_retry_after_2_then_every_worker_pauses_that_adapter_for_two_seconds(
    redis_runtime, workers, call_log
):
    workers.start(threads=2)
    workers.start(threads=2)
    throttled = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["throttled:2", "ok"]})
    first = wait_for(lambda: logged(call_log), 30, "the throttled call")[0]
    wait_for(lambda: chimeway.attempts(throttled.id), 30, "the 429 to be recorded")
    others = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]}).id for _ in range(6)]
    wait_for(lambda: all_succeeded([throttled.id, *others]), 60, "every delivery to succeed")
    later = [call for call in logged(call_log) if call is not first and call["at"] > first["at"]]
    assert len(later) == 7 and min(call["at"] for call in later) >= first["at"] + 2.0
    for delivery_id in others:
        assert chimeway.get_delivery(delivery_id).attempt_count == 1


def test_given_3_transient_failures_in_a_row_then_the_circuit_opens_stops_calls_and_a_successful_probe_closes_it(
    redis_runtime, workers, call_log
):
    workers.start(threads=2, env={"CHIMEWAY_CIRCUIT_FAILURES": "3", "CHIMEWAY_CIRCUIT_OPEN_SECONDS": "3"})
    failing = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary", "ok"]}).id for _ in range(3)]
    circuit = wait_for(lambda: [c for c in collect(redis_runtime)["circuits"] if c["adapter"] == "fake"
                                and c["state"] == "open"], 30, "the circuit to open")[0]
    assert circuit["failures"] == 3
    opened_after = max(call["at"] for call in logged(call_log))
    waiting = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]}).id for _ in range(3)]
    wait_for(lambda: all_succeeded(failing + waiting), 60, "every delivery to succeed")
    later = [call for call in logged(call_log) if call["at"] > opened_after]
    assert len(later) == 6 and min(call["at"] for call in later) >= opened_after + 3.0  # nothing while open
    assert [c["state"] for c in collect(redis_runtime)["circuits"] if c["adapter"] == "fake"] == ["closed"]
    for delivery_id in failing:  # the wait spent no attempt: the failure, then the success
        assert [a.outcome for a in chimeway.attempts(delivery_id)] == ["failed", "succeeded"]
    for delivery_id in waiting:
        assert chimeway.get_delivery(delivery_id).attempt_count == 1


def test_given_failover_fake_to_log_when_fake_fails_transiently_then_attempt_2_goes_through_log_and_succeeds(
    redis_runtime, workers, call_log
):
    workers.start(threads=2, env={"CHIMEWAY_FAILOVER": "fake=log"})
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]})
    wait_for(lambda: all_succeeded([sent.id]), 30, "the delivery to succeed")
    delivery = chimeway.get_delivery(sent.id)
    assert [(a.attempt_number, a.adapter, a.outcome) for a in chimeway.attempts(sent.id)] == [
        (1, "fake", "failed"), (2, "log", "succeeded")]
    assert delivery.adapter == "fake"  # the delivery keeps the adapter it was sent to
    assert delivery.provider == "log" and delivery.provider_message_id.startswith("log-")
    assert len(logged(call_log)) == 1  # fake was called once; log made attempt 2
