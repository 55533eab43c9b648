"""Deliveries: the named state writers, and the read API.

Every change of a delivery's ``status`` goes through a writer below. Each writer is one conditional
``UPDATE … WHERE status IN (…)`` whose row count decides: two workers can never both win a claim,
and a terminal delivery never changes again (docs/architecture.md §4). Writers return whether they won; they
never raise for a lost race. The hot path (:func:`claim`, :func:`record`) is hand-written SQL.

Timestamps come from Python (:func:`chimeway.db.now`), not the database server, on both dialects.

Read API (also ``chimeway.get_delivery`` …): :func:`get_delivery`, :func:`attempts`,
:func:`cancel`, :func:`mark_read`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from chimeway import db, telemetry
from chimeway.errors import DeliveryNotFound, IdempotencyConflictError, InvalidSendError
from chimeway.models import JSON, Attempt, Delivery, UTCDateTime, UUIDText, new_id
from chimeway.policy import FACTS_SQL, PROCEEDS_BY_FACTS_SQL, PolicyFacts, facts_sql
from chimeway.states import REDRIVABLE, TERMINAL, Orchestration, Reason, Status
from chimeway.suppressions import normalize_address

__all__ = [
    "DUE_TOLERANCE",
    "attempts",
    "cancel",
    "claim",
    "create",
    "create_many",
    "defer",
    "exhaust",
    "find",
    "fingerprint",
    "get_delivery",
    "insert",
    "load",
    "load_and_claim",
    "load_and_claim_many",
    "lost",
    "mark_read",
    "new",
    "record",
    "record_many",
    "recording",
    "redrive",
    "suppress",
    "valid_id",
    "why_not_claimable",
    "write",
]

#: A retry or deferral that arrives this much early still counts as due: the delay was computed on
#: one machine's clock and the message may be processed on another's.
DUE_TOLERANCE = timedelta(seconds=1)

# --- claimable and lost: the one definition the claim, the writers, the sweep and status use --------
# (docs/architecture.md §4). ``why_not_claimable`` is the same rule read off a loaded row.

def _free(now: str) -> str:
    """Not terminal and not held by a live claim (a dispatched delivery whose lease expired was
    abandoned by a crashed worker) at ``now``: a placeholder, or a column of a batch."""
    return f"(status IN ('pending', 'failed') OR (status = 'dispatched' AND lease_until < {now}))"


#: :func:`_free` for one delivery. One placeholder: now.
_FREE = _free("%s")

#: Lost: not terminal, nobody working on it, and no message enqueued for it in the last ``stall``
#: seconds (the sweep's table in chimeway/dispatch/sweep.py). Placeholders: see :func:`lost`.
_LOST = """status IN ('pending', 'failed', 'dispatched')
  AND (enqueued_at IS NULL OR enqueued_at < %s)
  AND (
        (orchestration_state = 'deferred' AND status IN ('pending', 'failed')
            AND COALESCE(next_eligible_at, updated_at) < %s)
     OR (orchestration_state = 'ready' AND status = 'pending' AND updated_at < %s)
     OR (orchestration_state = 'ready' AND status = 'failed' AND COALESCE(next_attempt_at, updated_at) < %s)
     OR (status = 'dispatched' AND COALESCE(lease_until, updated_at) < %s)
     OR (orchestration_state = 'deferred' AND status = 'pending' AND send_at IS NOT NULL
            AND next_eligible_at < %s)
  )"""


def lost(now: datetime, stall: timedelta, database: Any = None) -> tuple[str, list[Any]]:
    """The WHERE condition selecting lost deliveries at ``now`` and its parameters: what the sweep
    re-enqueues and what ``chimeway status`` counts as stalled."""
    cutoff = db.to_db_time(now - stall, database)
    # a scheduled send due within the stall window is taken ahead of its time (its message is delayed
    # to it), so a lost message cannot make it late by a whole stall window
    return _LOST, [cutoff, cutoff, cutoff, cutoff, db.to_db_time(now, database), db.to_db_time(now + stall, database)]


#: why_not_claimable's answer for a deferred or scheduled delivery whose time has not come (the deliver
#: actor tells it apart: a schedule longer than one Dramatiq delay is waited out message by message).
NOT_DUE = "deferred and not due yet"


def why_not_claimable(delivery: Delivery, now: datetime) -> str | None:
    """Why the claim would refuse this loaded delivery, or None: the claim's WHERE read in Python, so
    a message that cannot win does not run the policy first. The claim re-checks all of it atomically."""
    due = now + DUE_TOLERANCE
    if delivery.status in TERMINAL:
        return f"already {delivery.status}"
    if delivery.status == Status.DISPATCHED and delivery.lease_until and delivery.lease_until > now:
        return "being sent by another worker (live lease)"
    if delivery.orchestration_state == Orchestration.DEFERRED and delivery.next_eligible_at and (
        delivery.next_eligible_at > due
    ):
        return NOT_DUE
    if delivery.status == Status.FAILED and delivery.next_attempt_at and delivery.next_attempt_at > due:
        return "its retry is not due yet"
    return None


_INSERT_COLUMNS = """chimeway_deliveries (
    id, tenant_id, notification_id, channel, category, recipient, adapter, payload, metadata,
    idempotency_key, idempotency_fingerprint, status, orchestration_state, next_eligible_at, attempt_count,
    max_attempts, delay_fallback, lock_version, created_at, updated_at, priority, send_at
)"""
#: One row's values; :meth:`NewDelivery.values` gives its parameters in this order.
_INSERT_VALUES = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s, 0, %s, %s, 0, %s, %s, %s, %s)"

_INSERT = db.Statement("chimeway_insert_delivery", f"""
INSERT INTO {_INSERT_COLUMNS} VALUES {_INSERT_VALUES}
ON CONFLICT DO NOTHING
""")

#: What :func:`fingerprint` hashes: the parameters as sorted-key JSON. The payload goes in as the text
#: it is stored as (sorted-key JSON already), so it is not encoded a second time for the fingerprint.
_FINGERPRINTED = '{{"adapter":{},"channel":{},"notification_id":{},"payload":{},"recipient":{},"tenant_id":{}}}'

def _claim_update(*, now: str, due: str, lease_until: str, which: str, source: str = "") -> str:
    """The claim, without its RETURNING: ``which`` rows (``source``: the FROM of a batch), claimable at
    ``now`` (the rule of :func:`_free`) and due by ``due``. Each value is a placeholder or a column.

    The free guard is written so that it cannot be an index condition (``IS TRUE``): each row is
    looked up by ``which``, its key. As plain ``status IN …`` the prepared statements' generic plan,
    after an ANALYZE that saw almost nothing open, read the whole open-deliveries index (a BitmapOr
    over it, every open row, dead ones too) and hash-joined the batch to it: 1.2 ms a batch of four
    against 0.24 ms, and a drain 20 % slower (README "Scale")."""
    return f"""
UPDATE chimeway_deliveries
   SET status = 'dispatched', attempt_count = attempt_count + 1, lease_until = {lease_until},
       orchestration_state = 'ready', next_eligible_at = NULL, updated_at = {now}{source}
 WHERE {which}
   AND attempt_count < max_attempts
   AND ({_free(now)}) IS TRUE
   AND (orchestration_state = 'ready' OR next_eligible_at <= {due})
   AND (status <> 'failed' OR next_attempt_at IS NULL OR next_attempt_at <= {due})
"""


#: The claim of one delivery. Placeholders: lease_until, now, id, now, due, due.
_CLAIM_UPDATE = _claim_update(now="%s", due="%s", lease_until="%s", which="id = %s")

_CLAIM = db.Statement("chimeway_claim", f"{_CLAIM_UPDATE}RETURNING attempt_count")

#: The guard ``(status = 'dispatched') IS TRUE`` cannot be an index condition, for the reason given
#: at :func:`_claim_update`: as plain ``status = 'dispatched'`` the generic plan walked the
#: open-deliveries index's dispatched entries after an ANALYZE that saw none.
_RECORD_STATE = """
UPDATE chimeway_deliveries
   SET status = %s, reason = %s, next_attempt_at = %s, lease_until = NULL,
       provider = COALESCE(%s, provider), provider_message_id = COALESCE(%s, provider_message_id),
       updated_at = %s
 WHERE id = %s AND (status = 'dispatched') IS TRUE AND attempt_count = %s
RETURNING tenant_id, channel, adapter
"""

_RECORD_ATTEMPT = """
INSERT INTO chimeway_delivery_attempts (
    id, delivery_id, attempt_number, outcome, error_class, error_message, adapter,
    provider_message_id, provider_response, duration_ms, created_at
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

#: PostgreSQL: the state UPDATE and the attempt INSERT as one statement (one round trip instead of
#: BEGIN, UPDATE, INSERT, COMMIT). The INSERT reads the UPDATE's row, so the claim guard holds exactly
#: as in the two-statement path: no row updated, no attempt row. Placeholders: the state UPDATE's,
#: then id, outcome, error_class, error_message, adapter, provider_message_id, provider_response,
#: duration_ms, created_at.
_RECORD_BOTH = db.Statement("chimeway_record", f"""
WITH s AS ({_RECORD_STATE.strip()}, id, attempt_count),
a AS (
    INSERT INTO chimeway_delivery_attempts (
        id, delivery_id, attempt_number, outcome, error_class, error_message, adapter,
        provider_message_id, provider_response, duration_ms, created_at
    )
    SELECT %s::uuid, s.id, s.attempt_count, %s, %s, %s, %s, %s, %s::jsonb, %s, %s FROM s
)
SELECT tenant_id, channel, adapter FROM s
""")

_RETURNING = " RETURNING tenant_id, channel, adapter"

#: PostgreSQL: :data:`_RECORD_BOTH` for a batch of records, one array per column (unnest keeps the
#: statement's text, so it is prepared once whatever the batch's size). Each row's UPDATE is guarded by
#: its own claim and only an updated row gets its attempt row, as in the one-row statement.
_RECORD_MANY = db.Statement("chimeway_record_many", """
WITH v AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[],
                         %s::timestamptz[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
                         %s::int[])
        AS v(v_id, v_attempt, v_status, v_reason, v_next, v_provider, v_message_id, v_now, v_attempt_id, v_outcome,
             v_error_class, v_error, v_adapter, v_response, v_duration)
),
s AS (
    UPDATE chimeway_deliveries
       SET status = v_status, reason = v_reason, next_attempt_at = v_next, lease_until = NULL,
           provider = COALESCE(v_provider, provider), provider_message_id = COALESCE(v_message_id, provider_message_id),
           updated_at = v_now
      FROM v
     WHERE id = v_id AND attempt_count = v_attempt
       -- the claim's guard, written so that it cannot be an index condition: each row is looked up
       -- by its key. As "status = 'dispatched'" the planner would walk the open-deliveries index's
       -- dispatched entries instead, dead ones included (1 ms a batch in make bench, not 0.1).
       AND (status = 'dispatched') IS TRUE
    RETURNING id, attempt_count, tenant_id, channel, adapter
),
a AS (
    INSERT INTO chimeway_delivery_attempts (
        id, delivery_id, attempt_number, outcome, error_class, error_message, adapter,
        provider_message_id, provider_response, duration_ms, created_at
    )
    SELECT v_attempt_id, s.id, s.attempt_count, v_outcome, v_error_class, v_error, v_adapter, v_message_id,
           v_response, v_duration, v_now
      FROM s JOIN v ON v_id = s.id AND v_attempt = s.attempt_count
)
SELECT CAST(id AS text), attempt_count, tenant_id, channel, adapter FROM s
""")


def _t(value: datetime | None) -> Any:
    return db.to_db_time(value)


def valid_id(value: Any) -> bool:
    """Whether ``value`` reads as a UUID (anything else names no delivery)."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- creating --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDelivery:
    """A checked delivery not yet stored: what :func:`new` validated and :func:`create` /
    :func:`create_many` insert."""

    id: str
    tenant_id: str
    #: as given: None lets a reused idempotency key match the first send's notification
    given_notification: str | None
    notification_id: str
    channel: str
    category: str | None
    recipient: str
    adapter: str
    payload: Mapping[str, Any]
    metadata: Mapping[str, Any]
    payload_json: str
    metadata_json: str
    idempotency_key: str | None
    key_fingerprint: str | None
    max_attempts: int
    delay_fallback: bool
    priority: str
    send_at: datetime | None
    now: datetime

    @property
    def scheduled(self) -> bool:
        """Not to be attempted before ``send_at``: stored deferred until then (docs/architecture.md §9)."""
        return self.send_at is not None and self.send_at > self.now

    def values(self) -> tuple[Any, ...]:
        return (
            self.id, self.tenant_id, self.notification_id, self.channel, self.category, self.recipient,
            self.adapter, self.payload_json, self.metadata_json, self.idempotency_key, self.key_fingerprint,
            (Orchestration.DEFERRED if self.scheduled else Orchestration.READY).value,
            _t(self.send_at) if self.scheduled else None, self.max_attempts, self.delay_fallback,
            _t(self.now), _t(self.now), self.priority, _t(self.send_at),
        )

    def delivery(self) -> Delivery:
        """The Delivery as stored by the INSERT (no read back; built as :func:`_build` builds a row,
        without the model's per-field __init__, which cost send_many a sixth of its time)."""
        return _model({
            "id": self.id, "tenant_id": self.tenant_id, "notification_id": self.notification_id,
            "channel": self.channel, "category": self.category, "recipient": self.recipient,
            "adapter": self.adapter, "payload": dict(self.payload), "metadata": dict(self.metadata),
            "idempotency_key": self.idempotency_key, "idempotency_fingerprint": self.key_fingerprint,
            "status": Status.PENDING.value,
            "orchestration_state": (Orchestration.DEFERRED if self.scheduled else Orchestration.READY).value,
            "next_eligible_at": self.send_at if self.scheduled else None, "attempt_count": 0,
            "max_attempts": self.max_attempts, "delay_fallback": self.delay_fallback, "lock_version": 0,
            "created_at": self.now, "updated_at": self.now, "priority": self.priority, "send_at": self.send_at,
        })


def new(
    *,
    channel: str,
    recipient: str,
    adapter: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any],
    tenant_id: str,
    notification_id: str | None,
    idempotency_key: str | None,
    max_attempts: int,
    delay_fallback: bool,
    category: str | None,
    max_json_bytes: int | None = None,
    priority: str = "normal",
    send_at: datetime | None = None,
) -> NewDelivery:
    """Check and prepare a pending delivery (nothing is written): ``payload`` and ``metadata`` must be
    JSON objects of at most ``max_json_bytes`` as stored; else :class:`InvalidSendError` names which.
    ``notification_id`` None starts a new notification."""
    payload_json = _document("payload", payload, max_json_bytes)
    metadata_json = _document("metadata", metadata, max_json_bytes)
    notification = new_id() if notification_id is None else notification_id
    key_fingerprint = None
    if idempotency_key is not None:
        key_fingerprint = fingerprint(
            tenant_id=tenant_id, channel=channel, recipient=recipient, adapter=adapter,
            notification_id=notification, payload_json=payload_json,
        )
    return NewDelivery(
        id=new_id(), tenant_id=tenant_id, given_notification=notification_id, notification_id=notification,
        channel=channel, category=category, recipient=recipient, adapter=adapter, payload=payload,
        metadata=metadata, payload_json=payload_json, metadata_json=metadata_json,
        idempotency_key=idempotency_key, key_fingerprint=key_fingerprint, max_attempts=max_attempts,
        delay_fallback=bool(delay_fallback), priority=priority, send_at=send_at, now=db.now(),
    )


def create(**fields: Any) -> tuple[Delivery, bool]:
    """Insert a pending delivery (the keywords of :func:`new`); ``(delivery, True)``, or ``(the
    existing one, False)`` when the idempotency key or (notification_id, channel) was already used in
    this tenant (another tenant's use is invisible: every key is scoped by tenant). Joins the caller's
    transaction; ``ON CONFLICT DO NOTHING`` keeps a conflict from aborting it on PostgreSQL.

    A reused idempotency key whose first send had other parameters raises
    :class:`IdempotencyConflictError`. Nothing is stored when this raises."""
    return insert(new(**fields))


def insert(row: NewDelivery) -> tuple[Delivery, bool]:
    """Insert one row checked by :func:`new`: :func:`create`'s answer."""
    if db.run(_INSERT, row.values()).rowcount == 1:
        return row.delivery(), True
    return _existing(row), False


def create_many(rows: Sequence[NewDelivery]) -> list[tuple[Delivery, bool]]:
    """:func:`create` for many rows with one multi-row INSERT (the caller keeps a chunk small enough
    for one statement); the results in the order of ``rows``. Rows that conflict with a stored
    delivery, or with an earlier row (an idempotency key used twice makes one delivery), answer with
    that delivery and False, as :func:`create` does, and raise :class:`IdempotencyConflictError`
    alike. Run it in a transaction: a raise leaves the rows already inserted."""
    first: dict[tuple[str, str], int] = {}  # (tenant, key) -> the row that inserts it
    repeats: dict[int, int] = {}
    for index, row in enumerate(rows):
        if row.idempotency_key is not None:
            repeats[index] = first.setdefault((row.tenant_id, row.idempotency_key), index)
    unique = [row for index, row in enumerate(rows) if repeats.get(index, index) == index]
    params = [value for row in unique for value in row.values()]
    text = f"INSERT INTO {_INSERT_COLUMNS} VALUES {', '.join([_INSERT_VALUES] * len(unique))} " \
           "ON CONFLICT DO NOTHING RETURNING CAST(id AS text)"
    inserted = {str(found[0]) for found in db.execute(text, params).fetchall()} if unique else set()
    results: list[tuple[Delivery, bool]] = []
    for index, row in enumerate(rows):
        earlier = repeats.get(index, index)
        try:
            if earlier != index:  # the key's first row answers for it, if this row repeats that send
                delivery = results[earlier][0]
                _check_same_send(delivery, row.given_notification, row.channel, row.recipient, row.adapter,
                                 row.payload_json)
                results.append((delivery, False))
            else:
                results.append((row.delivery(), True) if row.id in inserted else (_existing(row), False))
        except IdempotencyConflictError as err:
            err.index = index  # which row: the caller names its item
            raise
    return results


def _existing(row: NewDelivery) -> Delivery:
    """The stored delivery ``row`` conflicted with (raises IdempotencyConflictError for a key reused
    with other parameters)."""
    same_tenant = Delivery.select().where(Delivery.tenant_id == row.tenant_id)
    existing = None
    if row.idempotency_key is not None:
        existing = same_tenant.where(Delivery.idempotency_key == row.idempotency_key).first()
        if existing is not None:
            _check_same_send(existing, row.given_notification, row.channel, row.recipient, row.adapter,
                             row.payload_json)
    if existing is None:  # the conflict was on the other key: same notification and channel
        existing = same_tenant.where(
            (Delivery.notification_id == row.notification_id) & (Delivery.channel == row.channel)
        ).first()
    if existing is None:  # every unique key includes the tenant: only a row deleted since the INSERT gets here
        raise ValueError(f"the {row.channel!r} delivery of notification_id {row.notification_id} conflicted but is gone")
    return existing


def fingerprint(
    *, tenant_id: str, channel: str, recipient: str, adapter: str, notification_id: str, payload_json: str
) -> str:
    """sha256 (hex) of a send's parameters as sorted-key JSON: stored with an idempotency key, so that
    a second send with the key can tell whether it repeats the first. ``payload_json`` is the payload
    as stored (:func:`chimeway.db.to_db_json_strict`, sorted keys already)."""
    text = _FINGERPRINTED.format(
        json.dumps(adapter), json.dumps(channel), json.dumps(str(notification_id)), payload_json,
        json.dumps(recipient), json.dumps(tenant_id),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _check_same_send(
    existing: Delivery, notification_id: str | None, channel: str, recipient: str, adapter: str, payload_json: str
) -> None:
    """Raise IdempotencyConflictError unless ``existing`` (found by the idempotency key) was sent with
    these parameters. A send that names no notification takes the first send's; a row from before
    fingerprints (NULL) is accepted, as it always was."""
    if existing.idempotency_fingerprint is None:
        return
    notification = existing.notification_id if notification_id is None else notification_id
    same = fingerprint(
        tenant_id=existing.tenant_id, channel=channel, recipient=recipient, adapter=adapter,
        notification_id=notification, payload_json=payload_json,
    )
    if same == existing.idempotency_fingerprint:
        return
    given = {"channel": channel, "recipient": recipient, "adapter": adapter, "notification_id": notification}
    differing = [name for name, value in given.items() if str(getattr(existing, name)) != value]
    if db.to_db_json(existing.payload) != payload_json:
        differing.append("payload")
    raise IdempotencyConflictError(existing.idempotency_key, differing)


def _document(argument: str, value: Any, max_bytes: int | None) -> str:
    """A payload or metadata as the JSON text to store: InvalidSendError naming ``argument`` when it is
    not a JSON object, holds what JSON (or the database) cannot represent, or is over ``max_bytes``."""
    if not isinstance(value, Mapping):
        raise InvalidSendError(argument, f"must be a JSON object (a dict), not {type(value).__name__}")
    try:
        text = db.to_db_json_strict(value if isinstance(value, dict) else dict(value))
    except (TypeError, ValueError, RecursionError) as err:
        raise InvalidSendError(argument, f"cannot be stored as JSON: {err}") from err
    # ASCII text (non-ASCII characters are escaped), so its length is its size in bytes.
    if max_bytes is not None and len(text) > max_bytes:
        raise InvalidSendError(
            argument, f"is {len(text)} bytes as JSON, over the limit of {max_bytes} (CHIMEWAY_MAX_PAYLOAD_BYTES)"
        )
    return text


# --- the hot path: claim and record ----------------------------------------------------------------


def claim(delivery_id: str, *, lease_seconds: int, now: datetime | None = None) -> int | None:
    """Take the delivery for one attempt: dispatched, attempt_count + 1, leased. Returns the attempt
    number, or None when it is not claimable (terminal, held under a live lease, not due, or its
    attempt budget is spent)."""
    now = now or db.now()
    due = now + DUE_TOLERANCE
    rows = db.run(
        _CLAIM,
        (_t(now + timedelta(seconds=lease_seconds)), _t(now), delivery_id, _t(now), _t(due), _t(due)),
    ).fetchall()
    return int(rows[0][0]) if rows else None


@dataclass(frozen=True)
class Recording:
    """One attempt's outcome, ready to write (:func:`write`, or :func:`record_many` with others')."""

    delivery_id: str
    attempt_number: int
    status: Status
    reason: Reason | None
    #: the guarded state UPDATE's parameters (_RECORD_STATE's order)
    state: tuple[Any, ...]
    #: the attempt row: id, outcome, error_class, error_message, adapter, provider_message_id,
    #: provider_response (JSON text), duration_ms, created_at
    attempt: tuple[Any, ...]


def recording(
    delivery_id: str,
    attempt_number: int,
    *,
    outcome: str,
    error_class: str | None,
    adapter: str,
    status: Status,
    reason: Reason | None = None,
    next_attempt_at: datetime | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    provider_response: Mapping[str, Any] | None = None,
    error_message: str | None = None,
    duration_ms: int = 0,
) -> Recording:
    """The record of one attempt, not yet written (its attempt row's id is chosen now, so a batch
    whose answer was lost can tell whether it was written: see :func:`write`)."""
    now = _t(db.now())
    return Recording(
        delivery_id, attempt_number, status, reason,
        state=(status.value, reason and reason.value, _t(next_attempt_at), provider, provider_message_id, now,
               delivery_id, attempt_number),
        attempt=(new_id(), outcome, error_class, error_message[:1000] if error_message else None, adapter,
                 provider_message_id, db.to_db_json(dict(provider_response or {})), int(duration_ms), now),
    )


def record(
    delivery_id: str, attempt_number: int, *, write_with: Callable[[Recording], Sequence[Any] | None] | None = None,
    **fields: Any,
) -> bool:
    """Write the attempt row and the delivery's new state in one transaction, guarded by the claim:
    only if the delivery is still dispatched with this attempt number. False when the claim was
    lost (the lease expired and another worker took the delivery): nothing is written then.
    ``fields``: :func:`recording`'s; ``write_with``: how to write it (:func:`write`, or a worker's
    group commit)."""
    entry = recording(delivery_id, attempt_number, **fields)
    with telemetry.span(
        "attempt_record", delivery_id=delivery_id, attempt=attempt_number, adapter=fields["adapter"],
        outcome=fields["outcome"], error_class=fields["error_class"], status=entry.status.value,
        reason=entry.reason and entry.reason.value,
    ) as result:
        row = (write_with or write)(entry)
        if not row:
            result["duplicate"] = True
            return False
    if entry.status in TERMINAL:
        _announce(delivery_id, row, entry.status, entry.reason)
    return True


def write(entry: Recording) -> Sequence[Any] | None:
    """Run one guarded state UPDATE and its attempt INSERT atomically: the delivery's (tenant_id,
    channel, adapter), or None when the claim was lost. A record whose batch failed comes here too;
    if that batch did commit (its answer was lost on the wire), the attempt row is there and this
    answers for it instead of calling the record lost."""
    if db.is_postgres():
        rows = db.run(_RECORD_BOTH, (*entry.state, *entry.attempt)).fetchall()
        if not rows:
            rows = db.execute(
                "SELECT d.tenant_id, d.channel, d.adapter FROM chimeway_delivery_attempts a "
                "JOIN chimeway_deliveries d ON d.id = a.delivery_id WHERE a.id = %s", (entry.attempt[0],),
            ).fetchall()
        return rows[0] if rows else None
    with db.transaction():
        rows = db.execute(_RECORD_STATE, entry.state).fetchall()
        if rows:
            db.execute(_RECORD_ATTEMPT, (entry.attempt[0], entry.delivery_id, entry.attempt_number, *entry.attempt[1:]))
    return rows[0] if rows else None


def record_many(entries: Sequence[Recording]) -> list[Sequence[Any] | None]:
    """PostgreSQL: :func:`write` for many records in one statement and one commit, each guarded by its
    own claim; the answers in the order of ``entries``."""
    rows = []
    for entry in entries:  # in _RECORD_MANY's column order
        status, reason, next_attempt_at, provider, message_id, now, delivery_id, attempt_number = entry.state
        attempt_id, outcome, error_class, error_message, adapter, _, response, duration_ms, _ = entry.attempt
        rows.append((delivery_id, attempt_number, status, reason, next_attempt_at, provider, message_id, now,
                     attempt_id, outcome, error_class, error_message, adapter, response, duration_ms))
    arrays = [db.array(column) for column in zip(*rows, strict=True)]
    written = {(found[0], found[1]): found[2:] for found in db.run(_RECORD_MANY, arrays).fetchall()}
    return [written.get((str(entry.delivery_id), entry.attempt_number)) for entry in entries]


# --- the other writers -----------------------------------------------------------------------------


def suppress(delivery_id: str, reason: Reason, *, now: datetime | None = None) -> bool:
    """Policy said never: suppressed(reason), unless the delivery is terminal or claimed."""
    return _finish(delivery_id, Status.SUPPRESSED, Reason(reason), _FREE, now)


def exhaust(delivery_id: str, *, now: datetime | None = None) -> bool:
    """cancelled(retries_exhausted): an unclaimed delivery whose attempt budget is spent (its final
    attempt failed, or a worker crashed during it). Never one with attempts left, whatever the broker's
    own retry count says: the durable attempt count is the only budget."""
    condition = f"(attempt_count >= max_attempts AND {_FREE})"
    return _finish(delivery_id, Status.CANCELLED, Reason.RETRIES_EXHAUSTED, condition, now)


def defer(delivery_id: str, until: datetime, *, now: datetime | None = None) -> bool:
    """Policy said later: deferred until ``until``; the status stays what it was."""
    now = now or db.now()
    cursor = db.execute(
        f"UPDATE chimeway_deliveries SET orchestration_state = 'deferred', next_eligible_at = %s, "
        f"updated_at = %s WHERE id = %s AND {_FREE}",
        (_t(until), _t(now), delivery_id, _t(now)),
    )
    return cursor.rowcount == 1


def redrive(
    delivery_id: str, *, reason: str, attempt_count: int, budget: int, tenant_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """An operator's redrive: cancelled(``reason``) back to pending, ready now, with ``budget`` more
    attempts on top of the ``attempt_count`` spent (attempt numbers continue). The one writer that
    leaves a terminal state; ``reason`` must be one of ``states.REDRIVABLE``. Guarded by the reason
    and attempt count the caller read, so of two concurrent redrives exactly one wins."""
    if reason not in REDRIVABLE or not valid_id(delivery_id):
        return False
    now = now or db.now()
    condition, extra = ("", ()) if tenant_id is None else (" AND tenant_id = %s", (tenant_id,))
    cursor = db.execute(
        "UPDATE chimeway_deliveries SET status = 'pending', reason = NULL, max_attempts = attempt_count + %s, "
        "orchestration_state = 'ready', next_eligible_at = NULL, next_attempt_at = NULL, lease_until = NULL, "
        "updated_at = %s WHERE id = %s AND status = 'cancelled' AND reason = %s AND attempt_count = %s"
        f"{condition}",
        (int(budget), _t(now), str(delivery_id), reason, int(attempt_count), *extra),
    )
    return cursor.rowcount == 1


def cancel(delivery_id: str, tenant_id: str | None = None) -> bool:
    """Cancel a delivery that has not been sent: True when this call cancelled it, False when it is
    already terminal or being sent right now. Raises DeliveryNotFound for an unknown id."""
    condition = _FREE if tenant_id is None else f"{_FREE} AND tenant_id = %s"
    extra = () if tenant_id is None else (tenant_id,)
    if _finish(delivery_id, Status.CANCELLED, Reason.CANCELLED_BY_USER, condition, None, extra):
        return True
    get_delivery(delivery_id, tenant_id)  # raises DeliveryNotFound when there is nothing to cancel
    return False


def mark_read(notification_id: str, tenant_id: str = "default") -> int:
    """Record that the notification was read (delayed fallbacks are then suppressed as already_read);
    returns how many deliveries were marked now. Only ``tenant_id``'s: notification ids are unique
    per tenant, so another tenant's notification with the same id is never touched."""
    if not valid_id(notification_id):
        return 0
    now = db.now()
    return db.execute(
        "UPDATE chimeway_deliveries SET read_at = %s, updated_at = %s "
        "WHERE notification_id = %s AND tenant_id = %s AND read_at IS NULL",
        [_t(now), _t(now), str(notification_id), tenant_id],
    ).rowcount


def _finish(
    delivery_id: str,
    status: Status,
    reason: Reason,
    condition: str,
    now: datetime | None,
    extra: Sequence[Any] = (),
) -> bool:
    """Move an unclaimed delivery to a terminal state, if ``condition`` (placeholder: now) holds."""
    if not valid_id(delivery_id):
        return False
    now = now or db.now()
    rows = db.execute(
        f"UPDATE chimeway_deliveries SET status = %s, reason = %s, lease_until = NULL, "
        f"next_attempt_at = NULL, updated_at = %s WHERE id = %s AND {condition}{_RETURNING}",
        (status.value, reason.value, _t(now), str(delivery_id), _t(now), *extra),
    ).fetchall()
    if rows:
        _announce(str(delivery_id), rows[0], status, reason)
    return bool(rows)


def _announce(delivery_id: str, row: Sequence[Any], status: Status, reason: Reason | None) -> None:
    """Telemetry for a delivery reaching a terminal state (metrics count deliveries by these)."""
    tenant_id, channel, adapter = row
    telemetry.emit(
        "delivery", "terminal", delivery_id=delivery_id, tenant_id=tenant_id, channel=channel,
        adapter=adapter, status=status.value, reason=reason and reason.value,
    )


# --- reading ---------------------------------------------------------------------------------------

#: Delivery's columns in model order, and how each value comes out of the database (None: as it is).
_FIELDS = Delivery._meta.sorted_fields
#: UUID columns come back as text: no uuid objects built per row only to be turned into strings.
_COLUMNS = ", ".join(
    f"CAST(d.{field.column_name} AS text)" if isinstance(field, UUIDText) else f"d.{field.column_name}"
    for field in _FIELDS
)


def _converter(field: Any) -> Any:
    if isinstance(field, UTCDateTime):
        return db.from_db_time
    if isinstance(field, JSON):
        return db.from_db_json
    if isinstance(field, UUIDText):
        return str
    if isinstance(field, peewee.BooleanField):
        return bool
    return None


_CONVERTERS = [(field.name, _converter(field)) for field in _FIELDS]

_FIND = f"SELECT {_COLUMNS} FROM chimeway_deliveries d WHERE d.id = %s"

#: The deliver actor's load: the row plus the facts the first policy rules need (``policy.FACTS_SQL``),
#: in one round trip. The facts match the recipient as stored; :func:`load` only keeps them when the
#: stored form is already normalized (else the rules query with every form of the address, as they
#: always did). Placeholders: now (suppression expiry), id.
_LOAD = db.Statement("chimeway_load", f"""
SELECT {_COLUMNS},
       {FACTS_SQL}
  FROM chimeway_deliveries d
 WHERE d.id = %s
""")


#: PostgreSQL: :data:`_LOAD` and, in the same statement, the claim — when the loaded facts alone say
#: the policy proceeds (``policy.PROCEEDS_BY_FACTS_SQL``, see :func:`load_and_claim`). The row comes
#: back as it was before the claim, with the facts, then ``sendable`` and the attempt number (NULL:
#: not claimed). Placeholders: _LOAD's, then _CLAIM's.
_LOAD_AND_CLAIM = db.Statement("chimeway_load_and_claim", f"""
WITH d AS MATERIALIZED (
    SELECT x.*, {PROCEEDS_BY_FACTS_SQL} AS sendable
      FROM ({_LOAD.text}) x
),
c AS ({_CLAIM_UPDATE} AND (SELECT d.sendable FROM d) RETURNING attempt_count)
SELECT d.*, (SELECT c.attempt_count FROM c) FROM d
""")


#: PostgreSQL: :data:`_LOAD_AND_CLAIM` for a batch of deliveries, one array per column (id, now, due,
#: lease_until), each claimed at its own time as it would be alone. The rows come back as
#: ``_LOAD_AND_CLAIM``'s, with the id asked for first.
_LOAD_AND_CLAIM_MANY = db.Statement("chimeway_load_and_claim_many", f"""
WITH r AS (
    SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
        AS r(r_id, r_now, r_due, r_lease)
),
d AS MATERIALIZED (
    SELECT x.*, {PROCEEDS_BY_FACTS_SQL} AS sendable
      FROM (SELECT {_COLUMNS}, {facts_sql("r.r_now")}, r.r_id, r.r_now, r.r_due, r.r_lease
              FROM r JOIN chimeway_deliveries d ON d.id = r.r_id) x
),
c AS ({_claim_update(now="k.r_now", due="k.r_due", lease_until="k.r_lease", which="id = k.r_id",
                     source=" FROM (SELECT r_id, r_now, r_due, r_lease FROM d WHERE sendable ORDER BY r_id) k")}
    RETURNING id, attempt_count)
SELECT CAST(d.r_id AS text), {", ".join(f"d.{field.column_name}" for field in _FIELDS)}, d.suppressed, d.enabled,
       d.sendable, c.attempt_count
  FROM d LEFT JOIN c ON c.id = d.r_id
""")


def load_and_claim_many(
    requests: Sequence[tuple[str, datetime]], *, lease_seconds: int
) -> list[tuple[Delivery | None, int | None]]:
    """PostgreSQL: :func:`load_and_claim` for many ``(delivery id, now)`` in one statement and one
    commit; the answers in the order of ``requests``. The ids must be distinct valid UUIDs."""
    ids, nows, dues, leases = [], [], [], []
    lease = timedelta(seconds=lease_seconds)
    for delivery_id, now in requests:
        at = _t(now)  # an aware UTC datetime (PostgreSQL): the offsets need no conversion of their own
        ids.append(str(delivery_id))
        nows.append(at)
        dues.append(at + DUE_TOLERANCE)
        leases.append(at + lease)
    arrays = [db.array(column) for column in (ids, nows, dues, leases)]
    found = {row[0]: row[1:] for row in db.run(_LOAD_AND_CLAIM_MANY, arrays).fetchall()}
    answers: list[tuple[Delivery | None, int | None]] = []
    for (_, now), key in zip(requests, ids, strict=True):
        row = found.get(key)
        answers.append((None, None) if row is None else _loaded(row, now))
    return answers


def _loaded(row: Sequence[Any], now: datetime) -> tuple[Delivery, int | None]:
    """The delivery and attempt of a ``_LOAD_AND_CLAIM`` row (columns, facts, sendable, attempt)."""
    attempt = row[len(_FIELDS) + 3]
    if attempt is None:
        return _with_facts(row, now), None
    delivery = _build(row)
    delivery.policy_facts = None  # claimed: no rule runs for this attempt
    return delivery, int(attempt)


def _build(row: Sequence[Any]) -> Delivery:
    """A Delivery from a row in model column order, as a select would build it (no query machinery)."""
    data = {}
    for (name, convert), value in zip(_CONVERTERS, row, strict=False):
        data[name] = value if convert is None or value is None else convert(value)
    return _model(data)


def _model(data: dict[str, Any]) -> Delivery:
    """A Delivery holding ``data`` (field name -> value), as peewee builds one from a query."""
    delivery = Delivery.__new__(Delivery)
    delivery.__data__ = data
    delivery._dirty = set()
    delivery.__rel__ = {}
    return delivery


def find(delivery_id: str, tenant_id: str | None = None) -> Delivery | None:
    """The delivery, or None (also for an id that is not a UUID)."""
    if not valid_id(delivery_id):
        return None
    text, params = _FIND, [str(delivery_id)]
    if tenant_id is not None:
        text += " AND d.tenant_id = %s"
        params.append(tenant_id)
    row = db.execute(text, params).fetchone()
    return None if row is None else _build(row)


def load(delivery_id: str, now: datetime) -> Delivery | None:
    """The delivery for one attempt, with :class:`PolicyFacts` at ``now`` attached as ``policy_facts``
    when they are exact (None otherwise: the rules then query). None for an unknown or invalid id."""
    if not valid_id(delivery_id):
        return None
    row = db.run(_LOAD, (_t(now), str(delivery_id))).fetchone()
    return None if row is None else _with_facts(row, now)


def load_and_claim(delivery_id: str, now: datetime, *, lease_seconds: int) -> tuple[Delivery | None, int | None]:
    """:func:`load`, and on PostgreSQL in the same statement :func:`claim` when the loaded facts alone
    say the policy proceeds. ``(delivery as loaded, attempt number)``; the attempt is None when
    nothing was claimed (the caller then runs the policy and claims as usual). Only for a policy
    whose rules all read those facts: ``chimeway.policy.decided_by_facts()``."""
    if not db.is_postgres():
        return load(delivery_id, now), None
    if not valid_id(delivery_id):
        return None, None
    at, due, key = _t(now), _t(now + DUE_TOLERANCE), str(delivery_id)
    row = db.run(
        _LOAD_AND_CLAIM, (at, key, _t(now + timedelta(seconds=lease_seconds)), at, key, at, due, due)
    ).fetchone()
    return (None, None) if row is None else _loaded(row, now)


def _with_facts(row: Sequence[Any], now: datetime) -> Delivery:
    """The delivery of a ``_LOAD`` row, with its PolicyFacts attached when they are exact."""
    delivery = _build(row)
    recipient = delivery.recipient
    facts = None
    if recipient == normalize_address(delivery.channel, recipient):
        suppressed, enabled = row[len(_FIELDS)], row[len(_FIELDS) + 1]
        facts = PolicyFacts(now=now, suppressed=bool(suppressed), enabled=True if enabled is None else bool(enabled))
    delivery.policy_facts = facts
    return delivery


def get_delivery(delivery_id: str, tenant_id: str | None = None) -> Delivery:
    """The delivery with that id (in that tenant, when given); raises DeliveryNotFound."""
    delivery = find(delivery_id, tenant_id)
    if delivery is None:
        where = f" in tenant {tenant_id!r}" if tenant_id is not None else ""
        raise DeliveryNotFound(f"no delivery {delivery_id}{where}")
    return delivery


def attempts(delivery_id: str) -> list[Attempt]:
    """The delivery's attempts, in order (numbers may skip one where a worker died mid-attempt)."""
    if not valid_id(delivery_id):
        return []
    return list(
        Attempt.select().where(Attempt.delivery_id == str(delivery_id)).order_by(Attempt.attempt_number)
    )
