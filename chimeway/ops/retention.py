"""Retention: remove terminal deliveries past CHIMEWAY_RETENTION_DAYS with their attempts and ledger
events, and orphan events as old. Open deliveries are never removed, whatever their age.

The attempts and the ledger stay append-only for every row that is kept (migration 0008): their
triggers refuse every UPDATE, and refuse a DELETE unless the row is older than the horizon in
``chimeway_retention`` and its delivery, if any, is terminal. Only this module writes that horizon,
inside the transaction that deletes, and closes it again before committing: the database itself
holds prune to the retention window, and refuses every other DELETE.

A delivery is removed only once everything it owns is past retention: it is terminal and last
changed before the cutoff, and no attempt or event of it is newer (a late "opened" keeps it).
Orphans still within the reconcile max age are kept even when retention is shorter, so the
reconciler never loses one it may still link. Each chunk is its own short transaction; rows a
worker or the projection holds are skipped (SKIP LOCKED) and taken by the next run: prune waits for a
worker at most CONTENDED_WAIT, in a chunk's first, unlocked try on PostgreSQL (see :func:`_take`).

On PostgreSQL the attempts and the ledger are partitioned by month (migration 0009): a month past
retention leaves by dropping its partition (chimeway/ops/partitions.py), and the chunked delete then
walks only the deliveries last changed before the month that holds the cutoff, whose rows are gone
or sit in the legacy, DEFAULT or a kept partition. Rows of the month that holds the cutoff wait for
their month to be dropped: retention there is kept to the month (up to a month longer, never shorter).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import peewee

from chimeway import db as dbmod
from chimeway.ops import partitions
from chimeway.states import TERMINAL_SQL
from chimeway.wiring.runtime_type import Runtime

__all__ = ["CHUNK", "RetentionResult", "cutoffs", "prune_history"]

#: Deliveries per transaction: locks held for tens of milliseconds, few round trips per delivery, and a
#: list of ids SQLite accepts as parameters (up to 32,766 since SQLite 3.32).
CHUNK = 5000
#: PostgreSQL: attempts and events per delivery read as a range of ids before the range is given up
#: for a lookup per delivery (see :func:`_children`).
RANGE_ROWS = 4
#: PostgreSQL: how long a chunk's unlocked delete waits for a writer holding one of its deliveries
#: before the chunk is taken again with its candidates locked (see :func:`_take`).
CONTENDED_WAIT = "100ms"
#: SQLSTATE of a row naming a deleted delivery (migration 0010's trigger, as a foreign key's).
FOREIGN_KEY_VIOLATION = "23503"

_TERMINAL_PAST = f"d.{TERMINAL_SQL} AND d.updated_at < %s"
_NOTHING_NEWER = """NOT EXISTS (SELECT 1 FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id AND a.created_at >= %s)
  AND NOT EXISTS (SELECT 1 FROM chimeway_events e WHERE e.delivery_id = d.id AND e.received_at >= %s)"""

#: Terminal deliveries last changed before a bound (the cutoff, or on PostgreSQL the start of its
#: month) none of whose attempts or events is newer than the cutoff (params: bound, cutoff, cutoff).
_EXPIRED = f"SELECT d.id FROM chimeway_deliveries d WHERE {_TERMINAL_PAST} AND {_NOTHING_NEWER}"

#: The next chunk of candidates after the keyset (updated_at, id), walking chimeway_deliveries_closed;
#: on PostgreSQL locked, skipping the rows a worker or the projection holds (the next run takes them).
_NEXT = (
    f"SELECT CAST(d.id AS text), CAST(d.updated_at AS text), {{row}} FROM chimeway_deliveries d WHERE {_TERMINAL_PAST} {{after}} "
    "ORDER BY d.updated_at, d.id LIMIT %s{lock}"
)

#: PostgreSQL's first try of a chunk, in one statement: the next candidates (as _NEXT, not locked)
#: deleted by place, each checked again; (candidates, deleted, the last one's keyset), no row when
#: there is no candidate left (params: bound, keyset, limit, bound).
_TAKE = f"""
WITH chunk AS MATERIALIZED (
    SELECT d.ctid AS place, d.id, d.updated_at FROM chimeway_deliveries d WHERE {_TERMINAL_PAST} {{after}}
     ORDER BY d.updated_at, d.id LIMIT %s),
gone AS (
    DELETE FROM chimeway_deliveries d WHERE d.ctid = ANY(ARRAY(SELECT place FROM chunk)) AND {_TERMINAL_PAST} RETURNING 1)
SELECT (SELECT count(*) FROM chunk), (SELECT count(*) FROM gone), CAST(last.updated_at AS text), CAST(last.id AS text)
  FROM (SELECT updated_at, id FROM chunk ORDER BY updated_at DESC, id DESC LIMIT 1) last
"""

#: The walk's keyset: after the last candidate of the previous chunk (params: its updated_at, id).
_AFTER = "AND (d.updated_at, d.id) > (%s, %s)"

#: The attempts and events of a set of deliveries: (table, id, delivery id, newer than the cutoff).
#: ``{where}`` is either a range of delivery ids or a list of them (see :func:`_children`).
_CHILDREN = (
    "SELECT 'a', CAST(id AS text), CAST(delivery_id AS text), created_at >= %s FROM chimeway_delivery_attempts "
    "WHERE {where} UNION ALL "
    "SELECT 'e', CAST(id AS text), CAST(delivery_id AS text), received_at >= %s FROM chimeway_events WHERE {where}"
)

#: Orphan events (no delivery) received before the cutoff; walks chimeway_events_orphan_scan.
_EXPIRED_ORPHANS = "FROM chimeway_events WHERE needs_reconciliation AND delivery_id IS NULL AND received_at < %s"


@dataclass(frozen=True)
class RetentionResult:
    """What one prune removed (or, with ``dry_run``, would remove)."""

    retention_days: int
    cutoff: datetime | None  #: terminal deliveries last changed before this go; None: retention off
    deliveries: int = 0
    attempts: int = 0
    events: int = 0  #: the deliveries' ledger events
    orphans: int = 0  #: orphan events past retention and the reconcile max age
    dry_run: bool = False
    #: PostgreSQL: month partitions dropped whole (name -> the catalog's row estimate); their rows are
    #: not in the counts above, which count rows deleted one by one.
    partitions: dict[str, int] = field(default_factory=dict)
    #: PostgreSQL: partitions past retention kept because a row in them belongs to an open delivery
    kept_partitions: list[str] = field(default_factory=list)
    #: PostgreSQL: partitions past retention left for the next prune: their table's lock was busy
    busy_partitions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"] = self.cutoff.isoformat() if self.cutoff else None
        return data


def cutoffs(settings: Any, now: datetime) -> tuple[datetime, datetime] | None:
    """(deliveries' cutoff, orphans' cutoff) for ``now``, or None when retention is off (0 days)."""
    if settings.retention_days == 0:
        return None
    cutoff = now - timedelta(days=settings.retention_days)
    # An orphan the reconciler may still link is kept, even if retention is shorter than its max age.
    return cutoff, min(cutoff, now - timedelta(minutes=settings.reconcile_max_age_minutes))


def prune_history(*, runtime: Runtime, now: datetime | None = None, dry_run: bool = False) -> RetentionResult:
    """Remove (or count, with ``dry_run``) what is past CHIMEWAY_RETENTION_DAYS."""
    settings, database = runtime.settings, runtime.database
    now = now or dbmod.now()
    found = cutoffs(settings, now)
    if found is None:
        return RetentionResult(retention_days=0, cutoff=None, dry_run=dry_run)
    cutoff, orphan_cutoff = (dbmod.to_db_time(moment, database) for moment in found)
    bounds = _Bounds(cutoff, cutoff, orphan_cutoff, orphan_cutoff)
    upkeep = None
    if dbmod.is_postgres(database):
        upkeep = partitions.upkeep(database, now, cutoff, orphan_cutoff, dry_run=dry_run)
        bounds = _Bounds(cutoff, upkeep.walk_before, orphan_cutoff, upkeep.orphans_before, tuple(upkeep.dropped))
    counts = _count(database, bounds) if dry_run else _delete(database, bounds)
    return RetentionResult(
        settings.retention_days, found[0], *counts, dry_run=dry_run,
        partitions=upkeep.dropped if upkeep else {}, kept_partitions=upkeep.kept if upkeep else [],
        busy_partitions=upkeep.busy if upkeep else [],
    )


@dataclass(frozen=True)
class _Bounds:
    cutoff: Any  #: nothing newer than this is removed (the triggers' horizon)
    walk_before: Any  #: the chunked delete takes deliveries last changed before this
    orphan_cutoff: Any
    orphans_before: Any  #: and orphan events received before this
    dropped: tuple[str, ...] = ()  #: partitions a dry run would drop: their rows are not counted


def _count(database: Any, bounds: _Bounds) -> tuple[int, int, int, int]:
    expired = f"SELECT id FROM ({_EXPIRED}) expired"
    params = (bounds.walk_before, bounds.cutoff, bounds.cutoff)
    elsewhere = "".join(f" AND tableoid <> '{name}'::regclass" for name in bounds.dropped)
    deliveries = dbmod.execute(f"SELECT COUNT(*) FROM ({expired}) counted", params, database).fetchone()[0]
    attempts = dbmod.execute(
        f"SELECT COUNT(*) FROM chimeway_delivery_attempts WHERE delivery_id IN ({expired}){elsewhere}", params, database
    ).fetchone()[0]
    events = dbmod.execute(
        f"SELECT COUNT(*) FROM chimeway_events WHERE delivery_id IN ({expired}){elsewhere}", params, database
    ).fetchone()[0]
    orphans = dbmod.execute(
        f"SELECT COUNT(*) {_EXPIRED_ORPHANS}{elsewhere}", (bounds.orphans_before,), database
    ).fetchone()[0]
    return deliveries, attempts, events, orphans


def _delete(database: Any, bounds: _Bounds) -> tuple[int, int, int, int]:
    totals = [0, 0, 0, 0]
    after: tuple[Any, Any] | None = None
    while True:
        # On PostgreSQL each chunk is first taken in one statement without locking its candidates
        # beforehand (see _take); if that meets a row a writer holds, or a candidate that still has an
        # attempt or an event, it is undone and the chunk taken again with its candidates locked.
        chunk = None
        if dbmod.is_postgres(database):
            try:
                with _horizon(database, bounds.cutoff):
                    chunk = _take(database, bounds, after)
            except _Contended:
                pass
        if chunk is None:
            with _horizon(database, bounds.cutoff):
                chunk = _chunk(database, bounds, after)
        count, last, removed = chunk
        after = last or after
        for total, value in enumerate(removed):
            totals[total] += value
        if count < CHUNK:
            break
    while True:
        with _horizon(database, bounds.orphan_cutoff):
            orphans = dbmod.execute(
                f"DELETE FROM chimeway_events WHERE id IN (SELECT id {_EXPIRED_ORPHANS} LIMIT %s)",
                (bounds.orphans_before, CHUNK), database,
            ).rowcount
        totals[3] += orphans
        if orphans < CHUNK:
            break
    return totals[0], totals[1], totals[2], totals[3]


class _Contended(Exception):
    """A chunk's first try met a writer or a candidate's row: undone, to be taken again locked."""


#: (candidates seen, the keyset (updated_at, id) of the last, (deliveries, attempts, events) removed)
_Chunk = tuple[int, tuple[Any, Any] | None, tuple[int, int, int]]


def _take(database: Any, bounds: _Bounds, after: tuple[Any, Any] | None) -> _Chunk:
    """PostgreSQL: the next chunk when none of its candidates has an attempt or an event left (the
    walk's deliveries, whose rows left with their month's partition), in one statement: no row is
    locked beforehand and nothing travels to Python and back. Against reading the candidates, then
    their rows, then deleting them by place, a day's walk at 10 M deliveries went from 9.0–13.0 to
    3.7–4.6 s (measured alternately on copies of one loaded database).

    The delete waits :data:`CONTENDED_WAIT` at most for a writer holding a candidate; a candidate a
    writer changed meanwhile has a new version at another place, which a delete by place does not
    follow (what made it a candidate is checked again too); and the delete trigger (migration 0010)
    refuses the statement if any attempt or event names a candidate.
    The first two make :class:`_Contended`; so does the refusal, which also covers a late "opened"
    keeping its delivery: the locked walk (:func:`_chunk`) sorts those out."""
    keyset = _AFTER if after else ""
    dbmod.execute(f"SET LOCAL lock_timeout = '{CONTENDED_WAIT}'", db=database)
    try:
        row = dbmod.execute(
            _TAKE.format(after=keyset), (bounds.walk_before, *(after or ()), CHUNK, bounds.walk_before), database
        ).fetchone()
    except peewee.DatabaseError as err:
        if dbmod.sqlstate(err) in (partitions.LOCK_NOT_AVAILABLE, FOREIGN_KEY_VIOLATION):
            raise _Contended() from err
        raise
    if row is None:
        return 0, None, (0, 0, 0)
    candidates, deleted, updated_at, last_id = row
    return candidates, (updated_at, last_id), (deleted, 0, 0)


def _chunk(database: Any, bounds: _Bounds, after: tuple[Any, Any] | None) -> _Chunk:
    """The next chunk of the walk, its candidates locked."""
    postgres = dbmod.is_postgres(database)
    # On PostgreSQL the row's place (ctid): deleted by it, not looked up again by id.
    row = "CAST(d.ctid AS text)" if postgres else "NULL"
    keyset = _AFTER if after else ""
    # SQLite has one writer at a time: prune's transaction is it.
    lock = " FOR UPDATE OF d SKIP LOCKED" if postgres else ""
    candidates = dbmod.execute(
        _NEXT.format(after=keyset, row=row, lock=lock), (bounds.walk_before, *(after or ()), CHUNK), database
    ).fetchall()
    if not candidates:
        return 0, None, (0, 0, 0)
    last = (candidates[-1][1], candidates[-1][0])  # (updated_at, id)
    removed = _remove({c[0]: c[2] for c in candidates}, bounds.cutoff, database)
    return len(candidates), last, removed


def _remove(candidates: dict[str, str | None], cutoff: Any, database: Any) -> tuple[int, int, int]:
    """Delete the locked candidates (id -> ctid on PostgreSQL) none of whose attempts or events is
    newer than the cutoff, with those rows: (deliveries, attempts, events). No row of a locked
    candidate can appear meanwhile: a writer holds its delivery before it adds one."""
    children = _children(list(candidates), cutoff, database)
    newer = {delivery for _, _, delivery, is_newer in children if is_newer}
    expired = [c for c in candidates if c not in newer]
    if not expired:
        return 0, 0, 0
    gone = set(expired)
    # Children first (the deliveries' delete is refused while a row names one); what is left of them
    # is older than the cutoff, in partitions not dropped yet or in SQLite's one table.
    left = [(kind, child) for kind, child, delivery, _ in children if delivery in gone]
    removed = {"a": 0, "e": 0}
    for kind, table, column in (("e", "chimeway_events", "received_at"), ("a", "chimeway_delivery_attempts", "created_at")):
        ids = [child for k, child in left if k == kind]
        if ids:
            among, params = _among(ids, database)
            removed[kind] = dbmod.execute(
                f"DELETE FROM {table} WHERE id {among} AND {column} < %s", [*params, cutoff], database
            ).rowcount
    if dbmod.is_postgres(database):
        # By place (a TID scan; with the ids in the WHERE clause the planner looks each one up in the
        # primary key instead): a locked row keeps its place until this transaction ends.
        where, params = "ctid = ANY(CAST(%s AS tid[]))", [_array(candidates[c] for c in expired)]
    else:
        among, params = _among(expired, database)
        where = f"id {among}"
    deliveries = dbmod.execute(f"DELETE FROM chimeway_deliveries WHERE {where}", params, database).rowcount
    return deliveries, removed["a"], removed["e"]


def _among(ids: list[str], database: Any) -> tuple[str, list[Any]]:
    """``= ANY(array)`` on PostgreSQL (one parameter, planned once whatever its length), ``IN (...)`` on SQLite."""
    if dbmod.is_postgres(database):
        return "= ANY(CAST(%s AS uuid[]))", [_array(ids)]
    return f"IN ({', '.join(['%s'] * len(ids))})", ids


def _array(items: Iterable[Any]) -> str:
    """A PostgreSQL array literal of uuids or tids (neither holds a quote, comma or brace): one string
    constant for the parser, where a Python list becomes one constant per item."""
    return "{" + ",".join(f'"{item}"' for item in items) + "}"


def _children(ids: list[str], cutoff: Any, database: Any) -> list[tuple[str, str, str, bool]]:
    """The attempts and events of these deliveries, each (kind "a"/"e", id, delivery id, newer than the cutoff).

    On PostgreSQL a chunk of the oldest deliveries is, with UUIDv7 ids, a narrow range of ids whose rows
    mostly left with their month's partition: what is left of them is read as one range of each
    partition's index on delivery_id (a few pages) rather than by one lookup per delivery and
    partition, which was most of prune's time. Rows of other deliveries in the range are read too and
    set aside; when there are too many (random UUIDv4 ids of an older installation, or a scattered
    chunk), the read stops at :data:`RANGE_ROWS` per delivery and the rows are looked up one by one."""
    wanted = set(ids)
    rows = None
    if dbmod.is_postgres(database):
        lo, hi, limit = min(ids), max(ids), RANGE_ROWS * len(ids)
        rows = dbmod.execute(
            f"{_CHILDREN.format(where='delivery_id BETWEEN %s AND %s')} LIMIT %s",
            [cutoff, lo, hi, cutoff, lo, hi, limit + 1], database,
        ).fetchall()
        rows = rows if len(rows) <= limit else None
    if rows is None:
        among, params = _among(ids, database)
        rows = dbmod.execute(
            _CHILDREN.format(where=f"delivery_id {among}"), [cutoff, *params, cutoff, *params], database
        ).fetchall()
    return [(kind, child, delivery, bool(newer)) for kind, child, delivery, newer in rows if delivery in wanted]


@contextmanager
def _horizon(database: Any, cutoff: Any) -> Iterator[None]:
    """A transaction in which attempts and events older than ``cutoff`` may be deleted (the triggers
    read the horizon). It is closed again before commit, so no other transaction ever sees it open:
    outside prune, nothing in the ledger can be deleted. On PostgreSQL the row lock also makes two
    prunes take turns rather than race on the same rows."""
    set_horizon = "UPDATE chimeway_retention SET prune_before = %s WHERE id = 1"
    with dbmod.transaction(database):
        if dbmod.is_postgres(database):
            # A chunk lost to a server crash is removed again by the next prune: no need to wait for
            # its commit to reach the disk (hundreds of chunks a day at a million deliveries a day).
            dbmod.execute("SET LOCAL synchronous_commit = off", db=database)
        dbmod.execute(set_horizon, (cutoff,), database)
        yield
        dbmod.execute(set_horizon, (None,), database)
