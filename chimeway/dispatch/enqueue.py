"""Enqueue: the one way Chimeway puts a ``deliver`` message on the broker.

::

    enqueue(delivery_id, *, delay_ms=None, dedupe=True, runtime=None) -> bool

- ``dedupe=True`` (fresh sends): a second enqueue of the same delivery within
  :data:`DEDUPE_WINDOW_MS` is dropped — Redis ``SET NX PX`` under the runtime's key namespace, or
  an in-memory table under the stub broker. Callers that re-enqueue on purpose (the sweep, a
  policy deferral) pass ``dedupe=False``. Dramatiq's own retries and delayed-queue moves call the
  broker directly and never come here, so dedupe can never drop a legitimate retry; the database
  claim is the real guarantee against double sends either way.
- ``delay_ms``: deliver no earlier than that many milliseconds from now (quiet hours, the sweep).
- Sets the row's ``enqueued_at``. The message gets the actor's Dramatiq retries, which only failures
  that spend no attempt use: the delivery's ``max_attempts`` is enforced by the claim, on the row.
  Returns False when the message was dropped as a duplicate or the delivery does not exist (nothing
  is sent then), True when a message was sent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from chimeway import db

logger = logging.getLogger("chimeway.dispatch")

#: Fresh sends of one delivery within this window are dropped as duplicates.
DEDUPE_WINDOW_MS = 60_000

_MARK_ENQUEUED = "UPDATE chimeway_deliveries SET enqueued_at = %s WHERE id = %s RETURNING adapter"

#: The deliver message's options naming the delivery's own adapter and the adapter its next attempt
#: tries first (failover moves it along the chain): the actor decides with them, before it loads or
#: claims (chimeway.dispatch.resilience).
ADAPTER_OPTION, ROUTE_OPTION = "chimeway_adapter", "chimeway_route"


class RedisDedupe:
    """Fresh-send dedupe shared by every process that uses the same Redis and namespace."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _key(self, delivery_id: str) -> str:
        return f"{self.namespace}:dedupe:deliver:{delivery_id}"

    def first(self, delivery_id: str) -> bool:
        return bool(self.client.set(self._key(delivery_id), b"1", nx=True, px=DEDUPE_WINDOW_MS))

    def forget(self, delivery_id: str) -> None:
        self.client.delete(self._key(delivery_id))


class MemoryDedupe:
    """The same, in this process only: the stub broker has no other processes to agree with."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def first(self, delivery_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._until.get(delivery_id, 0.0) > now:
                return False
            if len(self._until) > 10_000:  # keep the table small: drop what has expired
                self._until = {key: until for key, until in self._until.items() if until > now}
            self._until[delivery_id] = now + DEDUPE_WINDOW_MS / 1000
            return True

    def forget(self, delivery_id: str) -> None:
        with self._lock:
            self._until.pop(delivery_id, None)


def enqueue(
    delivery_id: str, *, delay_ms: int | None = None, dedupe: bool = True, runtime: Any = None,
    route: str | None = None,
) -> bool:
    """Send one ``deliver`` message for ``delivery_id``; see the module docstring for the rules.
    ``route``: the adapter the next attempt tries first (default: the delivery's own)."""
    if runtime is None:
        from chimeway.runtime import current

        runtime = current()
    if dedupe and not runtime.dedupe.first(delivery_id):
        logger.debug("delivery %s: fresh enqueue dropped, one was sent less than 60 s ago", delivery_id)
        return False
    try:
        rows = db.execute(_MARK_ENQUEUED, (db.to_db_time(db.now()), delivery_id)).fetchall()
        if not rows:
            logger.warning("delivery %s: not enqueued, no such delivery", delivery_id)
            return False
        delay = None if delay_ms is None else max(0, int(delay_ms))
        adapter = rows[0][0]
        options = {ADAPTER_OPTION: adapter, ROUTE_OPTION: route or adapter}
        runtime.actors["deliver"].send_with_options(args=(delivery_id,), delay=delay, **options)
    except BaseException:
        if dedupe:  # nothing was sent: do not let the dedupe mark block the next attempt
            _forget_quietly(runtime, delivery_id)
        raise
    return True


def _forget_quietly(runtime: Any, delivery_id: str) -> None:
    try:
        runtime.dedupe.forget(delivery_id)
    except Exception:  # the broker is down too, most likely; the mark expires on its own
        logger.debug("delivery %s: could not clear the dedupe mark", delivery_id, exc_info=True)
