"""The monthly partitions of attempts and ledger events on PostgreSQL (migration 0009): prune creates
the coming months ahead and drops the months past retention whole (docs/architecture.md §9).

A partition is dropped only when its whole range is past retention (for the ledger, past the
orphans' cutoff too) and no row in it belongs to an open delivery. Its rows are then exactly those
the append-only triggers would let prune delete one by one: older than the horizon, their delivery
terminal. A partition that holds a row of an open delivery is kept; the chunked delete removes the
expired rest of it, and a later prune drops it once that delivery is closed and past retention.

A drop needs a brief ACCESS EXCLUSIVE lock on the partitioned table. It waits at most
:data:`LOCK_WAIT` for the writers in flight (workers hold the table for milliseconds), then gives up
until the next prune: workers queue behind it for that long at most, never longer. The chunked walk
then stops short of that partition's rows rather than delete them one by one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from chimeway import db as dbmod
from chimeway.states import OPEN_SQL

__all__ = ["Partition", "Upkeep", "upkeep"]

logger = logging.getLogger(__name__)

#: Months created ahead of the current one (never a write to the DEFAULT partition while prune runs).
AHEAD = 2
#: How long a partition's creation or drop waits for the table's lock before trying next time.
LOCK_WAIT = "1s"
#: The span of idempotency keys (by their event's time) of dropped months removed per transaction.
KEY_WINDOW = timedelta(days=1)
#: SQLSTATE of a lock not granted within lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"
#: Each partitioned table and its time column.
PARENTS = {"chimeway_delivery_attempts": "created_at", "chimeway_events": "received_at"}

_LIST = r"""
SELECT p.relname, c.relname,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']*)''\)'))[1]::timestamptz,
       pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.reltuples
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
 WHERE i.inhparent IN ('chimeway_delivery_attempts'::regclass, 'chimeway_events'::regclass)
 ORDER BY 1, 3 NULLS FIRST
"""


@dataclass(frozen=True)
class Partition:
    parent: str
    name: str
    lower: datetime | None  #: None: from MINVALUE (the legacy partition) or the DEFAULT partition
    upper: datetime | None  #: None: the DEFAULT partition
    default: bool
    estimated_rows: int  #: the catalog's estimate (-1: never analyzed)


@dataclass(frozen=True)
class Upkeep:
    """What prune did (or, dry, would do) to the partitions, and how far its chunked walk goes."""

    created: list[str]
    dropped: dict[str, int]  #: partition name -> its estimated rows
    kept: list[str]  #: past retention, but holding a row of an open delivery
    busy: list[str]  #: past retention, but its table's lock was not granted in time: the next prune
    walk_before: datetime  #: the chunked delete takes deliveries last changed before this
    orphans_before: datetime  #: and orphan events received before this


def listing(database: Any) -> list[Partition]:
    rows = dbmod.execute(_LIST, db=database).fetchall()
    return [Partition(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]


def upkeep(
    database: Any, now: datetime, cutoff: datetime, orphan_cutoff: datetime, *, dry_run: bool = False
) -> Upkeep:
    """Create the months ahead of ``now``, drop the months past retention, remove their idempotency keys."""
    created = [] if dry_run else _ensure_ahead(database, now)
    parts = listing(database)
    dropped: dict[str, int] = {}
    kept: list[str] = []
    busy: list[Partition] = []
    for part in parts:
        limit = orphan_cutoff if part.parent == "chimeway_events" else cutoff
        if part.default or part.upper is None or part.upper > limit:
            continue
        outcome = ("kept" if _holds_open(database, part.name) else "dropped") if dry_run else _drop(database, part)
        if outcome == "dropped":
            dropped[part.name] = part.estimated_rows
        elif outcome == "kept":
            kept.append(part.name)
        else:
            busy.append(part)
    if dropped and not dry_run:
        _remove_keys(database, [p for p in parts if p.name not in dropped])
    # Rows of a busy month wait for its drop (the legacy partition, reaching back to the beginning,
    # is emptied by the walk either way).
    waiting = [p.lower for p in busy if p.lower is not None]
    return Upkeep(
        created, dropped, kept, [p.name for p in busy],
        walk_before=min([cutoff, *waiting, *(_month_start(parts, table, cutoff) for table in PARENTS)]),
        orphans_before=min([
            _month_start(parts, "chimeway_events", orphan_cutoff),
            *(p.lower for p in busy if p.lower is not None and p.parent == "chimeway_events"),
        ]),
    )


def _month_start(parts: list[Partition], parent: str, moment: datetime) -> datetime:
    """The start of the month partition of ``parent`` that holds ``moment``: rows from there on wait
    for their partition's drop. ``moment`` itself when no month partition holds it (the legacy and
    the DEFAULT partitions are emptied by the chunked delete)."""
    for part in parts:
        if part.parent == parent and part.lower is not None and part.upper is not None and (
            part.lower <= moment < part.upper
        ):
            return part.lower
    return moment


def _ensure_ahead(database: Any, now: datetime) -> list[str]:
    try:
        with dbmod.transaction(database):
            dbmod.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'", db=database)
            rows = dbmod.execute("SELECT * FROM chimeway_ensure_partitions(%s, %s)", (AHEAD, now), database).fetchall()
    except peewee.DatabaseError as err:
        if dbmod.sqlstate(err) != LOCK_NOT_AVAILABLE:
            raise
        logger.warning("partitions ahead not created this time: their table's lock was busy")
        return []
    return [row[0] for row in rows]


def _holds_open(database: Any, name: str) -> bool:
    """Does partition ``name`` hold a row of an open delivery? One probe per open delivery (O(open))."""
    return dbmod.execute(
        f"SELECT EXISTS (SELECT 1 FROM chimeway_deliveries d WHERE d.{OPEN_SQL} "
        f'AND EXISTS (SELECT 1 FROM "{name}" x WHERE x.delivery_id = d.id))',
        db=database,
    ).fetchone()[0]


def _drop(database: Any, part: Partition) -> str:
    """Drop the partition unless it holds a row of an open delivery: "dropped", "kept", or "busy"
    when its table's lock was not granted within LOCK_WAIT."""
    try:
        with dbmod.transaction(database):
            dbmod.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'", db=database)
            # The parent first, as writers take it: no delivery can gain a row here while we look, and
            # a redrive that reopened one before this point is seen by the check.
            dbmod.execute(f"LOCK TABLE {part.parent} IN ACCESS EXCLUSIVE MODE", db=database)
            if _holds_open(database, part.name):
                return "kept"
            dbmod.execute(f'DROP TABLE "{part.name}"', db=database)
    except peewee.DatabaseError as err:
        if dbmod.sqlstate(err) != LOCK_NOT_AVAILABLE:
            raise
        logger.warning("partition %s not dropped this time: its table's lock was busy", part.name)
        return "busy"
    logger.info("dropped partition %s (about %d rows)", part.name, part.estimated_rows)
    return "dropped"


def _remove_keys(database: Any, remaining: list[Partition]) -> None:
    """Remove the idempotency keys of events no partition can hold any more: received before every
    remaining partition of the ledger (and before any row the DEFAULT partition holds)."""
    events = [p for p in remaining if p.parent == "chimeway_events"]
    if any(p.lower is None and not p.default for p in events):
        return  # the legacy partition reaches back to the beginning: its keys go with its chunked deletes
    floors = [p.lower for p in events if p.lower is not None]
    if any(p.default for p in events):
        oldest = dbmod.execute("SELECT min(received_at) FROM chimeway_events_default", db=database).fetchone()[0]
        floors += [oldest] if oldest is not None else []
    if not floors:
        return
    floor = min(floors)
    start = dbmod.execute("SELECT min(received_at) FROM chimeway_event_keys WHERE received_at < %s", (floor,),
                          database).fetchone()[0]
    # One transaction per day of keys, by range of their index: a day at a million deliveries a day
    # (two million keys) takes about two seconds.
    while start is not None and start < floor:
        end = min(start + KEY_WINDOW, floor)
        with dbmod.transaction(database):
            dbmod.execute("SET LOCAL synchronous_commit = off", db=database)  # the next prune redoes a lost one
            dbmod.execute("DELETE FROM chimeway_event_keys WHERE received_at >= %s AND received_at < %s",
                          (start, end), database)
        start = end
