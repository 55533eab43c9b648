"""The timeline of one delivery: what happened to it, oldest first, from what is already stored.

Built on read from the delivery row, its attempts, its ledger events (with the orphans a reconcile
linked to it) and the operator record; nothing extra is written on the hot path to keep it. The row
holds only its latest state, so a policy decision (``suppressed``, ``deferred``) or a cancellation
appears at the row's last change; a cancellation that a redrive undid is kept by the redrive's
operator record (the reason and time it replaced).

Entry data is redacted as attempts are: ids, outcomes, error classes and the provider's redacted
summary; never a recipient, a payload or a provider event's raw metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chimeway import db
from chimeway.models import Delivery, Event
from chimeway.ops import operator_record
from chimeway.ops.operator_record import Action
from chimeway.store import deliveries

__all__ = ["KINDS", "TimelineEntry", "timeline"]

#: Every kind of entry, in the order entries at the same instant are listed.
KINDS = ("created", "deferred", "attempt", "event", "reconciled", "suppressed", "cancelled", "redriven")


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime  #: aware, UTC
    kind: str  #: one of KINDS
    summary: str  #: one human line
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "summary": self.summary, "data": self.data}


def timeline(delivery_id: str, *, tenant_id: str | None = None) -> list[TimelineEntry]:
    """The delivery's entries, oldest first. Raises DeliveryNotFound (also for another tenant's id)."""
    delivery = deliveries.get_delivery(delivery_id, tenant_id)
    actions = operator_record.for_delivery(delivery.id)
    entries = [_created(delivery, actions), *_attempts(delivery), *_events(delivery.id), *_actions(actions)]
    entries += _state(delivery, actions)
    rank = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(entries, key=lambda entry: (entry.at, rank[entry.kind]))


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at else "?"


def _created(delivery: Delivery, actions: list[operator_record.OperatorAction]) -> TimelineEntry:
    from chimeway.ops.operations import original_budget

    budget = original_budget(delivery, actions)  # a redrive has raised the row's max_attempts since
    data = {
        "tenant_id": delivery.tenant_id, "notification_id": delivery.notification_id, "channel": delivery.channel,
        "adapter": delivery.adapter, "max_attempts": budget,
    }
    summary = f"created: {delivery.channel} via {delivery.adapter}, {budget} attempt{'' if budget == 1 else 's'} allowed"
    if delivery.send_at is not None:  # send_at= / delay=: kept on the row after it was sent
        data["send_at"] = delivery.send_at.isoformat()
        summary += f", scheduled for {delivery.send_at.isoformat()}"
    return TimelineEntry(delivery.created_at, "created", summary, data)


def _attempts(delivery: Delivery) -> list[TimelineEntry]:
    rows = deliveries.attempts(delivery.id)
    entries = []
    for row in rows:
        data = {
            "attempt": row.attempt_number, "outcome": row.outcome, "error_class": row.error_class,
            "error_message": row.error_message, "adapter": row.adapter,
            "provider_message_id": row.provider_message_id, "provider_response": row.provider_response,
            "duration_ms": row.duration_ms,
        }
        summary = f"attempt {row.attempt_number} via {row.adapter}: {row.error_class or row.outcome}"
        code = row.provider_response.get("status") or row.provider_response.get("smtp_code")
        if code:
            summary += f" ({code})"
        if row.error_class == "unknown_classification" and row.error_message:
            summary += f": {row.error_message}"  # the exception type and message the adapter raised
        last = row is rows[-1]
        if last and delivery.status == "failed" and delivery.next_attempt_at is not None:
            summary += f", retry at {_clock(delivery.next_attempt_at)}"
        entries.append(TimelineEntry(row.created_at, "attempt", summary, data))
    return entries


def _event_data(event: Event) -> dict[str, Any]:
    return {
        "type": event.type, "provider": event.provider, "provider_event_id": event.provider_event_id,
        "provider_message_id": event.provider_message_id, "reject_reason": event.reject_reason,
        "received_at": event.received_at.isoformat(),
    }


def _event(event: Event, note: str = "") -> TimelineEntry:
    summary = f"{event.provider} reported {event.type}" + (f" ({event.reject_reason})" if event.reject_reason else "")
    return TimelineEntry(event.occurred_at, "event", summary + note, _event_data(event))


def _events(delivery_id: str) -> list[TimelineEntry]:
    linked = list(Event.select().where(Event.delivery_id == delivery_id))
    reconciled = [e for e in linked if e.type == "reconciled"]
    orphan_ids = [e.metadata.get("orphan_id") for e in reconciled if e.metadata.get("orphan_id")]
    orphans = {o.id: o for o in Event.select().where(Event.id.in_(orphan_ids))} if orphan_ids else {}
    entries = [_event(e) for e in linked if e.type != "reconciled"]
    for link in reconciled:
        orphan = orphans.get(str(link.metadata.get("orphan_id")))
        if orphan is not None:
            entries.append(_event(orphan, ", before the delivery was committed (orphan)"))
        summary = f"reconcile linked an orphan {link.metadata.get('orphan_type', 'event')} event"
        data = {"orphan_id": link.metadata.get("orphan_id"), "orphan_type": link.metadata.get("orphan_type")}
        entries.append(TimelineEntry(link.received_at, "reconciled", summary, data))
    return entries


def _actions(actions: list[operator_record.OperatorAction]) -> list[TimelineEntry]:
    entries = []
    for action in actions:
        why = f" ({action.reason})" if action.reason else ""
        data = {"actor": action.actor, "why": action.reason, **action.data}
        if action.action == Action.REDRIVE:
            # The cancellation the redrive undid is no longer on the row: the record kept it.
            cancelled_at = db.from_db_time(action.data.get("cancelled_at")) or action.created_at
            previous = action.data.get("previous_reason")
            entries.append(TimelineEntry(cancelled_at, "cancelled", f"cancelled: {previous}", {"reason": previous}))
            budget = action.data.get("budget")
            summary = (f"redriven by {action.actor}: {budget} more attempt{'' if budget == 1 else 's'} after "
                       f"{action.data.get('attempts_spent')} spent{why}")
            entries.append(TimelineEntry(action.created_at, "redriven", summary, data))
    return entries


def _state(delivery: Delivery, actions: list[operator_record.OperatorAction]) -> list[TimelineEntry]:
    """The decision the row holds now: suppressed, cancelled, or deferred until a time."""
    at, reason = delivery.updated_at, delivery.reason
    if delivery.status == "suppressed":
        return [TimelineEntry(at, "suppressed", f"suppressed: {reason}", {"reason": reason})]
    if delivery.status == "cancelled":
        summary, data = f"cancelled: {reason}", {"reason": reason}
        cancels = [a for a in actions if a.action == Action.CANCEL]
        if reason == "cancelled_by_user" and cancels:
            who = cancels[-1]
            summary += f" by {who.actor}" + (f" ({who.reason})" if who.reason else "")
            data.update(actor=who.actor, why=who.reason)
        return [TimelineEntry(at, "cancelled", summary, data)]
    if delivery.orchestration_state == "deferred" and delivery.next_eligible_at is not None:
        until = delivery.next_eligible_at
        why = "waiting for its scheduled time" if until == delivery.send_at else "deferred by policy"
        return [TimelineEntry(at, "deferred", f"{why} until {until.isoformat()}", {"until": until.isoformat()})]
    return []
