"""Reconcile's projection: the same rules as ingest, for several orphans of one delivery in one batch
(on PostgreSQL they are applied by the batch's single statement, on SQLite by the shared projection)."""

from __future__ import annotations

from datetime import timedelta

from chimeway import db
from chimeway.api import reconcile
from chimeway.models import Delivery, Event
from chimeway.webhooks import reconciler


def test_several_orphans_of_one_delivery_project_by_occurred_at_and_bump_the_version_once(
    webhooks, make_delivery, orphan
) -> None:
    base = db.now() - timedelta(hours=2)
    orphan("postmark", "pm-many", event_type="opened", occurred_at=base + timedelta(minutes=5), age_seconds=3000)
    orphan("postmark", "pm-many", event_type="delivered", occurred_at=base, age_seconds=3500)
    orphan("postmark", "pm-many", event_type="opened", occurred_at=base + timedelta(minutes=9), age_seconds=3400)
    delivery = make_delivery("postmark", "pm-many", status="succeeded")

    assert reconcile() == reconciler.ReconcileResult(scanned=3, linked=3)

    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.last_event_at) == ("opened", base + timedelta(minutes=9))
    assert (row.delivered_at, row.opened_at) == (base, base + timedelta(minutes=5))  # set once: the earliest
    assert (row.status, row.lock_version) == ("succeeded", 1)
    assert Event.select().where(Event.type == "reconciled").count() == 3


def test_a_late_delivered_orphan_never_moves_the_pointer_back_nor_rewrites_a_terminal_status(
    webhooks, make_delivery, orphan
) -> None:
    base = db.now() - timedelta(hours=2)
    orphan("postmark", "pm-late", event_type="bounced", reject_reason="bounced", occurred_at=base + timedelta(minutes=1))
    delivery = make_delivery("postmark", "pm-late", status="failed")
    assert reconcile().linked == 1
    orphan("postmark", "pm-late", event_type="delivered", occurred_at=base, age_seconds=120)
    assert reconcile().linked == 1

    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.last_event_at) == ("bounced", base + timedelta(minutes=1))
    assert (row.bounced_at, row.delivered_at) == (base + timedelta(minutes=1), base)
    assert (row.status, row.lock_version) == ("failed", 2)
