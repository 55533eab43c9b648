"""Retention tests: history written through the models with chosen ages (INSERT is always allowed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chimeway import db
from chimeway.models import Attempt, Delivery, Event, new_id


@pytest.fixture
def history(configured: Any) -> Callable[..., str]:
    """``history(status, days=…, event_days=…)``: a delivery last changed ``days`` ago with one
    attempt and one ledger event as old (the event ``event_days`` old if given); its id."""

    def create(status: str, days: float, event_days: float | None = None, tenant: str = "default") -> str:
        at = db.now() - timedelta(days=days)
        delivery = Delivery.create(
            tenant_id=tenant, notification_id=new_id(), channel="email", recipient="ann@example.com",
            adapter="log", status=status, attempt_count=1, created_at=at, updated_at=at,
        )
        Attempt.create(delivery_id=delivery.id, attempt_number=1, outcome="succeeded", adapter="log", created_at=at)
        event_at = at if event_days is None else db.now() - timedelta(days=event_days)
        Event.create(
            tenant_id=tenant, delivery_id=delivery.id, type="delivered", provider="log",
            occurred_at=event_at, received_at=event_at,
        )
        return delivery.id

    return create


@pytest.fixture
def orphan(configured: Any) -> Callable[[float], str]:
    """``orphan(days)``: a ledger event received ``days`` ago that no delivery claimed; its id."""

    def create(days: float) -> str:
        at = db.now() - timedelta(days=days)
        return Event.create(
            delivery_id=None, type="opened", provider="postmark", provider_message_id=f"pm-{new_id()}",
            occurred_at=at, received_at=at, needs_reconciliation=True,
        ).id

    return create

