"""The timeline: every kind of entry appears where it should, oldest first."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import chimeway
from chimeway import db
from chimeway.errors import DeliveryNotFound
from chimeway.ops.history import TimelineEntry
from chimeway.store import deliveries
from chimeway.testing import drain


def kinds(delivery_id, **options) -> list[str]:
    return [entry.kind for entry in chimeway.timeline(delivery_id, **options)]


def test_given_retries_exhaustion_and_a_redrive_then_every_step_is_listed_in_order(runtime, worker):
    delivery = chimeway.send("email", "ada@example.com", {"fake_outcomes": ["temporary", "crash", "ok"]},
                             max_attempts=2, adapter="fake")
    drain(runtime)
    chimeway.redrive(delivery.id, actor="test:ops", why="outage over")
    drain(runtime)

    entries = chimeway.timeline(delivery.id)
    assert [e.kind for e in entries] == ["created", "attempt", "attempt", "cancelled", "redriven", "attempt"]
    assert all(isinstance(e, TimelineEntry) and e.at.tzinfo is not None for e in entries)
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert entries[1].summary.startswith("attempt 1 via fake: temporary")
    assert entries[2].summary.endswith("FakeCrash: fake: scripted crash")  # the exception raised
    assert entries[2].data["error_class"] == "unknown_classification"
    assert entries[3].summary == "cancelled: retries_exhausted"
    assert "test:ops" in entries[4].summary and "outage over" in entries[4].summary
    text = repr([e.as_dict() for e in entries])
    assert "ada@example.com" not in text and "fake_outcomes" not in text  # redacted


def test_given_a_failed_attempt_with_a_retry_then_the_summary_says_when(runtime, create):
    delivery = create(["temporary"])
    deliveries.claim(delivery.id, lease_seconds=60)
    retry_at = db.now() + timedelta(minutes=3)
    deliveries.record(delivery.id, 1, outcome="failed", error_class="temporary", adapter="fake",
                      status=deliveries.Status.FAILED, next_attempt_at=retry_at, provider_response={"status": 503})
    [_, attempt] = chimeway.timeline(delivery.id)
    assert attempt.summary == f"attempt 1 via fake: temporary (503), retry at {retry_at:%H:%M:%S}"


def test_given_policy_decisions_then_suppressed_and_deferred_appear(runtime, create):
    suppressed, deferred = create(), create()
    deliveries.suppress(suppressed.id, deliveries.Reason.RECIPIENT_SUPPRESSED)
    deliveries.defer(deferred.id, db.now() + timedelta(hours=1))
    assert kinds(suppressed.id) == ["created", "suppressed"]
    assert kinds(deferred.id) == ["created", "deferred"]
    assert chimeway.timeline(suppressed.id)[1].summary == "suppressed: recipient_suppressed"


def test_given_a_scheduled_send_then_the_timeline_says_when_it_was_scheduled_for(runtime, create):
    at = (db.now() + timedelta(hours=2)).replace(microsecond=0)
    delivery = chimeway.send("email", "ada@example.com", {"fake_outcomes": ["ok"]}, adapter="fake", send_at=at)
    created, waiting = chimeway.timeline(delivery.id)
    assert created.summary.endswith(f", scheduled for {at.isoformat()}") and created.data["send_at"] == at.isoformat()
    assert (waiting.kind, waiting.summary) == ("deferred", f"waiting for its scheduled time until {at.isoformat()}")
    assert "scheduled" not in chimeway.timeline(create().id)[0].summary  # a send without a time


def test_given_a_scheduled_send_once_sent_then_the_timeline_still_says_when_it_was_scheduled_for(runtime, worker):
    at = db.now() + timedelta(milliseconds=200)
    delivery = chimeway.send("email", "ada@example.com", {"fake_outcomes": ["ok"]}, adapter="fake", send_at=at)
    time.sleep(0.3)
    drain(runtime)
    entries = chimeway.timeline(delivery.id)
    assert [e.kind for e in entries] == ["created", "attempt"]
    assert entries[0].data["send_at"] == at.isoformat() and "scheduled for" in entries[0].summary


def test_given_a_user_cancel_then_cancelled_appears(runtime, create):
    delivery = create()
    chimeway.cancel(delivery.id)
    assert kinds(delivery.id) == ["created", "cancelled"]


def test_given_events_and_a_reconciled_orphan_then_both_appear(runtime, create):
    from chimeway.models import Event, new_id

    delivery = create()
    early = db.now() - timedelta(minutes=5)
    orphan = Event.create(tenant_id="default", type="delivered", provider="postmark", provider_message_id="pm-1",
                          occurred_at=early, received_at=early, needs_reconciliation=True)
    Event.create(tenant_id="default", delivery_id=delivery.id, type="opened", provider="postmark",
                 provider_message_id="pm-1", occurred_at=db.now())
    Event.create(tenant_id="default", delivery_id=delivery.id, type="reconciled", provider="postmark",
                 provider_message_id="pm-1", occurred_at=db.now(), idempotency_key=f"reconciled:{orphan.id}",
                 metadata={"orphan_id": orphan.id, "orphan_type": "delivered"}, id=new_id())
    entries = chimeway.timeline(delivery.id)
    assert [e.kind for e in entries] == ["event", "created", "event", "reconciled"]
    assert "orphan" in entries[0].summary and entries[0].data["type"] == "delivered"


def test_given_another_tenant_when_asking_then_not_found(runtime, create):
    delivery = create()
    with pytest.raises(DeliveryNotFound):
        chimeway.timeline(delivery.id, tenant_id="acme")
    assert kinds(delivery.id, tenant_id="default") == ["created"]
