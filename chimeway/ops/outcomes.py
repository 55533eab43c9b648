"""Terminal outcomes counted per hour as deliveries change (migration 0011), so that status and the
console's overview read a day of outcomes from a few rows per hour instead of counting the day's
deliveries (docs/architecture.md §9, "Outcome counts kept as deliveries change").

Triggers on chimeway_deliveries append +1/-1 rows to chimeway_outcome_changes in the transaction that
changes a delivery (into, out of or between terminal hours and outcomes; a delete by prune too).
:func:`fold` moves them into chimeway_outcome_hours; the scheduler runs it every minute. Appending
rather than updating a counter is what keeps two workers finishing deliveries from waiting for each
other's commit.

:func:`finished` answers "how many deliveries reached each terminal outcome since ``since``" exactly
as a count of the deliveries by ``updated_at`` would: the whole hours from the two tables, the part
of an hour at the start of the window from the deliveries themselves (through the index on recent
terminal outcomes), all in one statement and so one snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chimeway import db
from chimeway.states import TERMINAL_SQL

__all__ = ["FOLD_CRON", "SCHEMA_VERSION", "Fold", "finished", "fold"]

#: The migration that made the counts: a database behind it (code upgraded, ``chimeway migrate`` not
#: run yet) has its outcomes counted from the deliveries alone.
SCHEMA_VERSION = 11

#: The scheduler's schedule for :func:`fold`: the fewer changes left unfolded, the less status reads.
FOLD_CRON = "* * * * *"

#: The part of the window before its first whole hour, from the deliveries (index-only, in
#: chimeway_deliveries_closed), then each table of counts from that hour on.
_COUNTED = """
    SELECT status, COALESCE(reason, '') AS reason, COUNT(*) AS n FROM chimeway_deliveries
     WHERE {terminal} AND updated_at >= %s{until}{scope} GROUP BY status, reason"""
_KEPT = """
    UNION ALL
    SELECT status, reason, SUM(deliveries) FROM {table} WHERE hour >= %s{scope} GROUP BY status, reason"""
_FINISHED = """
SELECT status, reason, SUM(n) FROM ({parts}
) AS counted
GROUP BY status, reason HAVING SUM(n) <> 0 ORDER BY status, reason
"""

#: PostgreSQL: the changes are taken by a DELETE and added by the INSERT of the same statement, so a
#: change committed meanwhile is either in both or in neither. Returns how many changes were folded
#: and the hours where a count came to zero (those rows are deleted next).
_FOLD_PG = """
WITH moved AS (
    DELETE FROM chimeway_outcome_changes RETURNING hour, tenant_id, status, reason, deliveries
), folded AS (
    INSERT INTO chimeway_outcome_hours AS h
    SELECT hour, tenant_id, status, reason, SUM(deliveries) FROM moved GROUP BY 1, 2, 3, 4
    ON CONFLICT (hour, tenant_id, status, reason) DO UPDATE SET deliveries = h.deliveries + EXCLUDED.deliveries
    RETURNING h.hour, h.deliveries
)
SELECT (SELECT count(*) FROM moved), ARRAY(SELECT DISTINCT hour FROM folded WHERE deliveries = 0)
"""

#: SQLite: one writer at a time, so three statements in one transaction see the same changes.
_FOLD_SQLITE = (
    # "WHERE true": without it SQLite reads ON CONFLICT as a join constraint of the SELECT
    "INSERT INTO chimeway_outcome_hours SELECT hour, tenant_id, status, reason, SUM(deliveries) "
    "FROM chimeway_outcome_changes WHERE true GROUP BY 1, 2, 3, 4 "
    "ON CONFLICT (hour, tenant_id, status, reason) DO UPDATE SET deliveries = deliveries + excluded.deliveries",
    "DELETE FROM chimeway_outcome_hours WHERE deliveries = 0 "
    "AND hour IN (SELECT hour FROM chimeway_outcome_changes)",
    "DELETE FROM chimeway_outcome_changes",
)


@dataclass(frozen=True)
class Fold:
    changes: int  #: rows of chimeway_outcome_changes folded
    emptied: int  #: rows of chimeway_outcome_hours removed because their count came to zero


def fold(database: Any) -> Fold:
    """Move every committed change into the hourly counts, in one transaction."""
    with db.transaction(database):
        if db.is_postgres(database):
            moved, hours = db.execute(_FOLD_PG, db=database).fetchone()
            emptied = 0
            if hours:
                emptied = db.execute("DELETE FROM chimeway_outcome_hours WHERE hour = ANY(%s) AND deliveries = 0",
                                     (hours,), database).rowcount
            return Fold(changes=moved, emptied=emptied)
        add, empty, take = _FOLD_SQLITE
        db.execute(add, db=database)
        emptied = db.execute(empty, db=database).rowcount
        return Fold(changes=db.execute(take, db=database).rowcount, emptied=emptied)


def finished(
    database: Any, since: datetime, tenant: str | None = None, *, kept: bool = True
) -> list[tuple[str, str | None, int]]:
    """(status, reason, deliveries) of the deliveries that reached a terminal state at or after
    ``since`` and are still there, by status and reason. ``kept=False``: counted from the deliveries
    alone (a schema before :data:`SCHEMA_VERSION`)."""
    since = since.astimezone(UTC)
    whole = since.replace(minute=0, second=0, microsecond=0)
    if whole < since:
        whole += timedelta(hours=1)
    scope, scoped = "", []
    if tenant is not None:
        scope, scoped = " AND tenant_id = %s", [tenant]
    start, end = db.to_db_time(since, database), db.to_db_time(whole, database)
    if kept:
        parts = _COUNTED.format(terminal=TERMINAL_SQL, until=" AND updated_at < %s", scope=scope) + "".join(
            _KEPT.format(table=table, scope=scope) for table in ("chimeway_outcome_hours", "chimeway_outcome_changes"))
        params = [start, end, *scoped, end, *scoped, end, *scoped]
    else:  # the whole window from the deliveries
        parts, params = _COUNTED.format(terminal=TERMINAL_SQL, until="", scope=scope), [start, *scoped]
    rows = db.execute(_FINISHED.format(parts=parts), params, database).fetchall()
    return [(status, reason or None, int(count)) for status, reason, count in rows]
