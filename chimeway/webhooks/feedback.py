"""Feedback now linked to a delivery — at ingest, or later by reconcile — applied the same way:
projection, suppression entries for hard bounces and complaints, and a broadcast after commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee

from chimeway.store.pubsub import Broadcast
from chimeway.webhooks import projection, suppression_entries

#: Sends broadcasts (after commit): ``pubsub.publish`` bound to a runtime, or the reconciler's thread.
Publish = Callable[[list[Broadcast]], Any]


@dataclass(frozen=True)
class Feedback:
    tenant_id: str
    delivery_id: str
    recipient: str
    channel: str
    type: str
    reject_reason: str | None
    occurred_at: datetime
    provider: str
    lock_version: int = 0  #: the delivery's version when its row was read, for the optimistic lock


def apply(database: peewee.Database, items: Sequence[Feedback], publish: Publish) -> int:
    """Apply inside the caller's transaction; how many suppression entries were added. The broadcasts
    are handed to ``publish`` after commit (``pubsub.publish`` with the caller's runtime)."""
    if not items:
        return 0
    projection.apply(
        database, [projection.Fact(item.delivery_id, item.type, item.occurred_at, item.lock_version) for item in items]
    )
    return announce(database, items, publish)


def announce(database: peewee.Database, items: Sequence[Feedback], publish: Publish) -> int:
    """The rest of :func:`apply`, for feedback whose projection the caller's own SQL already wrote:
    suppression entries now, broadcasts handed to ``publish`` after commit (now, outside a
    transaction; a rollback publishes nothing). How many suppression entries were added."""
    entries, broadcasts = [], []
    for item in items:
        reason = suppression_entries.reason_for(item.type, item.reject_reason)
        if reason is not None:
            entries.append(
                suppression_entries.Entry(item.tenant_id, item.channel, item.recipient, reason, f"webhook:{item.provider}")
            )
        broadcasts.append(Broadcast(item.tenant_id, item.delivery_id, item.type, item.occurred_at))
    added = suppression_entries.add_entries(database, entries)
    if broadcasts:
        database.after_commit(lambda: publish(broadcasts))
    return added
