"""Prometheus metrics (the optional ``metrics`` extra), fed by telemetry events.

::

    import chimeway.metrics
    chimeway.metrics.install()        # on prometheus_client's default registry, once per process

=====================================  =============================================================
chimeway_deliveries_total              deliveries that reached a terminal state, by status and reason
chimeway_attempts_total                adapter calls, by adapter, outcome and error class
chimeway_adapter_latency_seconds       adapter call duration, by adapter (histogram)
chimeway_unhandled_outcomes_total      attempts no documented case handles, by adapter
chimeway_webhooks_total                webhook requests answered, by provider and HTTP status
chimeway_webhook_verify_failures_total webhook requests refused by signature verification (401)
chimeway_webhook_duplicates_total      replayed webhook requests that changed nothing
chimeway_reconcile_linked_total        orphans linked to their delivery by reconcile
chimeway_admission_waits_total         deliveries sent back to wait (no attempt spent), by adapter and
                                       reason (rate, paused, open)
chimeway_circuit_transitions_total     circuits opened or closed by this process, by adapter and state
chimeway_circuit_state                 each configured adapter's circuit: 0 closed, 1 half-open, 2 open
                                       (read from Redis at scrape)
chimeway_orphan_backlog                orphans not linked yet (read from the database at scrape)
chimeway_oldest_orphan_age_seconds     age of the oldest of them (read from the database at scrape)
=====================================  =============================================================

Labels are closed vocabularies (states, adapter names), never ids, recipients or payloads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from chimeway import telemetry

logger = logging.getLogger("chimeway.metrics")
_installed: dict[int, Metrics] = {}
_lock = threading.Lock()


class Metrics:
    """The collectors, and the telemetry handler that feeds them."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

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

        self.webhooks = Counter(
            "chimeway_webhooks_total", "Webhook requests answered.", ["provider", "status"], registry=registry
        )
        self.verify_failures = Counter(
            "chimeway_webhook_verify_failures_total", "Webhook requests that failed verification.", ["provider"],
            registry=registry,
        )
        self.duplicates = Counter(
            "chimeway_webhook_duplicates_total", "Replayed webhook requests.", ["provider"], registry=registry
        )
        self.linked = Counter("chimeway_reconcile_linked_total", "Orphans linked by reconcile.", registry=registry)
        self.waits = Counter(
            "chimeway_admission_waits_total", "Deliveries sent back to wait for their adapter (no attempt spent).",
            ["adapter", "reason"], registry=registry,
        )
        self.circuit_transitions = Counter(
            "chimeway_circuit_transitions_total", "Circuits opened or closed.", ["adapter", "state"], registry=registry
        )
        registry.register(_CircuitCollector())
        self._orphans = _OrphanReader()
        Gauge(
            "chimeway_orphan_backlog", "Orphan events not linked yet.", registry=registry
        ).set_function(lambda: self._orphans.read()["backlog"])
        Gauge(
            "chimeway_oldest_orphan_age_seconds", "Age of the oldest unlinked orphan.", registry=registry
        ).set_function(lambda: self._orphans.read()["oldest_age_seconds"] or 0)

    def __call__(self, event: str, phase: str, metadata: dict[str, Any]) -> None:
        adapter = str(metadata.get("adapter") or "")
        if event == "delivery" and phase == "terminal":
            self.deliveries.labels(metadata.get("status") or "", metadata.get("reason") or "").inc()
        elif event == "adapter_call" and phase == "stop":
            self.attempts.labels(adapter, metadata.get("outcome") or "", metadata.get("error_class") or "").inc()
            self.adapter_latency.labels(adapter).observe(float(metadata.get("duration_ms") or 0) / 1000)
        elif event == "unhandled_outcome":
            self.unhandled.labels(adapter).inc()
        elif event == "ingest" and phase == "stop":
            provider, status = str(metadata.get("provider") or ""), int(metadata.get("http_status") or 0)
            self.webhooks.labels(provider, str(status)).inc()
            if status == 401:
                self.verify_failures.labels(provider).inc()
            if metadata.get("duplicate"):
                self.duplicates.labels(provider).inc()
        elif event == "admission":
            self.waits.labels(adapter, metadata.get("reason") or "").inc()
        elif event == "circuit":
            self.circuit_transitions.labels(adapter, phase).inc()
        elif event == "reconcile" and phase == "stop":
            self.linked.inc(int(metadata.get("linked") or 0))


class _OrphanReader:
    """The orphan backlog, read from the database at most every 30 s (scrapes must stay cheap)."""

    TTL_SECONDS = 30.0

    def __init__(self) -> None:
        self._value: dict[str, Any] = {"backlog": 0, "oldest_age_seconds": None}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.TTL_SECONDS:
                from chimeway.ops.status import orphan_backlog
                from chimeway.wiring.runtime import current

                self._read_at = time.monotonic()
                try:
                    self._value = orphan_backlog(current())
                except Exception:  # a scrape must never fail because the database is away
                    logger.warning("orphan backlog not read for metrics", exc_info=True)
            return self._value


class _CircuitCollector:
    """``chimeway_circuit_state``: the circuits as the guard holds them (shared in Redis), read at
    most every 5 s (scrapes must stay cheap)."""

    TTL_SECONDS = 5.0
    _VALUES = {"closed": 0, "half-open": 1, "open": 2}

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            if time.monotonic() - self._read_at >= self.TTL_SECONDS:
                from chimeway.wiring.runtime import current

                self._read_at = time.monotonic()
                try:
                    runtime = current()
                    self._rows = runtime.guard.circuits(runtime.registry.configured())
                except Exception:  # a scrape must never fail because Redis is away
                    logger.warning("circuits not read for metrics", exc_info=True)
            rows = list(self._rows)
        family = GaugeMetricFamily(
            "chimeway_circuit_state", "Adapter circuit: 0 closed, 1 half-open, 2 open.", labels=["adapter"]
        )
        for row in rows:
            family.add_metric([row["adapter"]], self._VALUES[row["state"]])
        yield family


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
