"""Bulk sends: many deliveries with one INSERT per chunk, enqueued together after the commit.

``send_many`` is :func:`chimeway.dispatch.send.send` for a list: every item is checked exactly as
``send()`` checks its arguments (``send.prepare``), the rows are written with one multi-row INSERT
per :data:`CHUNK` items inside the caller's transaction (or one of its own), and the messages of the
new deliveries go out after the outermost commit, on Redis in one pipeline per :data:`CHUNK`
instead of one round trip each. The guarantees are send()'s: durable rows, after-commit enqueue,
the sweep for what the enqueue misses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from chimeway import db
from chimeway.dispatch.send import delay_until, prepare
from chimeway.errors import IdempotencyConflictError, InvalidSendError
from chimeway.models import Delivery
from chimeway.store import deliveries
from chimeway.wiring.runtime_type import Runtime

logger = logging.getLogger("chimeway.dispatch")

#: Items per INSERT, and messages per Redis pipeline. 1,000 rows of 21 values stay under SQLite's
#: 32,766 parameters per statement; larger chunks save nothing measurable on PostgreSQL.
CHUNK = 1000

#: What an item may hold: send()'s keywords.
_KEYWORDS = frozenset({
    "channel", "recipient", "payload", "adapter", "tenant_id", "notification_id", "idempotency_key",
    "max_attempts", "delay_fallback", "metadata", "category", "priority", "send_at", "delay",
})


def send_many(
    items: Iterable[Mapping[str, Any]], *, tenant_id: str | None = None, runtime: Runtime
) -> list[Delivery]:
    """Record many deliveries and have workers perform them; the deliveries in the order of ``items``.

    Each item is a dict of :func:`chimeway.send`'s keywords (``channel``, ``recipient`` and
    ``payload``, and any optional one: ``priority``, ``send_at``, ``delay``, ``idempotency_key`` …).
    ``tenant_id`` applies to the items that name none. Every item is checked first, as ``send()``
    checks its arguments: one bad item refuses the whole call with
    :class:`~chimeway.errors.InvalidSendError` whose message starts with ``items[<index>]`` (also
    its ``index``), and nothing is stored.

    Idempotency keys work as in ``send()``: a key already used returns the existing delivery (and
    enqueues nothing), a key used twice in ``items`` makes one delivery, and a key reused for another
    send raises :class:`~chimeway.errors.IdempotencyConflictError` (nothing stored). Inside an open
    transaction the rows join it and the messages go out after the outermost commit; a rollback
    stores and sends nothing.
    """
    rows = [_check(runtime, index, item, tenant_id) for index, item in enumerate(items)]
    results: list[tuple[Delivery, bool]] = []
    with db.transaction(runtime.database):
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            try:
                results += deliveries.create_many(chunk)
            except IdempotencyConflictError as err:  # create_many noted the row; name the item
                raise err.at_item(start + (err.index or 0)) from None
    fresh = [delivery for delivery, created in results if created]
    if fresh:
        runtime.database.after_commit(lambda: _enqueue_after_commit(runtime, fresh))
    return [delivery for delivery, _ in results]


def _check(runtime: Runtime, index: int, item: Any, tenant_id: str | None) -> deliveries.NewDelivery:
    """The item's row, or InvalidSendError naming ``items[index]``."""
    try:
        if not isinstance(item, Mapping):
            raise InvalidSendError("item", f"must be a dict of send()'s keywords, not {type(item).__name__}")
        unknown = sorted(str(name) for name in item if name not in _KEYWORDS)
        if unknown:
            raise InvalidSendError(unknown[0], f"is not a keyword of send() (known: {', '.join(sorted(_KEYWORDS))})")
        for required in ("channel", "recipient"):
            if required not in item:
                raise InvalidSendError(required, "is required")
        fields = dict(item)
        if tenant_id is not None:
            fields.setdefault("tenant_id", tenant_id)
        return prepare(runtime, **fields)
    except InvalidSendError as err:
        raise err.at_item(index) from None


def _enqueue_after_commit(runtime: Runtime, fresh: list[Delivery]) -> None:
    # As send(): after the commit nothing can be undone, and the sweep sends what is not enqueued here.
    from chimeway.dispatch.enqueue import enqueue_many

    for start in range(0, len(fresh), CHUNK):
        chunk = fresh[start:start + CHUNK]
        try:
            enqueue_many([(d.id, d.priority, delay_until(d.next_eligible_at), d.adapter) for d in chunk],
                         runtime=runtime)
        except Exception:
            logger.warning("send_many: %d deliveries committed but not enqueued; the sweep will send them",
                           len(chunk), exc_info=True)
