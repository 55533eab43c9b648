"""What ``chimeway status`` reports: schema version, each configured adapter's circuit, table sizes (estimates), open deliveries,
terminal outcomes of the last hour and day, stalled deliveries, retention and the orphan backlog.
One read-only pass whose cost follows the open deliveries and the recent window, never the history:
open rows are counted in the partial index chimeway_deliveries_open, recent outcomes from the hourly
counts kept as deliveries change (plus the part of an hour at the window's start, counted in
chimeway_deliveries_closed), table sizes come from the catalog. No recipients or payloads shown.

The console's overview reads the same functions, scoped to its tenant: one home for these queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chimeway import db
from chimeway.models import ALL_MODELS
from chimeway.ops import outcomes
from chimeway.states import OPEN_SQL, TERMINAL, TERMINAL_SQL, Status
from chimeway.store import deliveries
from chimeway.store.migrator import status as schema_status
from chimeway.wiring.runtime_type import Runtime

#: The windows over which terminal outcomes are counted.
RECENT_WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}

_OPEN = [status.value for status in Status if status not in TERMINAL]


def collect(runtime: Runtime) -> dict[str, Any]:
    database = runtime.database
    schema = schema_status(database)
    report: dict[str, Any] = {
        "database": "postgresql" if db.is_postgres(database) else "sqlite",
        "broker": "redis" if runtime.settings.redis_url else "in-memory",
        "schema": schema,
        "circuits": circuits(runtime),
    }
    if schema["current"] == 0:
        report["table_estimates"] = {}
        return report
    report["table_estimates"] = table_estimates(database)
    report["open"] = open_counts(database)
    report["recent"] = recent(database, kept=schema["current"] >= outcomes.SCHEMA_VERSION)
    report["stalled"] = stalled(runtime)
    report["retention"] = retention(runtime)
    report["orphans"] = orphan_backlog(runtime)
    return report


def _of_tenant(tenant: str | None, params: list[Any], alias: str = "") -> str:
    """`` AND <alias>tenant_id = %s`` (its parameter appended) for a tenant, else nothing."""
    if tenant is None:
        return ""
    params.append(tenant)
    return f" AND {alias}tenant_id = %s"


def open_counts(database: Any, tenant: str | None = None) -> dict[str, int]:
    """Open deliveries per status, exactly."""
    params: list[Any] = []
    scope = _of_tenant(tenant, params)
    # The condition repeats the partial index's own, so both dialects read that index and only it.
    counted = dict(db.execute(f"SELECT status, COUNT(*) FROM chimeway_deliveries WHERE {OPEN_SQL}{scope} GROUP BY status",
                              params, db=database).fetchall())
    return {status: counted.get(status, 0) for status in _OPEN}


def recent(database: Any, tenant: str | None = None, *, kept: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Deliveries that reached a terminal state in each of RECENT_WINDOWS, by status and reason: the
    whole hours from the counts kept as deliveries change (chimeway.ops.outcomes), the rest counted.
    ``kept=False`` (a schema before those counts, not migrated yet): all of it counted."""
    now = db.now()
    return {
        name: [{"status": s, "reason": r, "count": n}
               for s, r, n in outcomes.finished(database, now - window, tenant, kept=kept)]
        for name, window in RECENT_WINDOWS.items()
    }


def stalled(runtime: Runtime, tenant: str | None = None) -> int:
    """Exactly what the sweep would re-enqueue now: live leases and future retries are not stalled."""
    lost, params = deliveries.lost(db.now(), timedelta(seconds=runtime.settings.sweep_stall_seconds), runtime.database)
    scope = _of_tenant(tenant, params)
    return db.execute(f"SELECT COUNT(*) FROM chimeway_deliveries WHERE {lost}{scope}", params,
                      db=runtime.database).fetchone()[0]


def table_estimates(database: Any) -> dict[str, int]:
    """Rows per table as the catalog estimates them (PostgreSQL's reltuples, as of the last ANALYZE,
    summed over a partitioned table's partitions; SQLite's largest rowid, which counts rows ever
    inserted): cheap at any size, and labelled so."""
    names = [model._meta.table_name for model in ALL_MODELS]
    if db.is_postgres(database):
        rows = db.execute(
            # reltuples is -1 until a table is analyzed; autovacuum never analyzes a partitioned parent
            "SELECT t.relname, SUM(GREATEST(c.reltuples, 0))::bigint FROM pg_class t "
            "LEFT JOIN pg_inherits i ON i.inhparent = t.oid JOIN pg_class c ON c.oid = COALESCE(i.inhrelid, t.oid) "
            "WHERE t.relkind IN ('r', 'p') AND t.relname = ANY(%s) AND t.relnamespace = 'public'::regnamespace "
            "GROUP BY t.relname",
            (names,),
            db=database,
        ).fetchall()
        found = dict(rows)
        return {name: found.get(name, 0) for name in names}
    return {name: db.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {name}", db=database).fetchone()[0] for name in names}


def retention(runtime: Runtime) -> dict[str, Any]:
    """The retention in effect and the oldest delivery kept (terminal: the one prune removes next)."""
    database = runtime.database
    terminal_at, open_at = (
        db.from_db_time(db.execute(f"SELECT MIN(updated_at) FROM chimeway_deliveries WHERE {where}", db=database)
                        .fetchone()[0])
        for where in (TERMINAL_SQL, OPEN_SQL)
    )
    return {
        "days": runtime.settings.retention_days,  # 0: everything is kept
        "oldest_terminal_at": terminal_at.isoformat() if terminal_at else None,
        "oldest_open_at": open_at.isoformat() if open_at else None,
    }


def circuits(runtime: Runtime) -> list[dict[str, Any]] | None:
    """Each configured adapter's circuit, or None when Redis cannot be read (the rest still reports)."""
    try:
        return runtime.guard.circuits(runtime.registry.configured())
    except Exception:  # redis.RedisError, a timeout: status reads the database without it
        return None


def unlinked(database: Any, tenant: str | None = None) -> tuple[str, list[Any]]:
    """WHERE text and parameters of the orphans (aliased ``e``) not linked yet: the reconciler's own
    definition, read through the orphan index, so its cost follows the orphans, not the ledger."""
    from chimeway.webhooks.reconciler import not_linked_sql

    params: list[Any] = []
    return f"e.needs_reconciliation AND {not_linked_sql('e', database)}{_of_tenant(tenant, params, 'e.')}", params


def orphan_backlog(runtime: Runtime, tenant: str | None = None) -> dict[str, Any]:
    """Orphans not linked yet: how many, the oldest one's age, and how many are past max age."""
    database = runtime.database
    where, params = unlinked(database, tenant)
    count, oldest = db.execute(
        f"SELECT COUNT(*), MIN(e.received_at) FROM chimeway_events e WHERE {where}", params, db=database
    ).fetchone()
    oldest_at = db.from_db_time(oldest)
    expired = 0
    if count:
        cutoff = db.now() - timedelta(minutes=runtime.settings.reconcile_max_age_minutes)
        expired = db.execute(
            f"SELECT COUNT(*) FROM chimeway_events e WHERE e.received_at < %s AND {where}",
            [db.to_db_time(cutoff, database), *params],
            db=database,
        ).fetchone()[0]
    return {
        "backlog": count,
        "oldest_age_seconds": round((db.now() - oldest_at).total_seconds()) if oldest_at else None,
        "past_max_age": expired,  # unlikely ever to reconcile
    }


def render(report: dict[str, Any]) -> str:
    schema = report["schema"]
    lines = [
        f"database   {report['database']}   broker {report['broker']}",
        f"schema     version {schema['current']} of {schema['latest']}"
        + (f" (pending: {', '.join(schema['pending'])})" if schema["pending"] else ""),
    ]
    circuits = report.get("circuits")
    if circuits is None and "circuits" in report:
        lines += ["", "circuits   unknown (Redis unreachable)"]
    if circuits:
        lines.append("")
        lines.append(f"{'adapter':<20} {'circuit':<10} {'failures in a row':>17}")
        for c in circuits:
            closes = f"  (probe in {c['opens_for_seconds']} s)" if c["state"] == "open" else ""
            lines.append(f"{c['adapter']:<20} {c['state']:<10} {c['failures']:>17}{closes}")
    if report.get("table_estimates"):
        lines.append("")
        lines.append(f"{'table':<30} {'rows (estimate)':>16}")
        lines += [f"{name:<30} {count:>16}" for name, count in report["table_estimates"].items()]
    if "open" in report:
        lines.append("")
        lines.append("open deliveries         " + ", ".join(f"{s} {n}" for s, n in report["open"].items()))
        for window, rows in report["recent"].items():
            lines.append(f"finished in the last {window}")
            lines += [f"  {d['status']:<12} {d['reason'] or '-':<24} {d['count']:>10}" for d in rows] or ["  none"]
    if "stalled" in report:
        orphans = report["orphans"]
        age = orphans["oldest_age_seconds"]
        lines += [
            "",
            f"stalled deliveries      {report['stalled']}",
            f"orphan backlog          {orphans['backlog']}" + (f" (oldest {age} s)" if age is not None else ""),
        ]
        if orphans["backlog"]:
            # Its own line: tacked onto the backlog it read as if the whole backlog would never reconcile.
            lines.append(f"  past max age, no longer reconciled  {orphans['past_max_age']}")
    if "retention" in report:
        kept = report["retention"]
        days = f"{kept['days']} days" if kept["days"] else "off (everything is kept)"
        lines.append(f"retention               {days}")
        lines.append(f"  oldest terminal kept  {kept['oldest_terminal_at'] or '-'}")
        lines.append(f"  oldest open           {kept['oldest_open_at'] or '-'}")
    return "\n".join(lines)
