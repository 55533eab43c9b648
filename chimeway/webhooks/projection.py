"""The projection: a delivery's feedback columns, derived from its ledger events.

Rules (docs/architecture.md §6):

- the ``last_event_type`` / ``last_event_at`` pointer moves only forward in ``occurred_at``; on a
  tie the later stage of a message's life wins (:data:`TIE_RANK`), so the result does not depend on
  the order events arrive in. ``unknown`` never moves it: a code we cannot read says nothing new;
- ``delivered_at``, ``bounced_at``, ``complained_at``, ``opened_at``, ``clicked_at`` are set once;
- ``status`` is never touched: feedback after a terminal state moves only these columns.

The rules live in one set-based ``UPDATE``, evaluated against each row as it is when written, for
any number of events of any number of deliveries (ingest and reconcile share it). Each write is
guarded by an optimistic lock: the caller passes the ``lock_version`` it read; a row another writer
changed since is read again and written with its new version. A stale write retries — it never
aborts the request or the reconcile it belongs to. Every applied write increments ``lock_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import peewee

from chimeway import db as dbmod
from chimeway.states import EventType
from chimeway.webhooks import recordset

logger = logging.getLogger("chimeway.webhooks")

#: Event type -> the set-once timestamp column it fills.
SET_ONCE: dict[str, str] = {
    EventType.DELIVERED: "delivered_at",
    EventType.BOUNCED: "bounced_at",
    EventType.COMPLAINED: "complained_at",
    EventType.OPENED: "opened_at",
    EventType.CLICKED: "clicked_at",
}

#: Types that move the pointer, and the tie-break between equal occurred_at: the later stage wins.
TIE_RANK: dict[str, int] = {
    EventType.QUEUED: 0,
    EventType.SENT: 1,
    EventType.DEFERRED: 2,
    EventType.DELIVERED: 3,
    EventType.AUTORESPONDED: 4,
    EventType.OPENED: 5,
    EventType.CLICKED: 6,
    EventType.SUBSCRIBED: 7,
    EventType.UNSUBSCRIBED: 8,
    EventType.FAILED: 9,
    EventType.REJECTED: 10,
    EventType.BOUNCED: 11,
    EventType.COMPLAINED: 12,
}

#: Optimistic-lock rounds before a row that keeps changing under us is left (and logged).
MAX_ROUNDS = 20


@dataclass(frozen=True)
class Fact:
    """One event as the projection sees it, with the ``lock_version`` its writer last read."""

    delivery_id: str
    type: str
    occurred_at: datetime
    lock_version: int


def apply(database: peewee.Database, facts: Sequence[Fact]) -> set[str]:
    """Project ``facts`` onto their deliveries inside the caller's transaction; the ids written."""
    written: set[str] = set()
    pending = list(facts)
    for _ in range(MAX_ROUNDS):
        if not pending:
            return written
        won = _write(database, pending)
        written |= won
        lost = sorted({fact.delivery_id for fact in pending} - won)
        if not lost:
            return written
        versions = _versions(database, lost)  # a deleted delivery simply drops out
        pending = [
            Fact(fact.delivery_id, fact.type, fact.occurred_at, versions[fact.delivery_id])
            for fact in pending
            if fact.delivery_id in versions
        ]
    logger.error("projection of %d deliveries kept losing the optimistic lock", len({f.delivery_id for f in pending}))
    return written


def _rank(column: str) -> str:
    cases = " ".join(f"WHEN '{kind}' THEN {rank}" for kind, rank in TIE_RANK.items())
    return f"(CASE {column} {cases} ELSE -1 END)"


_D = "chimeway_deliveries"
_MOVES = (
    f"(c.top_rank >= 0 AND ({_D}.last_event_at IS NULL OR c.top_at > {_D}.last_event_at "
    f"OR (c.top_at = {_D}.last_event_at AND c.top_rank > {_rank(_D + '.last_event_type')})))"
)


def _ctes(source: str, *, locked: bool) -> str:
    """``f`` and ``c`` CTEs over ``source`` (a FROM item aliased ``s`` with delivery_id, type, occurred_at
    and, when ``locked``, lock_version). ``c`` has one row per delivery: the fact that would move the
    pointer (pointer-moving types first, then latest, then highest rank) and the earliest time of each
    set-once type, computed with window functions over one pass (no self-join)."""
    lock = "lock_version, " if locked else ""
    firsts = ", ".join(
        f"MIN(CASE WHEN type = '{kind}' THEN occurred_at END) OVER (PARTITION BY delivery_id) AS {column}"
        for kind, column in SET_ONCE.items()
    )
    return (
        f"f AS (SELECT s.delivery_id, s.type, s.occurred_at, {'s.lock_version, ' if locked else ''}"
        f"{_rank('s.type')} AS rank FROM {source}), "
        f"c AS (SELECT * FROM (SELECT delivery_id, {lock}type AS top_type, occurred_at AS top_at, "
        f"rank AS top_rank, {firsts}, ROW_NUMBER() OVER (PARTITION BY delivery_id ORDER BY "
        "CASE WHEN rank >= 0 THEN 1 ELSE 0 END DESC, occurred_at DESC, rank DESC) AS n FROM f) x WHERE n = 1)"
    )


def _update(*, locked: bool) -> str:
    set_once = ", ".join(f"{column} = COALESCE({_D}.{column}, c.{column})" for column in SET_ONCE.values())
    guard = f" AND {_D}.lock_version = c.lock_version" if locked else ""
    return (
        f"UPDATE {_D} SET "
        f"last_event_type = CASE WHEN {_MOVES} THEN c.top_type ELSE {_D}.last_event_type END, "
        f"last_event_at = CASE WHEN {_MOVES} THEN c.top_at ELSE {_D}.last_event_at END, "
        f"{set_once}, lock_version = {_D}.lock_version + 1 "
        f"FROM c WHERE {_D}.id = c.delivery_id{guard} RETURNING CAST({_D}.id AS text)"
    )


def projecting_ctes(source: str, name: str = "projected") -> str:
    """CTEs (for a PostgreSQL ``WITH``) that project the facts of ``source`` — a FROM item aliased ``s``
    with delivery_id, type and occurred_at — in the same statement that produced them; the last CTE,
    ``name``, returns the ids written.

    No optimistic lock is needed here: the UPDATE evaluates every rule against the row as it is when
    written (READ COMMITTED re-reads a row another transaction changed meanwhile), so it cannot be
    stale. It still bumps lock_version, so other writers' optimistic locks see it.
    """
    return f"{_ctes(source, locked=False)}, {name} AS ({_update(locked=False)})"


def _statement(database: peewee.Database) -> str:
    """One UPDATE for all facts, guarded by the lock_version each fact carries."""
    columns = {"delivery_id": "uuid", "type": "text", "occurred_at": "timestamptz", "lock_version": "integer"}
    return f"WITH {_ctes(recordset.relation(database, columns, 's'), locked=True)} {_update(locked=True)}"


def _write(database: peewee.Database, facts: Sequence[Fact]) -> set[str]:
    rows = (
        {
            "delivery_id": fact.delivery_id,
            "type": str(fact.type),
            "occurred_at": recordset.timestamp(fact.occurred_at, database),
            "lock_version": fact.lock_version,
        }
        for fact in sorted(facts, key=lambda fact: fact.delivery_id)
    )
    cursor = dbmod.execute(_statement(database), (recordset.encode(rows),), db=database)
    return {str(row[0]) for row in cursor.fetchall()}


def _versions(database: peewee.Database, delivery_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(delivery_ids), 1000):
        chunk = delivery_ids[start : start + 1000]
        rows = dbmod.execute(
            f"SELECT CAST(id AS text), lock_version FROM {_D} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk, db=database
        ).fetchall()
        found.update((str(row[0]), row[1]) for row in rows)
    return found
