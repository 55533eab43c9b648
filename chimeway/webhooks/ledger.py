"""The append-only event ledger and the raw webhook rows, written with hand-made SQL.

Idempotency lives in unique keys, never in a read-then-write:

- a raw request is stored once per (provider, request id, tenant) — the provider's id for the
  request, else a hash of the body — and a second copy finds the row already there (a replay:
  nothing changes);
- a ledger event is stored once per tenant and idempotency key ``<provider>:<event id>:<index>``:
  the event's own provider id when it has one (index 0), else the request id and the event's
  position in it. Tenants share providers, and a provider's ids are unique only within one account:
  scoped by tenant, one tenant's event can never stand in for another's;
- a reconciliation is stored once per ``reconciled:<orphan id>``, however many reconcilers race.

On PostgreSQL the ledger is partitioned by month and the keys live in ``chimeway_event_keys``, claimed
by a trigger as each event is inserted (migration 0009): the statements here are the same on both
dialects, and a taken key stores nothing either way.

Every insert is set-based and ``ON CONFLICT DO NOTHING … RETURNING id``, so the caller learns exactly
which rows are new and projects, suppresses and broadcasts only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import peewee

from chimeway import db as dbmod
from chimeway.models import new_id
from chimeway.webhooks import recordset


def idempotency_key(provider: str, event_id: str, index: int = 0) -> str:
    return f"{provider}:{event_id}:{index}"


def keys_table(database: peewee.Database | None = None) -> str:
    """Where the ledger's idempotency keys are unique (columns idempotency_key, tenant_id): the
    ledger itself on SQLite; on PostgreSQL, whose ledger is partitioned, chimeway_event_keys (0009)."""
    return "chimeway_event_keys" if dbmod.is_postgres(database) else "chimeway_events"


def reconciled_key_sql(orphan: str) -> str:
    """SQL for ``reconciled:<orphan id>`` of the orphan row aliased ``orphan``: the one place it is spelled."""
    return f"'reconciled:' || CAST({orphan}.id AS text)"


@dataclass
class LedgerEvent:
    tenant_id: str
    type: str
    provider: str
    occurred_at: datetime
    received_at: datetime
    idempotency_key: str
    delivery_id: str | None = None
    reject_reason: str | None = None
    provider_message_id: str | None = None
    provider_event_id: str | None = None
    needs_reconciliation: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_event_id: str | None = None
    id: str = field(default_factory=new_id)


#: Ledger columns and their PostgreSQL types, in insert order.
_EVENT_COLUMNS = {
    "id": "uuid", "tenant_id": "text", "delivery_id": "uuid", "type": "text", "reject_reason": "text",
    "provider": "text", "provider_message_id": "text", "provider_event_id": "text",
    "occurred_at": "timestamptz", "received_at": "timestamptz", "needs_reconciliation": "boolean",
    "idempotency_key": "text", "metadata": "jsonb", "webhook_event_id": "uuid",
}  # fmt: skip


def insert_raw(
    database: peewee.Database,
    *,
    tenant_id: str,
    provider: str,
    request_id: str,
    body: bytes,
    received_at: datetime,
    status: str = "processed",
) -> str | None:
    """Store the verified request; its id, or None when this request was stored before (a replay).

    ``status="failed"`` keeps an authentic request whose events could not be stored: its bytes are
    kept as they came (bytea / blob store any byte), retrievable by provider and request id."""
    raw_id = new_id()
    at = dbmod.to_db_time(received_at, database)
    row = dbmod.execute(
        "INSERT INTO chimeway_webhook_events "
        "(id, tenant_id, provider, provider_event_id, body, status, received_at, processed_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (provider, provider_event_id, tenant_id) DO NOTHING RETURNING id",
        (raw_id, tenant_id, provider, request_id, body, status, at, at),
        db=database,
    ).fetchone()
    return None if row is None else raw_id


def append(database: peewee.Database, events: Sequence[LedgerEvent]) -> set[str]:
    """Append events; the ids of those actually stored (a known idempotency key stores nothing)."""
    if not events:
        return set()
    names = ", ".join(_EVENT_COLUMNS)
    cursor = dbmod.execute(
        f"INSERT INTO chimeway_events ({names}) SELECT {names} "
        f"FROM {recordset.relation(database, _EVENT_COLUMNS)} WHERE true ON CONFLICT DO NOTHING "
        "RETURNING CAST(id AS text)",
        (recordset.encode(_row(event, database) for event in events),),
        db=database,
    )
    return {str(row[0]) for row in cursor.fetchall()}


def append_reconciled(database: peewee.Database, links: Sequence[tuple[str, str, str]], at: datetime) -> set[str]:
    """Append one ``reconciled`` event per (new id, orphan id, delivery id); the ids actually stored.

    Set-based: only the three ids travel; every other column is read from the orphan in the same
    INSERT … SELECT … JOIN, so linking tens of thousands of orphans is one statement.
    """
    if not links:
        return set()
    ids = recordset.relation(database, {"id": "uuid", "orphan_id": "uuid", "delivery_id": "uuid"})
    cursor = dbmod.execute(
        reconciled_insert_sql(
            database,
            source=f"{ids} JOIN chimeway_events o ON o.id = v.orphan_id",
            new_id="v.id",
            delivery_id="v.delivery_id",
            returning="CAST(id AS text)",
        ),
        (
            recordset.timestamp(at, database),
            recordset.timestamp(at, database),
            recordset.encode({"id": new, "orphan_id": orphan, "delivery_id": delivery} for new, orphan, delivery in links),
        ),
        db=database,
    )
    return {str(row[0]) for row in cursor.fetchall()}


def reconciled_insert_sql(
    database: peewee.Database, *, source: str, new_id: str, delivery_id: str, returning: str
) -> str:
    """The INSERT of ``reconciled`` events: one per orphan row aliased ``o`` in ``source``, its new
    id and delivery read from the SQL expressions given. Two placeholders: occurred_at, received_at.
    :func:`append_reconciled` and the reconciler's one-statement PostgreSQL pipeline both use it."""
    metadata = "jsonb_build_object" if dbmod.is_postgres(database) else "json_object"
    return (
        "INSERT INTO chimeway_events (id, tenant_id, delivery_id, type, provider, provider_message_id, occurred_at, "
        "received_at, needs_reconciliation, idempotency_key, metadata, webhook_event_id) "
        f"SELECT {new_id}, o.tenant_id, {delivery_id}, 'reconciled', o.provider, o.provider_message_id, %s, %s, "
        f"false, {reconciled_key_sql('o')}, {metadata}('orphan_id', o.id, 'orphan_type', o.type), "
        f"o.webhook_event_id FROM {source} "
        # One key order for every reconciler, so two racing on the same orphans queue, never deadlock.
        f"WHERE true ORDER BY o.id ON CONFLICT DO NOTHING RETURNING {returning}"
    )


def _row(event: LedgerEvent, database: peewee.Database) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in _EVENT_COLUMNS}
    row["occurred_at"] = recordset.timestamp(event.occurred_at, database)
    row["received_at"] = recordset.timestamp(event.received_at, database)
    return row
