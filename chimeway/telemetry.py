"""Telemetry hooks: start / stop / exception events around Chimeway's units of work.

Attach a handler to observe them (metrics, tracing)::

    def handler(event: str, phase: str, metadata: dict) -> None: ...
    chimeway.telemetry.attach(handler)

Spans — phases ``start``, ``stop`` (with ``duration_ms``) and ``exception`` (with ``duration_ms``
and ``error``, the exception's class name, never its message): ``perform`` (one deliver message),
``attempt_record``, ``ingest`` (one webhook request), ``reconcile``, ``sweep``.

Point events: ``adapter_call``/``stop`` (one adapter call: adapter, attempt, outcome, error_class,
duration_ms), ``unhandled_outcome``/``stop`` (an outcome no documented case handles), and
``delivery``/``terminal`` (a delivery reached a terminal state: status and reason).

Metadata passes a whitelist: only the keys in :data:`ALLOWED_KEYS` reach a handler. Recipients,
addresses, payloads, bodies, headers, IPs and secrets are never among them, whatever a caller
passes. A handler that raises is logged and ignored: telemetry never breaks a delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("chimeway.telemetry")

#: The only metadata keys a handler ever sees.
ALLOWED_KEYS = frozenset(
    {
        "delivery_id",
        "tenant_id",
        "channel",
        "adapter",
        "provider",
        "attempt",
        "max_attempts",
        "outcome",
        "error_class",
        "status",
        "reason",
        "event_type",
        "event_count",
        "http_status",
        "scanned",
        "linked",
        "reenqueued",
        "duplicate",
        "duration_ms",
        "error",
    }
)

Handler = Callable[[str, str, dict[str, Any]], None]
_handlers: list[Handler] = []
_lock = threading.Lock()


def attach(handler: Handler) -> None:
    with _lock:
        if handler not in _handlers:
            _handlers.append(handler)


def detach(handler: Handler) -> None:
    with _lock:
        if handler in _handlers:
            _handlers.remove(handler)


def scrub(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key in ALLOWED_KEYS}


def emit(event: str, phase: str, **metadata: Any) -> None:
    if not _handlers:
        return
    clean = scrub(metadata)
    for handler in list(_handlers):
        try:
            handler(event, phase, dict(clean))
        except Exception:
            logger.exception("telemetry handler %r failed on %s.%s", handler, event, phase)


class span:  # noqa: N801 - used like a function: ``with telemetry.span("perform", ...) as report:``
    """Emit start, then stop or exception with the duration. Add to the yielded dict to report results.

    A class, not a generator: it wraps every message and every attempt record, and when no handler
    is attached it costs no more than building the dict.
    """

    __slots__ = ("event", "extra", "metadata", "started")

    def __init__(self, event: str, **metadata: Any) -> None:
        self.event = event
        self.metadata = metadata
        self.extra: dict[str, Any] = {}
        self.started = 0.0

    def __enter__(self) -> dict[str, Any]:
        if _handlers:
            emit(self.event, "start", **self.metadata)
            self.started = time.perf_counter()
        return self.extra

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        if not _handlers:
            return
        elapsed = round((time.perf_counter() - self.started) * 1000, 3) if self.started else 0.0
        if err is None:
            emit(self.event, "stop", **self.metadata, **self.extra, duration_ms=elapsed)
        else:
            emit(self.event, "exception", **self.metadata, **self.extra, duration_ms=elapsed, error=type(err).__name__)
