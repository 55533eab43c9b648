"""The built-in rules as a user meets them: ``chimeway.send`` → worker → policy → the delivery's state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dramatiq
import pytest

import chimeway
from chimeway import db, preferences, suppressions
from chimeway.dispatch.actors import QUEUE
from chimeway.testing import drain, fake_calls, start_worker
from chimeway.wiring import runtime as runtime_mod


@pytest.fixture
def runtime(configured: runtime_mod.Runtime, request: pytest.FixtureRequest) -> Iterator[runtime_mod.Runtime]:
    """Chimeway on the parametrized database sending through the fake adapter."""
    settings = getattr(request, "param", {})
    runtime = runtime_mod.configure(
        database_url=configured.settings.database_url,
        redis_url="",
        environ={},
        default_adapter="fake",
        **settings,
    )
    runtime.registry.adapter_class("fake").reset()
    yield runtime


def test_a_send_to_a_suppressed_address_ends_suppressed_without_calling_the_adapter(runtime) -> None:
    suppressions.add("ann@example.com", "email", "hard_bounce")
    sent = chimeway.send("email", "Ann@Example.com")
    with start_worker(runtime):
        assert drain(runtime) == []
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.reason) == ("suppressed", "recipient_suppressed")
    assert fake_calls(sent.id, runtime) == [] and chimeway.attempts(sent.id) == []


def test_a_send_in_a_category_the_recipient_turned_off_ends_channel_disabled(runtime) -> None:
    preferences.set("ann@example.com", "email", False, category="marketing")
    news = chimeway.send("email", "ann@example.com", category="marketing")
    receipt = chimeway.send("email", "ann@example.com", category="receipts")
    with start_worker(runtime):
        assert drain(runtime) == []
    assert chimeway.get_delivery(news.id).reason == "channel_disabled"
    assert chimeway.get_delivery(receipt.id).status == "succeeded"
    assert [call.delivery_id for call in fake_calls(runtime=runtime)] == [receipt.id]


@pytest.mark.parametrize("runtime", [{"delivery_cap": "2/3600"}], indirect=True)
def test_sends_beyond_the_delivery_cap_end_delivery_cap_reached(runtime) -> None:
    sent = [chimeway.send("sms", "+15550001") for _ in range(3)]
    with start_worker(runtime):
        assert drain(runtime) == []
    rows = [chimeway.get_delivery(d.id) for d in sent]
    assert [(r.status, r.reason) for r in rows] == [
        ("succeeded", None),
        ("succeeded", None),
        ("suppressed", "delivery_cap_reached"),
    ]


def test_a_fallback_whose_notification_was_read_ends_already_read(runtime) -> None:
    push = chimeway.send("push", "device-1")
    email = chimeway.send(
        "email", "ann@example.com", notification_id=push.notification_id, delay_fallback=True
    )
    chimeway.mark_read(push.notification_id)
    with start_worker(runtime):
        assert drain(runtime) == []
    assert chimeway.get_delivery(push.id).status == "succeeded"
    row = chimeway.get_delivery(email.id)
    assert (row.status, row.reason) == ("suppressed", "already_read")
    assert fake_calls(email.id, runtime) == []


def test_a_send_during_the_recipients_quiet_hours_waits_deferred_until_they_end(runtime) -> None:
    # Given quiet hours from an hour ago to an hour from now on the recipient's clock in Tokyo
    tokyo = ZoneInfo("Asia/Tokyo")
    local = db.now().astimezone(tokyo).replace(second=0, microsecond=0)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    window = f"{start:%H:%M}-{end:%H:%M}"
    # When it is sent and the deliver actor performs it (called directly: a worker would hold the
    # delayed message in its own memory, out of sight)
    sent = chimeway.send(
        "email", "ann@example.com", metadata={"timezone": "Asia/Tokyo", "quiet_hours": window}
    )
    runtime.actors["deliver"](sent.id)
    # Then it waits, deferred until the window's end, with a delayed message due then, and no call
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.orchestration_state) == ("pending", "deferred")
    assert row.next_eligible_at == end.astimezone(UTC)
    delayed = [dramatiq.Message.decode(raw) for raw in list(runtime.broker.queues[f"{QUEUE}.DQ"].queue)]
    assert [m.args[0] for m in delayed] == [sent.id]
    eta = datetime.fromtimestamp(delayed[0].options["eta"] / 1000, UTC)
    assert abs(eta - end.astimezone(UTC)) < timedelta(seconds=5)
    assert fake_calls(sent.id, runtime) == []
