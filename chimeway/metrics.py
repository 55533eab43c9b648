"""Prometheus metrics (the optional ``metrics`` extra), fed by telemetry events.

::

    import chimeway.metrics
    chimeway.metrics.install()        # on prometheus_client's default registry, once per process

=====================================  =============================================================
chimeway_deliveries_total              deliveries that reached a terminal state, by status and reason
chimeway_attempts_total                adapter calls, by adapter, outcome and error class
chimeway_adapter_latency_seconds       adapter call duration, by adapter (histogram)
chimeway_unhandled_outcomes_total      attempts no documented case handles, by adapter
=====================================  =============================================================

Labels are closed vocabularies (states, adapter names), never ids, recipients or payloads.
"""

from __future__ import annotations

import threading
from typing import Any

from chimeway import telemetry

_installed: dict[int, Metrics] = {}
_lock = threading.Lock()


class Metrics:
    """The collectors, and the telemetry handler that feeds them."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        self.deliveries = Counter(
            "chimeway_deliveries_total", "Deliveries that reached a terminal state.", ["status", "reason"],
            registry=registry,
        )
        self.attempts = Counter(
            "chimeway_attempts_total", "Adapter calls by outcome.", ["adapter", "outcome", "error_class"],
            registry=registry,
        )
        self.adapter_latency = Histogram(
            "chimeway_adapter_latency_seconds", "Adapter call duration.", ["adapter"], registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.unhandled = Counter(
            "chimeway_unhandled_outcomes_total", "Attempt outcomes no documented case handles.", ["adapter"],
            registry=registry,
        )

    def __call__(self, event: str, phase: str, metadata: dict[str, Any]) -> None:
        adapter = str(metadata.get("adapter") or "")
        if event == "delivery" and phase == "terminal":
            self.deliveries.labels(metadata.get("status") or "", metadata.get("reason") or "").inc()
        elif event == "adapter_call" and phase == "stop":
            self.attempts.labels(adapter, metadata.get("outcome") or "", metadata.get("error_class") or "").inc()
            self.adapter_latency.labels(adapter).observe(float(metadata.get("duration_ms") or 0) / 1000)
        elif event == "unhandled_outcome":
            self.unhandled.labels(adapter).inc()


def install(registry: Any = None) -> Metrics:
    """Create the collectors on ``registry`` (default: prometheus_client's) and attach them; idempotent."""
    with _lock:
        key = id(registry)
        if key not in _installed:
            _installed[key] = Metrics(registry)
            telemetry.attach(_installed[key])
        return _installed[key]


def uninstall(registry: Any = None) -> None:
    """Detach (the collectors stay registered, as Prometheus expects)."""
    with _lock:
        metrics = _installed.pop(id(registry), None)
    if metrics is not None:
        telemetry.detach(metrics)
