"""The operator record: an append-only log of what an operator did to a delivery.

This module owns ``chimeway_operator_actions`` (migration 0006) and is the only one that writes it.
A row says who (``actor``), when, why (``reason``, free text) and what (``action``: ``redrive`` or
``cancel``), with ``data`` holding the state the action replaced (the previous reason, the attempts
spent, the budget given), so the timeline can still tell what happened before a redrive. The table
refuses UPDATE and DELETE (SQLSTATE 45A01), as the attempts and the ledger do.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import peewee

from chimeway import db
from chimeway.models import JSON, BaseModel, UTCDateTime, UUIDText, new_id

__all__ = ["Action", "OperatorAction", "for_delivery", "write"]

#: The longest ``actor`` or ``reason`` kept: they are typed by people, and shown on one line.
MAX_TEXT = 500


class Action(StrEnum):
    REDRIVE = "redrive"  #: a cancelled delivery went back to pending with a new attempt budget
    CANCEL = "cancel"  #: an operator cancelled a delivery that had not been sent


class OperatorAction(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField()
    delivery_id = UUIDText()
    action = peewee.TextField()
    actor = peewee.TextField()
    reason = peewee.TextField(null=True)
    data = JSON(default=dict)
    created_at = UTCDateTime(default=db.now)

    class Meta:
        table_name = "chimeway_operator_actions"


def write(
    action: Action,
    *,
    delivery_id: str,
    tenant_id: str,
    actor: str,
    reason: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> OperatorAction:
    """Append one action; joins the caller's transaction, so it commits with the change it records."""
    return OperatorAction.create(
        tenant_id=tenant_id,
        delivery_id=str(delivery_id),
        action=Action(action).value,
        actor=(actor or "unknown")[:MAX_TEXT],
        reason=reason[:MAX_TEXT] if reason else None,
        data=dict(data or {}),
        created_at=db.now(),
    )


def for_delivery(delivery_id: str) -> list[OperatorAction]:
    """The delivery's actions, oldest first."""
    query = OperatorAction.select().where(OperatorAction.delivery_id == str(delivery_id))
    return list(query.order_by(OperatorAction.created_at, OperatorAction.id))
