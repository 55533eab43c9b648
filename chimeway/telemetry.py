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

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def span(event: str, **metadata: Any) -> Iterator[dict[str, Any]]:
    """Emit start, then stop or exception with the duration. Add to the yielded dict to report results."""
    emit(event, "start", **metadata)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        yield extra
    except BaseException as err:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        emit(event, "exception", **metadata, **extra, duration_ms=elapsed, error=type(err).__name__)
        raise
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    emit(event, "stop", **metadata, **extra, duration_ms=elapsed)
