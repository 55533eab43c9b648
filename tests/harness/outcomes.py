"""The outcome counts' promise (migration 0011), checked against the deliveries themselves: for
every hour, chimeway_outcome_hours plus chimeway_outcome_changes equal a count of the terminal
deliveries last changed in that hour, per tenant, status and reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from chimeway import db
from chimeway.states import TERMINAL_SQL

_KEPT = """
SELECT hour, tenant_id, status, reason, SUM(deliveries) FROM (
    SELECT * FROM chimeway_outcome_hours UNION ALL SELECT * FROM chimeway_outcome_changes
) AS kept GROUP BY 1, 2, 3, 4
"""


def _hour(postgres: bool) -> str:
    return "date_trunc('hour', updated_at, 'UTC')" if postgres else "substr(updated_at, 1, 13) || ':00:00.000000'"


def drift(database: Any) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(hour, tenant, status, reason) -> (kept, counted) wherever the two differ: empty when exact."""
    return drift_of(lambda text: db.execute(text, db=database).fetchall(), db.is_postgres(database))


def drift_of(rows: Callable[[str], list[Any]], postgres: bool) -> dict[tuple[Any, ...], tuple[int, int]]:
    """:func:`drift` through any connection: ``rows(sql)`` runs a query and returns its rows."""
    kept = {tuple(key): int(n) for *key, n in rows(_KEPT) if n}
    counted = {
        tuple(key): int(n) for *key, n in rows(
            f"SELECT {_hour(postgres)}, tenant_id, status, COALESCE(reason, ''), COUNT(*) FROM chimeway_deliveries "
            f"WHERE {TERMINAL_SQL} GROUP BY 1, 2, 3, 4"
        )
    }
    return {key: (kept.get(key, 0), counted.get(key, 0)) for key in kept.keys() | counted.keys()
            if kept.get(key, 0) != counted.get(key, 0)}


def counted_since(database: Any, since: datetime, tenant: str | None = None) -> list[tuple[str, str | None, int]]:
    """What chimeway.ops.outcomes.finished answers, counted from the deliveries alone."""
    params: list[Any] = [db.to_db_time(since, database)]
    scope = ""
    if tenant is not None:
        scope, params = " AND tenant_id = %s", [*params, tenant]
    rows = db.execute(
        f"SELECT status, COALESCE(reason, ''), COUNT(*) FROM chimeway_deliveries WHERE {TERMINAL_SQL} "
        f"AND updated_at >= %s{scope} GROUP BY 1, 2 ORDER BY 1, 2", params, db=database,
    ).fetchall()
    return [(status, reason or None, count) for status, reason, count in rows]
