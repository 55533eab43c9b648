"""Operator actions on deliveries: redrive (send a given-up delivery again) and cancel, each recorded.

A delivery cancelled with reason ``retries_exhausted`` or ``permanent_failure`` (a provider key fixed,
an outage over) goes back to ``pending`` with a new attempt budget on top of the attempts spent, and
is enqueued after commit. It is the one documented exception to "terminal states never change": an
operator's act, written to the operator record (who, when, why) in the same transaction, and shown
in the timeline. The state change is :func:`chimeway.store.deliveries.redrive`, a conditional UPDATE: of
two concurrent redrives of one delivery, one wins and the other raises NotRedrivableError.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chimeway import db
from chimeway.errors import NotRedrivableError
from chimeway.models import Delivery
from chimeway.ops import operator_record
from chimeway.states import REDRIVABLE
from chimeway.store import deliveries
from chimeway.wiring.config import MAX_ATTEMPTS_LIMIT
from chimeway.wiring.runtime_type import Runtime

__all__ = ["RedriveReport", "cancel_by_operator", "candidates", "default_actor", "redrive", "redrive_many"]


def default_actor() -> str:
    """Who acts when the caller does not say: the operating-system user of this process."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container running as an arbitrary uid)
        return "user:unknown"


def redrive(
    delivery_id: str,
    *,
    max_attempts: int | None = None,
    tenant_id: str | None = None,
    actor: str | None = None,
    why: str | None = None,
    runtime: Runtime,
) -> Delivery:
    """Send a delivery cancelled(retries_exhausted | permanent_failure) again: pending, with
    ``max_attempts`` more attempts (default: its original budget) on top of those spent. Enqueued
    after the outermost commit. Returns the delivery as redriven (pending).

    Raises DeliveryNotFound for an unknown id (or one of another tenant), NotRedrivableError for any
    other state, ValueError for a budget outside 1–100; nothing changes then.
    """
    budget = None if max_attempts is None else _budget(max_attempts)
    with db.transaction(runtime.database):
        delivery = deliveries.get_delivery(delivery_id, tenant_id)
        if delivery.status != "cancelled" or delivery.reason not in REDRIVABLE:
            raise NotRedrivableError(delivery.id, delivery.status, delivery.reason)
        history = operator_record.for_delivery(delivery.id)
        if budget is None:
            budget = original_budget(delivery, history)
        won = deliveries.redrive(
            delivery.id, reason=delivery.reason, attempt_count=delivery.attempt_count, budget=budget,
            tenant_id=tenant_id,
        )
        if not won:  # another redrive (or nothing we know of) changed it since we read it
            current = deliveries.get_delivery(delivery.id)
            raise NotRedrivableError(current.id, current.status, current.reason)
        operator_record.write(
            operator_record.Action.REDRIVE,
            delivery_id=delivery.id,
            tenant_id=delivery.tenant_id,
            actor=actor or default_actor(),
            reason=why,
            data={
                "previous_reason": delivery.reason,
                "cancelled_at": delivery.updated_at.isoformat(),
                "attempts_spent": delivery.attempt_count,
                "max_attempts_before": delivery.max_attempts,
                "budget": budget,
            },
        )
        from chimeway.dispatch.send import _enqueue_after_commit

        # Read before the commit: once enqueued, a worker may already be sending it.
        redriven = deliveries.get_delivery(delivery.id)
        # No fresh-send dedupe: a redrive within a minute of the first send must still go out.
        runtime.database.after_commit(lambda: _enqueue_after_commit(runtime, redriven, dedupe=False))
        return redriven


def original_budget(delivery: Delivery, history: list[operator_record.OperatorAction]) -> int:
    """The budget the delivery was sent with: its max_attempts before its first redrive."""
    for action in history:
        if action.action == operator_record.Action.REDRIVE and "max_attempts_before" in action.data:
            return int(action.data["max_attempts_before"])
    return delivery.max_attempts


def _budget(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, not {value!r}")
    return value


@dataclass
class RedriveReport:
    matched: list[str] = field(default_factory=list)  #: ids that matched the filter
    redriven: list[str] = field(default_factory=list)  #: of which this call redrove (none on a dry run)
    skipped: list[str] = field(default_factory=list)  #: changed by someone else between the scan and the redrive


def candidates(
    *, reason: str, since: datetime, adapter: str | None = None, tenant_id: str | None = None
) -> list[str]:
    """Ids of deliveries cancelled(``reason``) since ``since`` (by their last change), oldest first."""
    if reason not in REDRIVABLE:
        raise ValueError(f"reason must be one of {', '.join(sorted(REDRIVABLE))}, not {reason!r}")
    text = "SELECT CAST(id AS text) FROM chimeway_deliveries WHERE status = 'cancelled' AND reason = %s AND updated_at >= %s"
    params: list[Any] = [reason, db.to_db_time(since)]
    for column, value in (("adapter", adapter), ("tenant_id", tenant_id)):
        if value is not None:
            text += f" AND {column} = %s"
            params.append(value)
    return [row[0] for row in db.execute(text + " ORDER BY updated_at, id", params).fetchall()]


def redrive_many(
    *,
    reason: str,
    since: datetime,
    adapter: str | None = None,
    tenant_id: str | None = None,
    max_attempts: int | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    why: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    runtime: Runtime,
) -> RedriveReport:
    """Redrive every delivery :func:`candidates` finds, one transaction each (the morning after a
    provider outage). ``progress(done, total)`` is called after each one."""
    if max_attempts is not None:
        _budget(max_attempts)
    report = RedriveReport(matched=candidates(reason=reason, since=since, adapter=adapter, tenant_id=tenant_id))
    if dry_run:
        return report
    for done, delivery_id in enumerate(report.matched, start=1):
        try:
            redrive(delivery_id, max_attempts=max_attempts, tenant_id=tenant_id, actor=actor, why=why, runtime=runtime)
            report.redriven.append(delivery_id)
        except NotRedrivableError:
            report.skipped.append(delivery_id)
        if progress is not None:
            progress(done, len(report.matched))
    return report


def cancel_by_operator(delivery_id: str, *, actor: str, why: str | None = None, tenant_id: str | None = None) -> bool:
    """:func:`chimeway.cancel`, written to the operator record when it cancels (the console's button)."""
    with db.transaction():
        delivery = deliveries.get_delivery(delivery_id, tenant_id)
        if not deliveries.cancel(delivery.id, tenant_id):
            return False
        operator_record.write(
            operator_record.Action.CANCEL, delivery_id=delivery.id, tenant_id=delivery.tenant_id, actor=actor,
            reason=why, data={"previous_status": delivery.status},
        )
    return True
