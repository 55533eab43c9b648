"""Send: record a delivery in the caller's transaction and enqueue it after the outermost commit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from chimeway import deliveries
from chimeway.errors import ConfigurationError
from chimeway.models import Delivery, new_id

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
) -> Delivery:
    """Record one delivery (pending) and have a worker perform it.

    Inside an open transaction (``with chimeway.database.atomic(): ...``) the row is written in that
    transaction and the message is enqueued only after the outermost commit; a rollback enqueues
    nothing. Outside a transaction the row is committed and enqueued at once.

    A second send with the same ``idempotency_key`` (per tenant), or the same ``notification_id``
    and ``channel``, returns the first delivery and enqueues nothing.
    """
    from chimeway.runtime import current

    runtime = current()
    chosen = runtime.registry.resolve(adapter, channel)
    budget = runtime.settings.max_attempts if max_attempts is None else int(max_attempts)
    if budget < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, not {max_attempts!r}")
    delivery, created = deliveries.create(
        channel=channel,
        recipient=recipient,
        adapter=chosen,
        payload=dict(payload or {}),
        metadata=dict(metadata or {}),
        tenant_id=tenant_id,
        notification_id=str(notification_id) if notification_id is not None else new_id(),
        idempotency_key=idempotency_key,
        max_attempts=budget,
        delay_fallback=delay_fallback,
        category=category,
    )
    if created:
        runtime.database.after_commit(lambda: _enqueue_after_commit(runtime, delivery.id))
    else:
        logger.info("send: delivery %s already exists for this key; nothing enqueued", delivery.id)
    return delivery


def _enqueue_after_commit(runtime: Any, delivery_id: str) -> None:
    # Peewee runs this after the commit; raising here would lose the other callbacks of the same
    # commit and cannot undo it. The row is durable, so the sweep sends it when this fails.
    from chimeway.dispatch.enqueue import enqueue

    try:
        enqueue(delivery_id, runtime=runtime)
    except Exception:
        logger.warning(
            "delivery %s: committed but not enqueued; the sweep will send it", delivery_id, exc_info=True
        )
