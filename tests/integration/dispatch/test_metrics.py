"""Prometheus metrics fed by telemetry: terminal deliveries, attempts, latency, unhandled outcomes."""

from __future__ import annotations

import pytest

import chimeway
from chimeway.testing import drain

prometheus_client = pytest.importorskip("prometheus_client")



def test_given_metrics_installed_when_deliveries_finish_then_terminal_states_attempts_and_unhandled_are_counted(
    runtime, worker, registry
):
    for script in (["ok"], ["temporary", "ok"], ["bounced"], ["garbage"]):
        chimeway.send("email", "ann@example.com", {"fake_outcomes": script}, max_attempts=2)
    drain(runtime)
    value = registry.get_sample_value
    assert value("chimeway_deliveries_total", {"status": "succeeded", "reason": ""}) == 2
    assert value("chimeway_deliveries_total", {"status": "cancelled", "reason": "bounced"}) == 1
    assert value("chimeway_deliveries_total", {"status": "cancelled", "reason": "retries_exhausted"}) == 1
    assert value("chimeway_attempts_total", {"adapter": "fake", "outcome": "failed", "error_class": "temporary"}) == 1
    assert value("chimeway_attempts_total", {"adapter": "fake", "outcome": "succeeded", "error_class": ""}) == 2
    assert value("chimeway_unhandled_outcomes_total", {"adapter": "fake"}) == 2
    assert value("chimeway_adapter_latency_seconds_count", {"adapter": "fake"}) == 6
