"""The console's read model: indexed, read-only queries, each scoped to a tenant when the console is.

Actions never come here: they call the library's own API (``chimeway.redrive``, the operator
cancel). The deliveries list pages by keyset on (created_at, id), newest first, over the index
migration 0006 adds, so a page costs the same on page 1 and page 10,000; a recipient search walks
the (tenant_id, recipient, created_at) index once per tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from chimeway import db
from chimeway.models import Delivery
from chimeway.ops import status as status_queries
from chimeway.states import TERMINAL, TERMINAL_SQL
from chimeway.wiring.runtime_type import Runtime

#: Rows per page of the deliveries list.
PAGE_SIZE = 50

#: The list's filters (exact match), by query parameter.
FILTERS = ("status", "reason", "channel", "adapter", "tenant")

#: What a search may look in: query parameter value -> column. Recipient first: the usual question.
SEARCH_FIELDS = {
    "recipient": "recipient",
    "notification": "notification_id",
    "key": "idempotency_key",
    "message": "provider_message_id",
}

_UUID_COLUMNS = {"notification_id"}


@dataclass(frozen=True)
class Page:
    rows: list[Delivery]
    next_cursor: str | None  #: "<created_at iso>|<id>" of the last row, when there is a next page


def deliveries(
    *, tenant: str | None, filters: dict[str, str], field: str | None = None, query: str | None = None,
    cursor: str | None = None, limit: int = PAGE_SIZE,
) -> Page:
    """One page of deliveries, newest first; ``cursor`` is the previous page's ``next_cursor``.
    Raises ValueError for a cursor this function did not make."""
    select = Delivery.select()
    if tenant is not None:
        select = select.where(Delivery.tenant_id == tenant)
    for name in FILTERS:
        value = filters.get(name)
        if value and not (name == "tenant" and tenant is not None):
            select = select.where(getattr(Delivery, "tenant_id" if name == "tenant" else name) == value)
    if query:
        column = SEARCH_FIELDS.get(field or "recipient", "recipient")
        if column in _UUID_COLUMNS and not _is_uuid(query):
            return Page([], None)
        select = select.where(getattr(Delivery, column) == query)
        if column == "recipient" and tenant is None and not filters.get("tenant"):
            # The recipient index leads with tenant_id: name every tenant so it serves a search across them.
            select = select.where(Delivery.tenant_id.in_(tenants()))
    if cursor:
        at, _, last_id = cursor.partition("|")
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None or not _is_uuid(last_id):
            raise ValueError("bad cursor")
        # A row-value comparison: the (created_at, id) index walks straight to the page.
        select = select.where(peewee.Tuple(Delivery.created_at, Delivery.id) < peewee.Tuple(db.to_db_time(when), last_id))
    rows = list(select.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].created_at.isoformat()}|{rows[-1].id}" if more else None
    return Page(rows, next_cursor)


#: Each tenant in turn, one index probe per tenant (a "loose index scan" over the recipient index,
#: which leads with tenant_id): the cost follows the number of tenants, not of deliveries.
_TENANTS = """
WITH RECURSIVE t(tenant_id) AS (
    SELECT MIN(tenant_id) FROM chimeway_deliveries
    UNION ALL
    SELECT (SELECT MIN(d.tenant_id) FROM chimeway_deliveries d WHERE d.tenant_id > t.tenant_id)
      FROM t WHERE t.tenant_id IS NOT NULL
)
SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL
"""


def tenants() -> list[str]:
    """Every tenant that has a delivery."""
    return [row[0] for row in db.execute(_TENANTS).fetchall()]


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def overview(runtime: Runtime, tenant: str | None) -> dict[str, Any]:
    """Open deliveries by status (exact), terminal outcomes of the last hour and day by status and
    reason, stalled deliveries, orphan backlog and a per-minute chart of the last hour: what
    ``chimeway status`` reads, scoped to the tenant, so its cost follows the open and recent rows,
    never the history. The all-time total is the catalog's estimate, and only unscoped (the catalog
    knows no tenant)."""
    database = runtime.database
    now = db.now()
    orphans = status_queries.orphan_backlog(runtime, tenant)
    open_counts = status_queries.open_counts(database, tenant)
    return {
        "open": open_counts,
        "open_total": sum(open_counts.values()),
        "recent": status_queries.recent(database, tenant),
        "estimated_total": None if tenant else status_queries.table_estimates(database)["chimeway_deliveries"],
        "stalled": status_queries.stalled(runtime, tenant),
        "orphans": orphans["backlog"],
        "oldest_orphan_seconds": orphans["oldest_age_seconds"],
        "chart": terminal_per_minute(tenant, now),
        "circuits": status_queries.circuits(runtime),  # adapters are shared by every tenant: their circuits too
    }


def terminal_per_minute(tenant: str | None, now: datetime) -> list[dict[str, Any]]:
    """Deliveries that reached a terminal state in each of the last 60 minutes, by status."""
    start = (now - timedelta(minutes=59)).replace(second=0, microsecond=0)
    minute = "date_trunc('minute', d.updated_at)" if db.is_postgres() else "substr(d.updated_at, 1, 16)"
    params: list[Any] = [db.to_db_time(start)]
    tenant_clause = ""
    if tenant is not None:
        tenant_clause, params = " AND d.tenant_id = %s", [*params, tenant]
    rows = db.execute(  # TERMINAL_SQL: the words of the partial index on recent terminal outcomes
        f"SELECT {minute}, d.status, COUNT(*) FROM chimeway_deliveries d WHERE d.{TERMINAL_SQL} "
        f"AND d.updated_at >= %s{tenant_clause} GROUP BY 1, 2", params,
    ).fetchall()
    buckets = {start + timedelta(minutes=i): {s: 0 for s in sorted(TERMINAL)} for i in range(60)}
    for at, outcome, count in rows:
        when = at if isinstance(at, datetime) else datetime.fromisoformat(str(at) + ":00+00:00")
        key = when.replace(second=0, microsecond=0)
        if key in buckets:
            buckets[key][outcome] += count
    return [{"minute": at, **counts} for at, counts in sorted(buckets.items())]


def orphans(tenant: str | None, limit: int = 200) -> list[dict[str, Any]]:
    """Ledger events not linked to a delivery yet, oldest first: what each waits for."""
    where, params = status_queries.unlinked(db.database(), tenant)
    sql = (f"SELECT CAST(e.id AS text), e.tenant_id, e.provider, e.type, e.provider_message_id, e.received_at "
           f"FROM chimeway_events e WHERE {where} ORDER BY e.received_at, e.id LIMIT {int(limit)}")
    now = db.now()
    result = []
    for id_, tenant_id, provider, kind, message_id, received in db.execute(sql, params).fetchall():
        received_at = db.from_db_time(received)
        result.append({
            "id": id_, "tenant_id": tenant_id, "provider": provider, "type": kind,
            "provider_message_id": message_id, "received_at": received_at,
            "age_seconds": round((now - received_at).total_seconds()),
        })
    return result


def redact(document: Any) -> Any:
    """A payload or metadata with every value replaced by its type and size: the shape, not the data."""
    if isinstance(document, dict):
        return {key: redact(value) for key, value in document.items()}
    if isinstance(document, list):
        return f"‹list of {len(document)}›"
    if isinstance(document, str):
        return f"‹text, {len(document)} characters›"
    if document is None or isinstance(document, bool):
        return document
    return f"‹{type(document).__name__}›"
