"""Send: record a delivery in the caller's transaction and enqueue it after the outermost commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chimeway import db
from chimeway.errors import InvalidSendError
from chimeway.models import Delivery
from chimeway.states import Priority
from chimeway.store import deliveries
from chimeway.wiring.config import MAX_ATTEMPTS_LIMIT
from chimeway.wiring.runtime_type import Runtime

#: The lanes, as send() accepts them.
PRIORITIES = tuple(lane.value for lane in Priority)

logger = logging.getLogger("chimeway.dispatch")


def send(
    channel: str,
    recipient: str,
    payload: Mapping[str, Any] | None = None,
    *,
    adapter: str | None = None,
    tenant_id: str = "default",
    notification_id: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    delay_fallback: bool = False,
    metadata: Mapping[str, Any] | None = None,
    category: str | None = None,
    priority: str = "normal",
    send_at: datetime | None = None,
    delay: timedelta | None = None,
    runtime: Runtime,
) -> Delivery:
    """Record one delivery (pending) and have a worker perform it.

    Inside an open transaction (``with chimeway.database.atomic(): ...``) the row is written in that
    transaction and the message is enqueued only after the outermost commit; a rollback enqueues
    nothing. Outside a transaction the row is committed and enqueued at once.

    ``priority`` ("high", "normal", "bulk") picks the lane: a worker takes a waiting high delivery
    before any other. ``send_at`` (an aware datetime) or ``delay`` (a timedelta from now) schedules
    it: it is not attempted before that time, and :func:`chimeway.cancel` works until then.

    A second send with the same ``idempotency_key`` (per tenant) and the same parameters, or the same
    ``notification_id`` and ``channel``, returns the first delivery and enqueues nothing; the key
    reused with another channel, recipient, adapter, payload or notification raises
    :class:`~chimeway.errors.IdempotencyConflictError`.

    What cannot be delivered is refused with :class:`~chimeway.errors.InvalidSendError` naming the
    argument, and nothing is stored: a blank channel, recipient or tenant; a payload or metadata that
    is not a JSON object, holds what JSON cannot represent (NaN, Infinity, objects) or is over
    ``CHIMEWAY_MAX_PAYLOAD_BYTES`` as JSON; ``max_attempts`` outside 1..100; a notification id that
    is not a UUID; an unknown priority; a naive ``send_at``, a negative ``delay``, or both.
    """
    row = prepare(
        runtime, channel=channel, recipient=recipient, payload=payload, adapter=adapter, tenant_id=tenant_id,
        notification_id=notification_id, idempotency_key=idempotency_key, max_attempts=max_attempts,
        delay_fallback=delay_fallback, metadata=metadata, category=category, priority=priority,
        send_at=send_at, delay=delay,
    )
    delivery, created = deliveries.insert(row)
    if created:
        runtime.database.after_commit(lambda: _enqueue_after_commit(runtime, delivery))
    else:
        logger.info("send: delivery %s already exists for this key; nothing enqueued", delivery.id)
    return delivery


def prepare(
    runtime: Runtime,
    *,
    channel: str,
    recipient: str,
    payload: Mapping[str, Any] | None = None,
    adapter: str | None = None,
    tenant_id: str = "default",
    notification_id: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    delay_fallback: bool = False,
    metadata: Mapping[str, Any] | None = None,
    category: str | None = None,
    priority: str = "normal",
    send_at: datetime | None = None,
    delay: timedelta | None = None,
) -> deliveries.NewDelivery:
    """Check one send's arguments as :func:`send` documents (InvalidSendError naming the argument) and
    give the row to insert; nothing is written. :func:`chimeway.send_many` checks every item with it."""
    for argument, value in (("channel", channel), ("recipient", recipient), ("tenant_id", tenant_id)):
        _check_text(argument, value)
    if idempotency_key is not None:
        _check_text("idempotency_key", idempotency_key)
    if priority not in PRIORITIES:
        raise InvalidSendError("priority", f"must be one of {', '.join(PRIORITIES)}")
    chosen = runtime.registry.resolve(adapter, channel)
    return deliveries.new(
        channel=channel,
        recipient=recipient,
        adapter=chosen,
        payload={} if payload is None else payload,
        metadata={} if metadata is None else metadata,
        tenant_id=tenant_id,
        notification_id=None if notification_id is None else _uuid("notification_id", notification_id),
        idempotency_key=idempotency_key,
        max_attempts=runtime.settings.max_attempts if max_attempts is None else _budget(max_attempts),
        delay_fallback=delay_fallback,
        category=category,
        max_json_bytes=runtime.settings.max_payload_bytes,
        priority=str(priority),
        send_at=_send_time(send_at, delay),
    )


def _send_time(send_at: Any, delay: Any) -> datetime | None:
    """When a scheduled send is due (UTC), or None for at once."""
    if send_at is not None and delay is not None:
        raise InvalidSendError("send_at", "give send_at or delay, not both")
    if delay is not None:
        if not isinstance(delay, timedelta):
            raise InvalidSendError("delay", f"must be a datetime.timedelta, not {type(delay).__name__}")
        if delay < timedelta(0):
            raise InvalidSendError("delay", "must not be negative")
        return db.now() + delay
    if send_at is None:
        return None
    if not isinstance(send_at, datetime):
        raise InvalidSendError("send_at", f"must be a datetime.datetime, not {type(send_at).__name__}")
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        # Whose local time a naive datetime means is a guess; a wrong guess sends hours off.
        raise InvalidSendError("send_at", "must be timezone-aware (a naive datetime is ambiguous)")
    return send_at.astimezone(UTC)


def _check_text(argument: str, value: Any) -> None:
    # The value is never quoted: a recipient is personal data, and errors end up in logs.
    if not isinstance(value, str):
        raise InvalidSendError(argument, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidSendError(argument, "must not be empty or blank")
    if not db.storable_text(value):
        raise InvalidSendError(argument, "must not hold a NUL character or an unpaired surrogate")


def _uuid(argument: str, value: Any) -> str:
    """The canonical form (lower-case, hyphenated) that both dialects store and compare alike."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise InvalidSendError(argument, "must be a UUID") from None


def _budget(max_attempts: Any) -> int:
    if isinstance(max_attempts, int) and not isinstance(max_attempts, bool):
        if 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
            return max_attempts
        shown = f", not {max_attempts}"
    else:
        shown = f", not a {type(max_attempts).__name__}"
    raise InvalidSendError("max_attempts", f"must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}{shown}")


def _enqueue_after_commit(runtime: Runtime, delivery: Delivery, *, dedupe: bool = True) -> None:
    # Peewee runs this after the commit; raising here would lose the other callbacks of the same
    # commit and cannot undo it. The row is durable, so the sweep sends it when this fails.
    from chimeway.dispatch.enqueue import enqueue

    try:
        enqueue(delivery.id, delay_ms=delay_until(delivery.next_eligible_at), runtime=runtime, dedupe=dedupe)
    except Exception:
        logger.warning(
            "delivery %s: committed but not enqueued; the sweep will send it", delivery.id, exc_info=True
        )


def delay_until(when: datetime | None) -> int | None:
    """A message's delay (ms) for a delivery not to be attempted before ``when`` (None: at once)."""
    if when is None:
        return None
    return max(0, int((when - db.now()).total_seconds() * 1000))
