"""What ``chimeway status`` reports: schema version, each configured adapter's circuit, counts by
status and reason, stalled deliveries, and the orphan backlog. One read-only pass; no recipients or payloads ever shown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chimeway import db
from chimeway.migrator import status as schema_status
from chimeway.models import ALL_MODELS


def collect(runtime: Any) -> dict[str, Any]:
    database = runtime.database
    schema = schema_status(database)
    report: dict[str, Any] = {
        "database": "postgresql" if db.is_postgres(database) else "sqlite",
        "broker": "redis" if runtime.settings.redis_url else "in-memory",
        "schema": schema,
        "circuits": _circuits(runtime),
    }
    if schema["current"] == 0:
        report["tables"] = {}
        return report
    report["tables"] = {model._meta.table_name: model.select().count() for model in ALL_MODELS}
    rows = db.execute(
        "SELECT status, COALESCE(reason, ''), COUNT(*) FROM chimeway_deliveries "
        "GROUP BY status, reason ORDER BY status, reason",
        db=database,
    ).fetchall()
    report["deliveries"] = [{"status": s, "reason": r or None, "count": n} for s, r, n in rows]
    stall = db.now() - timedelta(seconds=runtime.settings.sweep_stall_seconds)
    report["stalled"] = db.execute(
        "SELECT COUNT(*) FROM chimeway_deliveries WHERE status IN ('pending', 'dispatched', 'failed') "
        "AND updated_at < %s",
        (db.to_db_time(stall, database),),
        db=database,
    ).fetchone()[0]
    report["orphans"] = orphan_backlog(runtime)
    return report


def _circuits(runtime: Any) -> list[dict[str, Any]] | None:
    """Each configured adapter's circuit, or None when Redis cannot be read (the rest still reports)."""
    try:
        return runtime.guard.circuits(runtime.registry.configured())
    except Exception:  # redis.RedisError, a timeout: status reads the database without it
        return None


def orphan_backlog(runtime: Any) -> dict[str, Any]:
    """Orphans not linked yet: how many, the oldest one's age, and how many are past max age."""
    database = runtime.database
    from chimeway.webhooks.reconciler import not_linked_sql

    unlinked = f"needs_reconciliation AND {not_linked_sql('e')}"  # cost follows the orphans, not the ledger
    count, oldest = db.execute(
        f"SELECT COUNT(*), MIN(received_at) FROM chimeway_events e WHERE {unlinked}", db=database
    ).fetchone()
    oldest_at = db.from_db_time(oldest)
    expired = 0
    if count:
        cutoff = db.now() - timedelta(minutes=runtime.settings.reconcile_max_age_minutes)
        expired = db.execute(
            f"SELECT COUNT(*) FROM chimeway_events e WHERE received_at < %s AND {unlinked}",
            (db.to_db_time(cutoff, database),),
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
    if report.get("tables"):
        lines.append("")
        lines.append(f"{'table':<30} {'rows':>10}")
        lines += [f"{name:<30} {count:>10}" for name, count in report["tables"].items()]
    if report.get("deliveries"):
        lines.append("")
        lines.append(f"{'status':<12} {'reason':<24} {'deliveries':>10}")
        lines += [f"{d['status']:<12} {d['reason'] or '-':<24} {d['count']:>10}" for d in report["deliveries"]]
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
    return "\n".join(lines)
