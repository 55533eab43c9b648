"""Rate limits, circuits and failover on the in-memory broker (the embedded default), on SQLite and
PostgreSQL: the same rules as on Redis, kept by the process's own guard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import chimeway
from chimeway import telemetry
from chimeway.testing import drain, start_worker
from chimeway.wiring import runtime as runtime_mod


@pytest.fixture
def configure(database_url: str) -> Iterator[Any]:
    def make(**settings: Any) -> Any:
        configured = runtime_mod.configure(database_url=database_url, redis_url="", environ={}, backoff_min_ms=1,
                                           backoff_max_ms=20, default_adapter="fake", **settings)
        configured.registry.adapter_class("fake").reset()
        return configured

    yield make
    runtime_mod.reset()


def adapters_of(delivery_id: str) -> list[tuple[int, str, str]]:
    return [(a.attempt_number, a.adapter, a.outcome) for a in chimeway.attempts(delivery_id)]


def test_given_failover_fake_to_log_when_fake_fails_transiently_then_log_makes_attempt_2_and_gives_the_provider(
    configure
):
    runtime = configure(failover="fake=log")
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]})
    with start_worker(runtime):
        assert drain(runtime) == []
    delivery = chimeway.get_delivery(sent.id)
    assert adapters_of(sent.id) == [(1, "fake", "failed"), (2, "log", "succeeded")]
    assert (delivery.status, delivery.adapter, delivery.provider) == ("succeeded", "fake", "log")


def test_given_a_permanent_failure_then_it_does_not_fail_over(configure):
    runtime = configure(failover="fake=log")
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["permanent"]})
    with start_worker(runtime):
        assert drain(runtime) == []
    assert adapters_of(sent.id) == [(1, "fake", "rejected")]
    assert chimeway.get_delivery(sent.id).reason == "permanent_failure"


def test_given_an_open_circuit_on_fake_then_the_next_delivery_goes_through_log_at_once_without_calling_fake(configure):
    runtime = configure(failover="fake=log", circuit_failures=2, circuit_open_seconds=3600)
    failing = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=1).id
               for _ in range(2)]
    with start_worker(runtime):
        assert drain(runtime) == []
        assert [c["state"] for c in runtime.guard.circuits(["fake"])] == ["open"]
        later = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]})
        assert drain(runtime) == []
    assert sorted(c.delivery_id for c in runtime.registry.adapter_class("fake").calls_for()) == sorted(failing)
    assert adapters_of(later.id) == [(1, "log", "succeeded")]


def test_given_a_rate_limit_when_deliveries_wait_for_it_then_each_still_spends_exactly_one_attempt(configure):
    runtime = configure(rate_limits="fake=20/1")
    waits: list[dict[str, Any]] = []
    handler = lambda event, phase, metadata: waits.append(metadata) if event == "admission" else None  # noqa: E731
    telemetry.attach(handler)
    try:
        sent = [chimeway.send("email", "ann@example.com", {"fake_outcomes": ["ok"]}).id for _ in range(10)]
        with start_worker(runtime):
            assert drain(runtime) == []
    finally:
        telemetry.detach(handler)
    for delivery_id in sent:
        assert adapters_of(delivery_id) == [(1, "fake", "succeeded")]
    assert waits and {w["reason"] for w in waits} == {"rate"}  # some of them did wait their turn


def test_given_an_open_circuit_then_status_and_prometheus_metrics_show_it(configure, registry):
    from chimeway.ops.status import collect, render

    runtime = configure(circuit_failures=1, circuit_open_seconds=3600)
    chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=1)
    with start_worker(runtime):
        assert drain(runtime) == []
    report = collect(runtime)
    assert [(c["adapter"], c["state"], c["failures"]) for c in report["circuits"]] == [("fake", "open", 1)]
    assert "fake                 open" in render(report)
    assert registry.get_sample_value("chimeway_circuit_state", {"adapter": "fake"}) == 2
    assert registry.get_sample_value("chimeway_circuit_transitions_total", {"adapter": "fake", "state": "opened"}) == 1
