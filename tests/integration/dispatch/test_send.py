"""send(): the row in the caller's transaction, the message after the outermost commit; the read
API; the deliver actor acting on policy decisions (SQLite and PostgreSQL, stub broker)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

import chimeway
from chimeway import db, policy
from chimeway.dispatch.enqueue import enqueue
from chimeway.errors import ConfigurationError, DeliveryNotFound
from chimeway.models import Delivery, new_id
from chimeway.states import Reason
from chimeway.testing import drain, start_worker


class Rollback(Exception):
    pass


def test_given_a_send_outside_a_transaction_then_the_row_is_pending_and_one_message_is_queued(runtime, queued):
    sent = chimeway.send("email", "ann@example.com", {"subject": "hi"}, metadata={"campaign": "x"}, category="news")
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.orchestration_state, row.attempt_count, row.max_attempts) == ("pending", "ready", 0, 5)
    assert (row.payload, row.metadata, row.category, row.adapter) == ({"subject": "hi"}, {"campaign": "x"}, "news", "fake")
    assert row.enqueued_at is not None
    assert queued() == 1


def test_given_a_send_inside_a_transaction_then_the_message_is_enqueued_only_after_the_outermost_commit(
    runtime, queued
):
    with runtime.database.atomic():
        with chimeway.database.atomic():
            sent = chimeway.send("email", "ann@example.com")
        assert queued() == 0  # the inner block ended; the outer transaction has not committed
        assert chimeway.get_delivery(sent.id).enqueued_at is None
    assert queued() == 1
    assert chimeway.get_delivery(sent.id).enqueued_at is not None


def test_given_a_rolled_back_transaction_then_nothing_is_stored_or_sent(runtime, worker, calls, queued):
    with pytest.raises(Rollback), runtime.database.atomic():
        sent = chimeway.send("email", "ann@example.com")
        raise Rollback
    assert queued() == 0
    assert drain(runtime) == []
    assert Delivery.select().where(Delivery.id == sent.id).count() == 0
    assert calls() == []


def test_given_an_idempotency_key_when_sent_twice_then_the_first_delivery_is_returned_and_one_message_sent(
    runtime, queued
):
    first = chimeway.send("email", "ann@example.com", idempotency_key="order-7")
    with runtime.database.atomic():  # a conflict must not abort the caller's transaction (PostgreSQL)
        second = chimeway.send("email", "ann@example.com", idempotency_key="order-7")
        other = chimeway.send("email", "ann@example.com", idempotency_key="order-7", tenant_id="acme")
    assert second.id == first.id and other.id != first.id
    assert queued() == 2  # first, and the other tenant's


def test_given_a_notification_when_the_same_channel_is_sent_twice_then_the_first_delivery_is_returned(runtime, queued):
    notification = new_id()
    email = chimeway.send("email", "ann@example.com", notification_id=notification)
    sms = chimeway.send("sms", "+15550100", notification_id=notification)
    again = chimeway.send("email", "ann@example.com", notification_id=notification)
    assert again.id == email.id and sms.id != email.id and sms.notification_id == email.notification_id
    assert queued() == 2


def test_given_a_notification_id_of_another_tenant_when_sending_then_it_gets_its_own_delivery(runtime, queued):
    # Given acme's notification; when globex happens to send with the same id on the same channel
    notification = new_id()
    acme = chimeway.send("email", "ann@example.com", notification_id=notification, tenant_id="acme")
    globex = chimeway.send("email", "bob@example.com", notification_id=notification, tenant_id="globex")
    # Then globex's send neither fails (which would reveal acme's) nor returns acme's delivery
    assert globex.id != acme.id and (globex.tenant_id, globex.recipient) == ("globex", "bob@example.com")
    again = chimeway.send("email", "bob@example.com", notification_id=notification, tenant_id="globex")
    assert again.id == globex.id  # within one tenant the key still dedupes
    assert queued() == 2


def test_given_an_unknown_adapter_when_sending_then_the_error_names_the_known_adapters(runtime):
    with pytest.raises(ConfigurationError, match="known adapters: .*fake"):
        chimeway.send("email", "ann@example.com", adapter="nope")


def test_given_a_fresh_enqueue_of_the_same_delivery_within_60_s_then_it_is_dropped_unless_dedupe_is_bypassed(
    runtime, create, queued
):
    delivery = create()
    assert enqueue(delivery.id) is True
    assert enqueue(delivery.id) is False
    assert queued() == 1
    assert enqueue(delivery.id, dedupe=False) is True
    assert queued() == 2


def test_given_no_such_delivery_when_enqueued_then_nothing_is_sent(runtime, queued):
    assert enqueue(new_id(), dedupe=False) is False
    assert queued() == 0


def test_given_a_pending_delivery_when_cancelled_then_it_is_cancelled_by_user_and_never_sent(runtime, calls):
    with runtime.database.atomic():
        sent = chimeway.send("email", "ann@example.com")
        assert chimeway.cancel(sent.id) is True
    assert chimeway.cancel(sent.id) is False  # already terminal
    with start_worker(runtime):
        assert drain(runtime) == []
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.suppression_reason) == ("cancelled", "cancelled_by_user")
    assert calls(sent.id) == []
    with pytest.raises(DeliveryNotFound):
        chimeway.cancel(new_id())


def test_given_a_tenant_when_reading_a_delivery_of_another_tenant_then_it_is_not_found(runtime):
    sent = chimeway.send("email", "ann@example.com", tenant_id="acme")
    assert chimeway.get_delivery(sent.id, tenant_id="acme").id == sent.id
    with pytest.raises(DeliveryNotFound):
        chimeway.deliveries.get_delivery(sent.id, tenant_id="other")
    with pytest.raises(DeliveryNotFound):
        chimeway.get_delivery("not-a-uuid")
    assert chimeway.attempts("not-a-uuid") == []


def test_given_a_notification_when_marked_read_then_its_deliveries_get_read_at_once(runtime):
    notification = new_id()
    chimeway.send("email", "ann@example.com", notification_id=notification)
    chimeway.send("sms", "+15550100", notification_id=notification)
    assert chimeway.mark_read(notification) == 2
    assert chimeway.mark_read(notification) == 0
    assert all(d.read_at is not None for d in Delivery.select().where(Delivery.notification_id == notification))


@pytest.fixture
def rule():
    """Register one extra policy rule for the test; back to the built-ins afterwards."""
    names = []

    def add(fn):
        names.append(policy.register(fn))

    yield add
    for name in names:
        policy.unregister(name)


def test_given_a_policy_suppression_when_delivered_then_suppressed_with_its_reason_and_no_call(
    runtime, worker, calls, rule
):
    def no_marketing(delivery, now):
        return policy.Suppress(Reason.CHANNEL_DISABLED) if delivery.category == "marketing" else policy.Proceed()

    rule(no_marketing)
    sent = chimeway.send("email", "ann@example.com", category="marketing")
    assert drain(runtime) == []
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.suppression_reason) == ("suppressed", "channel_disabled")
    assert calls(sent.id) == [] and chimeway.attempts(sent.id) == []


def test_given_a_policy_deferral_when_delivered_then_it_waits_deferred_and_is_sent_once_due(
    runtime, worker, calls, rule
):
    until = db.now() + timedelta(milliseconds=1200)

    def quiet_until(delivery, now):
        return policy.Defer(until) if now < until else policy.Proceed()

    rule(quiet_until)
    sent = chimeway.send("email", "ann@example.com")
    deadline = time.monotonic() + 5
    while chimeway.get_delivery(sent.id).orchestration_state != "deferred" and time.monotonic() < deadline:
        time.sleep(0.02)
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.orchestration_state, row.next_eligible_at) == ("pending", "deferred", until)
    assert drain(runtime) == []
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.orchestration_state) == ("succeeded", "ready")
    assert len(calls(sent.id)) == 1
    assert chimeway.attempts(sent.id)[0].created_at >= until


def test_given_the_broker_is_unreachable_when_sending_then_the_row_is_committed_and_a_warning_names_the_sweep(
    sqlite_url, caplog
):
    from chimeway import runtime as runtime_mod
    from chimeway.migrator import migrate

    # Nothing listens on port 1: every Redis command is refused, for real.
    configured = runtime_mod.configure(database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0",
                                       default_adapter="fake", environ={})
    try:
        migrate(configured.database)
        with caplog.at_level(logging.WARNING, logger="chimeway"):
            sent = chimeway.send("email", "ann@example.com")
        row = chimeway.get_delivery(sent.id)
        assert (row.status, row.enqueued_at) == ("pending", None)
        assert any(sent.id in r.getMessage() and "sweep" in r.getMessage() for r in caplog.records)
    finally:
        runtime_mod.reset()
