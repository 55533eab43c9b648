"""Projection rules: forward-only pointer, set-once timestamps, optimistic lock, status untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chimeway import db
from chimeway.models import Delivery
from chimeway.webhooks import projection

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def apply(delivery: Delivery, *facts: tuple[str, float]) -> set[str]:
    """Apply ``(type, seconds after T0)`` facts with the delivery's current lock_version."""
    version = Delivery.get_by_id(delivery.id).lock_version
    with db.transaction():
        return projection.apply(db.database(), [projection.Fact(delivery.id, kind, at(s), version) for kind, s in facts])


def test_a_late_delivered_after_a_bounce_sets_delivered_at_but_leaves_the_pointer_on_the_bounce(
    webhooks, make_delivery
) -> None:
    delivery = make_delivery("postmark", "pm-1")
    apply(delivery, ("bounced", 20))
    apply(delivery, ("delivered", 10))  # happened earlier, arrived later
    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.last_event_at) == ("bounced", at(20))
    assert (row.bounced_at, row.delivered_at) == (at(20), at(10))


def test_the_pointer_moves_forward_with_a_later_event(webhooks, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-2")
    apply(delivery, ("delivered", 10))
    apply(delivery, ("opened", 30))
    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.last_event_at, row.opened_at) == ("opened", at(30), at(30))


def test_timestamps_are_set_once_by_the_first_event_recorded(webhooks, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-3")
    apply(delivery, ("opened", 30))
    apply(delivery, ("opened", 5))
    apply(delivery, ("opened", 90))
    row = Delivery.get_by_id(delivery.id)
    assert row.opened_at == at(30) and (row.last_event_type, row.last_event_at) == ("opened", at(90))


def test_events_applied_together_keep_the_earliest_time_and_the_latest_pointer(webhooks, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-4")
    apply(delivery, ("clicked", 50), ("delivered", 10), ("clicked", 40), ("opened", 30))
    row = Delivery.get_by_id(delivery.id)
    assert (row.delivered_at, row.opened_at, row.clicked_at) == (at(10), at(30), at(40))
    assert (row.last_event_type, row.last_event_at, row.lock_version) == ("clicked", at(50), 1)


def test_on_a_tie_the_later_stage_wins_whatever_the_arrival_order(webhooks, make_delivery) -> None:
    first, second = make_delivery("postmark", "pm-5"), make_delivery("postmark", "pm-6")
    apply(first, ("delivered", 10))
    apply(first, ("opened", 10))
    apply(second, ("opened", 10))
    apply(second, ("delivered", 10))
    assert Delivery.get_by_id(first.id).last_event_type == Delivery.get_by_id(second.id).last_event_type == "opened"


def test_an_unknown_event_never_moves_the_pointer(webhooks, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-7")
    apply(delivery, ("delivered", 10))
    apply(delivery, ("unknown", 99))
    row = Delivery.get_by_id(delivery.id)
    assert (row.last_event_type, row.last_event_at) == ("delivered", at(10))


def test_feedback_never_rewrites_a_delivery_status(webhooks, make_delivery) -> None:
    succeeded = make_delivery("postmark", "pm-8", status="succeeded")
    cancelled = make_delivery("postmark", "pm-9", status="cancelled")
    apply(succeeded, ("bounced", 10))
    apply(cancelled, ("delivered", 10))
    assert Delivery.get_by_id(succeeded.id).status == "succeeded"
    assert Delivery.get_by_id(cancelled.id).status == "cancelled"


def test_a_write_based_on_a_stale_lock_version_is_retried_not_lost_or_raised(webhooks, make_delivery) -> None:
    delivery = make_delivery("postmark", "pm-10")
    stale = Delivery.get_by_id(delivery.id).lock_version
    apply(delivery, ("delivered", 10))  # another writer moves lock_version on
    with db.transaction():
        written = projection.apply(db.database(), [projection.Fact(delivery.id, "opened", at(20), stale)])
    row = Delivery.get_by_id(delivery.id)
    assert written == {delivery.id}
    assert (row.delivered_at, row.opened_at, row.last_event_type, row.lock_version) == (at(10), at(20), "opened", 2)


def test_facts_for_a_delivery_that_no_longer_exists_are_dropped(webhooks) -> None:
    with db.transaction():
        assert projection.apply(db.database(), [projection.Fact("00000000-0000-4000-8000-000000000000", "opened", at(1), 0)]) == set()


@pytest.mark.postgres
def test_concurrent_webhooks_for_one_delivery_all_succeed_and_each_moves_the_projection_once(
    pg_webhooks, secrets, make_delivery
) -> None:
    import base64
    import json
    import threading

    from chimeway.webhooks import handle

    delivery = make_delivery("postmark", "pm-hot")
    credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
    start, statuses = threading.Barrier(8), []

    def post(n: int) -> None:
        body = json.dumps({"RecordType": "Open", "MessageID": "pm-hot", "FirstOpen": n == 0,
                           "ReceivedAt": f"2026-03-01T12:00:{n:02d}Z", "Recipient": "john@example.com"})
        try:
            start.wait()
            statuses.append(handle("postmark", {"Authorization": f"Basic {credentials}"}, body).status)
        finally:
            pg_webhooks.database.close()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    row = Delivery.get_by_id(delivery.id)
    assert statuses == [200] * 8
    assert (row.last_event_type, row.last_event_at, row.lock_version) == ("opened", at(7), 8)
    assert at(0) <= row.opened_at <= at(7)
