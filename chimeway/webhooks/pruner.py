"""Prune raw webhook rows past CHIMEWAY_WEBHOOK_RETENTION_DAYS (the ledger's retention: chimeway.ops.retention)."""

from __future__ import annotations

from datetime import datetime, timedelta

from chimeway import db as dbmod
from chimeway.wiring.runtime_type import Runtime

#: Rows per DELETE, so a large backlog never holds one long lock.
CHUNK = 5000


def prune(
    retention_days: int | None = None, *, runtime: Runtime, now: datetime | None = None, dry_run: bool = False
) -> int:
    """Delete raw webhook rows received more than ``retention_days`` ago (default
    CHIMEWAY_WEBHOOK_RETENTION_DAYS); how many were deleted (with ``dry_run``: would be, none is)."""
    days = runtime.settings.webhook_retention_days if retention_days is None else retention_days
    if days < 0:
        raise ValueError("retention_days must not be negative")
    database = runtime.database
    cutoff = dbmod.to_db_time((now or dbmod.now()) - timedelta(days=days), database)
    if dry_run:
        return dbmod.execute(
            "SELECT COUNT(*) FROM chimeway_webhook_events WHERE received_at < %s", (cutoff,), db=database
        ).fetchone()[0]
    deleted = 0
    while True:
        with dbmod.transaction(database):
            count = dbmod.execute(
                "DELETE FROM chimeway_webhook_events WHERE id IN (SELECT id FROM chimeway_webhook_events "
                "WHERE received_at < %s LIMIT %s)",
                (cutoff, CHUNK),
                db=database,
            ).rowcount
        deleted += count
        if count < CHUNK:
            return deleted
