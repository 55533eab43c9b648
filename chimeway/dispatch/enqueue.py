"""Enqueue: the one way Chimeway puts a ``deliver`` message on the broker.

::

    enqueue(delivery_id, *, delay_ms=None, dedupe=True, runtime) -> bool

- ``dedupe=True`` (fresh sends): a second enqueue of the same delivery within
  :data:`DEDUPE_WINDOW_MS` is dropped — ``chimeway.store.setnx`` (Redis ``SET NX PX`` under the runtime's key namespace, or
  an in-memory table under the stub broker). Callers that re-enqueue on purpose (the sweep, a
  policy deferral) pass ``dedupe=False``. Dramatiq's own retries and delayed-queue moves call the
  broker directly and never come here, so dedupe can never drop a legitimate retry; the database
  claim is the real guarantee against double sends either way.
- ``delay_ms``: deliver no earlier than that many milliseconds from now (quiet hours, the sweep, a
  scheduled send); at most :data:`MAX_DELAY_MS` (Dramatiq refuses 7 days): a later time is met by
  the deliver actor, which re-enqueues a deferred delivery whose message came early.
- The message goes to the lane of the row's ``priority`` (``chimeway.dispatch.lanes.LANES``),
  whoever enqueues it: the first send, a retry, a deferral, the sweep.
- Sets the row's ``enqueued_at``. The message gets the actor's Dramatiq retries, which only failures
  that spend no attempt use: the delivery's ``max_attempts`` is enforced by the claim, on the row.
  Returns False when the message was dropped as a duplicate or the delivery does not exist (nothing
  is sent then), True when a message was sent.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from chimeway import db
from chimeway.dispatch.lanes import lane_actor
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.dispatch")

#: Fresh sends of one delivery within this window are dropped as duplicates.
DEDUPE_WINDOW_MS = 60_000

#: Dramatiq refuses a delay of 7 days or more; a longer wait is made of several messages.
MAX_DELAY_MS = 6 * 24 * 3600 * 1000

#: The deliver message's options naming the delivery's own adapter and the adapter its next attempt
#: tries first (failover moves it along the chain): the actor decides with them, before it loads or
#: claims (chimeway.dispatch.resilience).
ADAPTER_OPTION, ROUTE_OPTION = "chimeway_adapter", "chimeway_route"

_MARK_ENQUEUED = "UPDATE chimeway_deliveries SET enqueued_at = %s WHERE id = %s RETURNING priority, adapter"


def enqueue(
    delivery_id: str, *, delay_ms: int | None = None, dedupe: bool = True, runtime: Runtime,
    route: str | None = None,
) -> bool:
    """Send one ``deliver`` message for ``delivery_id``; see the module docstring for the rules.
    ``route``: the adapter the next attempt tries first (default: the delivery's own)."""
    if dedupe and not runtime.setnx.first(_dedupe_key(runtime, delivery_id), DEDUPE_WINDOW_MS / 1000):
        logger.debug("delivery %s: fresh enqueue dropped, one was sent less than 60 s ago", delivery_id)
        return False
    try:
        rows = db.execute(_MARK_ENQUEUED, (db.to_db_time(db.now()), delivery_id)).fetchall()
        if not rows:
            logger.warning("delivery %s: not enqueued, no such delivery", delivery_id)
            return False
        priority, adapter = rows[0]
        _send(runtime, delivery_id, priority, delay_ms, adapter=adapter, route=route)
    except BaseException:
        if dedupe:  # nothing was sent: do not let the dedupe mark block the next attempt
            _forget_quietly(runtime, delivery_id)
        raise
    return True


def _dedupe_key(runtime: Runtime, delivery_id: str) -> str:
    return f"{runtime.settings.redis_namespace}:dedupe:deliver:{delivery_id}"


def enqueue_many(deliveries: list[tuple[str, str, int | None, str]], *, runtime: Runtime) -> None:
    """Send the ``deliver`` messages of many deliveries, given as (id, priority, delay_ms, adapter),
    with one ``enqueued_at`` UPDATE and, on Redis, one pipeline (not a round trip per message): the
    fresh rows of ``send_many`` and the lost rows of a sweep batch. The adapter goes on each message as
    :func:`enqueue` puts it, so the actor can check the guard before it loads and claims in one statement.

    No dedupe mark: ``send_many``'s rows were created by the transaction that just committed, so
    nothing else has enqueued them (the sweep waits for ``CHIMEWAY_SWEEP_STALL_SECONDS``), and the
    sweep re-enqueues on purpose."""
    if not deliveries:
        return
    ids = [delivery_id for delivery_id, _, _, _ in deliveries]
    marks = ", ".join(["%s"] * len(ids))
    db.execute(
        f"UPDATE chimeway_deliveries SET enqueued_at = %s WHERE id IN ({marks})", (db.to_db_time(db.now()), *ids)
    )
    with _pipelined(runtime.broker):
        for delivery_id, priority, delay_ms, adapter in deliveries:
            _send(runtime, delivery_id, priority, delay_ms, adapter=adapter)


def _send(
    runtime: Runtime, delivery_id: str, priority: str, delay_ms: int | None, *, adapter: str | None = None,
    route: str | None = None,
) -> None:
    delay = None if delay_ms is None else min(MAX_DELAY_MS, max(0, int(delay_ms)))
    # Without the adapter options the actor checks limits and circuits after loading, before the claim.
    options = {ADAPTER_OPTION: adapter, ROUTE_OPTION: route or adapter} if adapter else {}
    lane_actor(runtime.actors, priority).send_with_options(args=(delivery_id,), delay=delay, **options)


def _pipelined(broker: Any) -> Any:
    """The broker's batching context (``chimeway.dispatch.broker.RedisBroker.pipelined``), or nothing."""
    batching = getattr(broker, "pipelined", None)
    return batching() if batching is not None else contextlib.nullcontext()


def _forget_quietly(runtime: Runtime, delivery_id: str) -> None:
    try:
        runtime.setnx.forget(_dedupe_key(runtime, delivery_id))
    except Exception:  # the broker is down too, most likely; the mark expires on its own
        logger.debug("delivery %s: could not clear the dedupe mark", delivery_id, exc_info=True)
