"""Suppression entries from provider feedback: hard bounces and complaints, nothing softer.

A hard bounce is a ``bounced`` event whose reject reason says the address itself is bad
(``bounced`` or ``invalid``); soft bounces and deferrals map to ``deferred`` and never suppress.
The dispatch policy reads ``chimeway_suppressions`` and suppresses later sends to the address as
``recipient_suppressed``. Entries are inserted in bulk inside the ingest or reconcile transaction,
keeping an existing entry as it is (``chimeway.suppressions.add`` is the one-address API, which
updates it); addresses are stored in :func:`chimeway.suppressions.normalize_address` form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import peewee

from chimeway import db as dbmod
from chimeway.models import new_id
from chimeway.states import EventType, RejectReason, SuppressionReason
from chimeway.suppressions import normalize_address

_HARD = frozenset({RejectReason.BOUNCED, RejectReason.INVALID})
#: Rows per multi-row INSERT: 7 placeholders each, well under SQLite's 32766 variables.
CHUNK = 500


def reason_for(event_type: str, reject_reason: str | None) -> SuppressionReason | None:
    """Why this event suppresses its address, or None: the rule :func:`suppressing_sql` spells in SQL."""
    if event_type == EventType.COMPLAINED:
        return SuppressionReason.COMPLAINT
    if event_type == EventType.BOUNCED and reject_reason in _HARD:
        return SuppressionReason.HARD_BOUNCE
    return None


def suppressing_sql(event: str) -> str:
    """SQL: the event row aliased ``event`` suppresses its address (:func:`reason_for` is not None),
    for set-based writers that pick the suppressing events in the database."""
    hard = ", ".join(f"'{reason.value}'" for reason in sorted(_HARD))
    return (
        f"({event}.type = '{EventType.COMPLAINED.value}' OR "
        f"({event}.type = '{EventType.BOUNCED.value}' AND {event}.reject_reason IN ({hard})))"
    )


@dataclass(frozen=True)
class Entry:
    tenant_id: str
    channel: str
    address: str
    reason: SuppressionReason
    source: str  #: e.g. "webhook:postmark"


def add_entries(database: peewee.Database, entries: Sequence[Entry]) -> int:
    """Insert entries, keeping an address's first entry; how many were new."""
    unique = list({(e.tenant_id, e.channel, normalize_address(e.channel, e.address)): e for e in entries}.items())
    if not unique:
        return 0
    now = dbmod.to_db_time(dbmod.now(), database)
    added = 0
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        params = []
        for (tenant_id, channel, address), entry in chunk:
            params += [new_id(), tenant_id, channel, address, entry.reason.value, entry.source, now]
        cursor = dbmod.execute(
            "INSERT INTO chimeway_suppressions (id, tenant_id, channel, address, reason, source, created_at) VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            + " ON CONFLICT (tenant_id, channel, address) DO NOTHING RETURNING id",
            params,
            db=database,
        )
        added += len(cursor.fetchall())
    return added
