"""Ingest: one verified, parsed webhook request stored in one transaction.

raw webhook row (a replay stops here) → ledger events, linked to their delivery or stored as orphans
→ projection of the linked deliveries → suppression entries for hard bounces and complaints →
commit → broadcast. Only the events this request actually added are projected, suppressed and
broadcast, so a replayed or overlapping request changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import peewee

from chimeway import db as dbmod
from chimeway.webhooks import feedback, ledger
from chimeway.webhooks.feedback import Publish
from chimeway.webhooks.providers.base import Parsed, WebhookRequest


@dataclass(frozen=True)
class IngestResult:
    duplicate: bool  #: the request was stored before: nothing changed
    stored: int = 0  #: ledger events added
    linked: int = 0  #: of which matched a delivery
    orphans: int = 0  #: of which await reconciliation
    suppressed: int = 0  #: suppression entries added


@dataclass(frozen=True)
class _Target:
    delivery_id: str
    recipient: str
    channel: str
    lock_version: int


def ingest(
    provider: str,
    tenant_id: str,
    request: WebhookRequest,
    parsed: Parsed,
    database: peewee.Database,
    publish: Publish,
) -> IngestResult:
    with dbmod.transaction(database):
        raw_id = ledger.insert_raw(
            database,
            tenant_id=tenant_id,
            provider=provider,
            request_id=parsed.request_id,
            body=request.body,
            received_at=request.received_at,
        )
        if raw_id is None:
            return IngestResult(duplicate=True)
        echoed = find_deliveries_by_id(database, tenant_id, provider, [e.delivery_id for e in parsed.events])
        # By message id only what the echoed ids did not link: no second lookup when every event echoed one.
        unlinked = [e.message_id for e in parsed.events if e.delivery_id not in echoed]
        targets = find_deliveries(database, tenant_id, provider, unlinked)
        rows = []
        for index, event in enumerate(parsed.events):
            # The delivery id the provider echoed back is the surest link; then the provider message id.
            target = echoed.get(event.delivery_id) or (targets.get(event.message_id) if event.message_id else None)  # type: ignore[arg-type]
            key = ledger.idempotency_key(provider, event.event_id, 0) if event.event_id else (
                ledger.idempotency_key(provider, parsed.request_id, index)
            )
            rows.append(
                ledger.LedgerEvent(
                    tenant_id=tenant_id,
                    type=event.type.value,
                    provider=provider,
                    occurred_at=event.occurred_at,
                    received_at=request.received_at,
                    idempotency_key=key,
                    delivery_id=target.delivery_id if target else None,
                    reject_reason=event.reject_reason.value if event.reject_reason else None,
                    provider_message_id=event.message_id,
                    provider_event_id=event.event_id or parsed.request_id,
                    # Without a message id nothing can ever match: not an orphan, just a fact.
                    needs_reconciliation=target is None and event.message_id is not None,
                    metadata=event.metadata,
                    webhook_event_id=raw_id,
                )
            )
        stored_ids = ledger.append(database, rows)
        new = [row for row in rows if row.id in stored_ids]
        linked = [row for row in new if row.delivery_id]
        by_id = {target.delivery_id: target for target in (*targets.values(), *echoed.values())}
        suppressed = feedback.apply(
            database,
            [
                feedback.Feedback(
                    tenant_id, row.delivery_id, by_id[row.delivery_id].recipient, by_id[row.delivery_id].channel,
                    row.type, row.reject_reason, row.occurred_at, provider, by_id[row.delivery_id].lock_version,
                )  # type: ignore[arg-type]
                for row in linked
            ],
            publish,
        )
    return IngestResult(
        duplicate=False,
        stored=len(new),
        linked=len(linked),
        orphans=sum(1 for row in new if row.needs_reconciliation),
        suppressed=suppressed,
    )


def find_deliveries(
    database: peewee.Database, tenant_id: str, provider: str, message_ids: Sequence[str | None]
) -> dict[str, _Target]:
    """Deliveries of this tenant by provider message id: the same matching key reconcile uses."""
    return _targets(database, tenant_id, provider, "provider_message_id", message_ids)


def find_deliveries_by_id(
    database: peewee.Database, tenant_id: str, provider: str, delivery_ids: Sequence[str | None]
) -> dict[str, _Target]:
    """Deliveries of this tenant sent through this provider, by id (ids the provider echoed back)."""
    return _targets(database, tenant_id, provider, "id", delivery_ids)


def _targets(
    database: peewee.Database, tenant_id: str, provider: str, column: str, keys: Sequence[str | None]
) -> dict[str, _Target]:
    wanted = sorted({key for key in keys if key})
    if not wanted:
        return {}
    rows = dbmod.execute(
        f"SELECT CAST({column} AS text), CAST(id AS text), recipient, channel, lock_version FROM chimeway_deliveries "
        f"WHERE tenant_id = %s AND provider = %s AND {column} IN ({', '.join(['%s'] * len(wanted))})",
        [tenant_id, provider, *wanted],
        db=database,
    ).fetchall()
    return {row[0]: _Target(str(row[1]), row[2], row[3], row[4]) for row in rows}
