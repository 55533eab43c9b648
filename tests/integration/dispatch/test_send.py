"""send(): the row in the caller's transaction, the message after the outermost commit; the read
API; the deliver actor acting on policy decisions (SQLite and PostgreSQL, stub broker)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta

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
    assert enqueue(delivery.id, runtime=runtime) is True
    assert enqueue(delivery.id, runtime=runtime) is False
    assert queued() == 1
    assert enqueue(delivery.id, dedupe=False, runtime=runtime) is True
    assert queued() == 2


def test_given_no_such_delivery_when_enqueued_then_nothing_is_sent(runtime, queued):
    assert enqueue(new_id(), dedupe=False, runtime=runtime) is False
    assert queued() == 0


def test_given_a_pending_delivery_when_cancelled_then_it_is_cancelled_by_user_and_never_sent(runtime, calls):
    with runtime.database.atomic():
        sent = chimeway.send("email", "ann@example.com")
        assert chimeway.cancel(sent.id) is True
    assert chimeway.cancel(sent.id) is False  # already terminal
    with start_worker(runtime):
        assert drain(runtime) == []
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.reason) == ("cancelled", "cancelled_by_user")
    assert calls(sent.id) == []
    with pytest.raises(DeliveryNotFound):
        chimeway.cancel(new_id())


def test_given_a_tenant_when_reading_a_delivery_of_another_tenant_then_it_is_not_found(runtime):
    sent = chimeway.send("email", "ann@example.com", tenant_id="acme")
    assert chimeway.get_delivery(sent.id, tenant_id="acme").id == sent.id
    with pytest.raises(DeliveryNotFound):
        chimeway.store.deliveries.get_delivery(sent.id, tenant_id="other")
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
    assert (row.status, row.reason) == ("suppressed", "channel_disabled")
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
    from chimeway.store.migrator import migrate
    from chimeway.wiring import runtime as runtime_mod

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


# --- send() refuses what it cannot deliver ---------------------------------------------------------

SECRET = "s3cret-value"


class Unserializable:
    """An object JSON has no form for (the old code stored its str(), an address)."""


def _circular():
    payload = {"note": SECRET}
    payload["self"] = payload
    return payload


REFUSED = [
    ({"channel": ""}, "channel"),
    ({"channel": "   "}, "channel"),
    ({"channel": None}, "channel"),
    ({"recipient": ""}, "recipient"),
    ({"recipient": " \t\n"}, "recipient"),
    ({"recipient": None}, "recipient"),
    ({"recipient": f"{SECRET}\x00@example.com"}, "recipient"),
    ({"recipient": f"{SECRET}\ud800@example.com"}, "recipient"),
    ({"tenant_id": " "}, "tenant_id"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"payload": [SECRET]}, "payload"),
    ({"payload": SECRET}, "payload"),
    ({"payload": {"at": Unserializable()}}, "payload"),
    ({"payload": {"at": datetime(2026, 1, 1, tzinfo=UTC)}}, "payload"),
    ({"payload": {"n": math.nan}}, "payload"),
    ({"payload": {"n": math.inf}}, "payload"),
    ({"payload": {"deep": [{"n": -math.inf}]}}, "payload"),
    ({"payload": {"text": f"{SECRET}\x00"}}, "payload"),
    ({"payload": {"text": f"{SECRET}\udc00"}}, "payload"),
    ({"payload": {(SECRET, 1): "tuple key"}}, "payload"),
    ({"payload": _circular()}, "payload"),
    ({"payload": {"text": "x" * 262_144}}, "payload"),
    ({"metadata": [SECRET]}, "metadata"),
    ({"metadata": {"n": math.nan}}, "metadata"),
    ({"metadata": {"at": Unserializable()}}, "metadata"),
    ({"metadata": {"text": "x" * 262_144}}, "metadata"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 101}, "max_attempts"),
    ({"max_attempts": "3"}, "max_attempts"),
    ({"max_attempts": 2.5}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"notification_id": "not-a-uuid"}, "notification_id"),
]


def _send(**overrides):
    arguments = {"channel": "email", "recipient": "ann@example.com", "payload": {"subject": "hi"}}
    arguments.update(overrides)
    return chimeway.send(arguments.pop("channel"), arguments.pop("recipient"), **arguments)


@pytest.mark.parametrize(("overrides", "argument"), REFUSED, ids=[f"{a}-{i}" for i, (_, a) in enumerate(REFUSED)])
def test_given_an_argument_send_cannot_deliver_then_it_is_refused_by_name_and_nothing_is_stored_or_sent(
    runtime, queued, overrides, argument
):
    with pytest.raises(chimeway.InvalidSendError) as raised:
        _send(**overrides)
    assert isinstance(raised.value, ValueError) and raised.value.argument == argument
    assert str(raised.value).startswith(f"{argument}: ") and SECRET not in str(raised.value)
    assert Delivery.select().count() == 0
    assert queued() == 0


def test_given_a_refused_send_inside_a_transaction_then_the_transaction_goes_on_and_commits_the_rest(runtime, queued):
    with runtime.database.atomic():
        kept = chimeway.send("email", "ann@example.com", {"subject": "hi"})
        with pytest.raises(chimeway.InvalidSendError, match="payload"):
            chimeway.send("email", "bob@example.com", {"total": math.nan})
        after = chimeway.send("sms", "+15550100")  # PostgreSQL: the transaction was not aborted
    assert {d.id for d in Delivery.select()} == {kept.id, after.id}
    assert queued() == 2


def test_given_the_edges_of_the_limits_then_the_largest_allowed_send_is_stored(runtime, queued):
    at_limit = {"text": "x" * (262_144 - len('{"text":""}'))}
    sent = chimeway.send("email", "ann@example.com", at_limit, metadata=at_limit, max_attempts=100)
    emoji = chimeway.send("email", "ann@example.com", {"text": "caf\u00e9 \U0001f600 \\u0000 literal"}, max_attempts=1)
    assert chimeway.get_delivery(sent.id).payload == at_limit
    assert chimeway.get_delivery(emoji.id).payload == {"text": "caf\u00e9 \U0001f600 \\u0000 literal"}
    assert queued() == 2


@pytest.fixture
def small_limit(database_url):
    from chimeway.wiring import runtime as runtime_mod

    configured = runtime_mod.configure(
        database_url=database_url, redis_url="", environ={}, default_adapter="fake", max_payload_bytes=64
    )
    yield configured
    runtime_mod.reset()


def test_given_a_payload_limit_when_a_payload_is_one_byte_over_then_it_is_refused_naming_the_setting(small_limit):
    fits = {"text": "x" * (64 - len('{"text":""}'))}
    assert chimeway.send("email", "ann@example.com", fits).payload == fits
    with pytest.raises(chimeway.InvalidSendError, match=r"^payload: is 65 bytes .*CHIMEWAY_MAX_PAYLOAD_BYTES"):
        chimeway.send("email", "ann@example.com", {"text": fits["text"] + "x"})
    assert Delivery.select().count() == 1


# --- idempotency keys: the same send, or a conflict -----------------------------------------------

KEY = "order-7"
FIRST = {"channel": "email", "recipient": "ann@example.com", "payload": {"subject": "hi", "lines": [1, 2.5]}}
DIFFERENT = [
    ("channel", {"channel": "sms"}),
    ("recipient", {"recipient": "bob@example.com"}),
    ("adapter", {"adapter": "log"}),
    ("payload", {"payload": {"subject": "hi", "lines": [1, 2.5, 3]}}),
    ("notification_id", {"notification_id": "00000000-0000-4000-8000-000000000001"}),
]


@pytest.mark.parametrize(("differing", "overrides"), DIFFERENT, ids=[d for d, _ in DIFFERENT])
def test_given_a_used_idempotency_key_when_reused_with_one_parameter_changed_then_it_conflicts_naming_the_key(
    runtime, queued, differing, overrides
):
    first = _send(**FIRST, idempotency_key=KEY)
    with pytest.raises(chimeway.IdempotencyConflictError) as raised:
        _send(**{**FIRST, **overrides}, idempotency_key=KEY)
    assert isinstance(raised.value, chimeway.InvalidSendError) and isinstance(raised.value, ValueError)
    assert raised.value.key == KEY and KEY in str(raised.value)
    assert raised.value.argument == "idempotency_key" and raised.value.differing == [differing]
    assert [d.id for d in Delivery.select()] == [first.id]
    assert queued() == 1


def test_given_a_used_idempotency_key_when_the_same_send_is_repeated_then_the_first_delivery_is_returned(
    runtime, queued
):
    notification = new_id()
    first = _send(**FIRST, idempotency_key=KEY, notification_id=notification.upper())
    same = [
        _send(**FIRST, idempotency_key=KEY, notification_id=notification),
        _send(**FIRST, idempotency_key=KEY),  # no notification named: the first's
        _send(**FIRST, idempotency_key=KEY, adapter="fake"),  # the adapter the first one resolved to
        _send(**{**FIRST, "payload": {"lines": [1, 2.5], "subject": "hi"}}, idempotency_key=KEY),  # key order
        _send(**FIRST, idempotency_key=KEY, metadata={"campaign": "x"}, max_attempts=2),  # not parameters of the key
    ]
    assert {d.id for d in same} == {first.id}
    assert first.notification_id == notification
    assert Delivery.select().count() == 1
    assert queued() == 1


def test_given_a_caller_transaction_when_a_key_is_repeated_or_conflicts_then_the_transaction_goes_on(
    runtime, queued
):
    with runtime.database.atomic():
        first = _send(**FIRST, idempotency_key=KEY)
        assert _send(**FIRST, idempotency_key=KEY).id == first.id
        with pytest.raises(chimeway.IdempotencyConflictError, match=KEY):
            _send(**{**FIRST, "recipient": "bob@example.com"}, idempotency_key=KEY)
        other = _send(**FIRST, idempotency_key="order-8")  # PostgreSQL: the transaction was not aborted
    assert {d.id for d in Delivery.select()} == {first.id, other.id}
    assert queued() == 2


def test_given_a_delivery_from_before_fingerprints_when_its_key_is_reused_then_the_first_is_returned(runtime, queued):
    first = _send(**FIRST, idempotency_key=KEY)
    db.execute("UPDATE chimeway_deliveries SET idempotency_fingerprint = NULL WHERE id = %s", (first.id,))
    again = _send(**{**FIRST, "payload": {"subject": "something else"}}, idempotency_key=KEY)
    assert again.id == first.id
    assert queued() == 1


def test_given_a_send_with_a_key_then_its_stored_fingerprint_is_the_canonical_one(runtime):
    sent = _send(**FIRST, idempotency_key=KEY)
    unkeyed = _send(**FIRST)
    canonical = json.dumps(
        {"adapter": "fake", "channel": "email", "notification_id": sent.notification_id,
         "payload": FIRST["payload"], "recipient": "ann@example.com", "tenant_id": "default"},
        sort_keys=True, separators=(",", ":"),
    )
    assert chimeway.get_delivery(sent.id).idempotency_fingerprint == hashlib.sha256(canonical.encode()).hexdigest()
    assert chimeway.get_delivery(unkeyed.id).idempotency_fingerprint is None


def test_given_two_tenants_sharing_a_notification_id_when_one_marks_it_read_then_the_other_is_untouched(runtime):
    notification = new_id()
    chimeway.send("email", "ann@example.com", notification_id=notification, tenant_id="acme")
    chimeway.send("email", "bob@example.com", notification_id=notification, tenant_id="globex")
    assert chimeway.mark_read(notification) == 0  # the default tenant has none
    assert chimeway.mark_read(notification, tenant_id="acme") == 1
    unread = Delivery.select().where((Delivery.notification_id == notification) & Delivery.read_at.is_null())
    assert [d.tenant_id for d in unread] == ["globex"]
