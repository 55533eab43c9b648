"""Each built-in policy rule through ``policy.evaluate``, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chimeway import policy, preferences, suppressions
from chimeway.models import Delivery
from chimeway.policy import Defer, Proceed, Suppress
from chimeway.states import Reason, Status

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# --- suppression list ---------------------------------------------------------------------------


def test_a_delivery_to_a_suppressed_address_is_suppressed_as_recipient_suppressed(make_delivery) -> None:
    suppressions.add("bob@example.com", "email", "hard_bounce")
    assert policy.evaluate(make_delivery(), NOW) == Suppress(Reason.RECIPIENT_SUPPRESSED)


def test_an_email_suppression_matches_whatever_the_address_case(make_delivery) -> None:
    suppressions.add("Bob@Example.COM", "email", "complaint")
    assert policy.evaluate(make_delivery(recipient=" bob@example.com"), NOW) == Suppress(
        Reason.RECIPIENT_SUPPRESSED
    )


def test_an_expired_suppression_is_ignored(make_delivery) -> None:
    suppressions.add("bob@example.com", "email", expires_at=NOW - timedelta(seconds=1))
    assert policy.evaluate(make_delivery(), NOW) == Proceed()


def test_a_suppression_that_expires_later_still_counts(make_delivery) -> None:
    suppressions.add("bob@example.com", "email", expires_at=NOW + timedelta(days=1))
    assert policy.evaluate(make_delivery(), NOW) == Suppress(Reason.RECIPIENT_SUPPRESSED)


def test_a_suppression_of_another_channel_or_tenant_does_not_apply(make_delivery) -> None:
    suppressions.add("bob@example.com", "sms")
    suppressions.add("bob@example.com", "email", tenant_id="acme")
    assert policy.evaluate(make_delivery(), NOW) == Proceed()


# --- preferences ----------------------------------------------------------------------------------


def test_a_channel_turned_off_for_all_categories_suppresses_every_category(make_delivery) -> None:
    preferences.set("bob@example.com", "email", False)
    assert policy.evaluate(make_delivery(), NOW) == Suppress(Reason.CHANNEL_DISABLED)
    assert policy.evaluate(make_delivery(category="receipts"), NOW) == Suppress(Reason.CHANNEL_DISABLED)


def test_a_category_turned_off_suppresses_that_category_only(make_delivery) -> None:
    preferences.set("bob@example.com", "email", False, category="marketing")
    assert policy.evaluate(make_delivery(category="marketing"), NOW) == Suppress(Reason.CHANNEL_DISABLED)
    assert policy.evaluate(make_delivery(category="receipts"), NOW) == Proceed()
    assert policy.evaluate(make_delivery(category=None), NOW) == Proceed()


def test_a_category_turned_on_wins_over_the_channel_turned_off(make_delivery) -> None:
    preferences.set("bob@example.com", "email", False)
    preferences.set("bob@example.com", "email", True, category="receipts")
    assert policy.evaluate(make_delivery(category="receipts"), NOW) == Proceed()
    assert policy.evaluate(make_delivery(category="marketing"), NOW) == Suppress(Reason.CHANNEL_DISABLED)


def test_a_preference_of_another_channel_does_not_apply(make_delivery) -> None:
    preferences.set("bob@example.com", "push", False)
    assert policy.evaluate(make_delivery(), NOW) == Proceed()


# --- delivery cap -----------------------------------------------------------------------------------


def test_without_a_cap_any_number_of_deliveries_proceed(make_delivery) -> None:
    deliveries = [make_delivery(created_at=NOW - timedelta(seconds=i)) for i in range(5)]
    assert {policy.evaluate(d, NOW) for d in deliveries} == {Proceed()}


def test_a_cap_lets_the_first_deliveries_of_a_window_through_and_suppresses_the_rest(
    make_delivery, reconfigure
) -> None:
    reconfigure(delivery_cap="2/3600")
    deliveries = [make_delivery(created_at=NOW - timedelta(minutes=30 - i)) for i in range(4)]
    # Evaluated newest first, as a busy worker might: the decision follows creation order, not this one
    decisions = [policy.evaluate(d, NOW) for d in reversed(deliveries)][::-1]
    assert decisions == [
        Proceed(),
        Proceed(),
        Suppress(Reason.DELIVERY_CAP_REACHED),
        Suppress(Reason.DELIVERY_CAP_REACHED),
    ]


def test_deliveries_older_than_the_cap_window_do_not_count(make_delivery, reconfigure) -> None:
    reconfigure(delivery_cap="1/60")
    make_delivery(created_at=NOW - timedelta(seconds=61))
    assert policy.evaluate(make_delivery(created_at=NOW), NOW) == Proceed()


def test_suppressed_deliveries_and_other_recipients_do_not_count_toward_the_cap(
    make_delivery, reconfigure
) -> None:
    reconfigure(delivery_cap="1/3600")
    make_delivery(
        created_at=NOW - timedelta(minutes=2), status=Status.SUPPRESSED, reason="channel_disabled"
    )
    make_delivery(created_at=NOW - timedelta(minutes=1), recipient="alice@example.com")
    assert policy.evaluate(make_delivery(created_at=NOW), NOW) == Proceed()


def test_a_capped_delivery_that_passed_once_still_passes_on_its_retry(make_delivery, reconfigure) -> None:
    reconfigure(delivery_cap="1/3600")
    first = make_delivery(created_at=NOW - timedelta(minutes=5))
    make_delivery(created_at=NOW - timedelta(minutes=1), status=Status.SUCCEEDED, attempt_count=1)
    assert policy.evaluate(first, NOW + timedelta(minutes=10)) == Proceed()


# --- quiet hours ------------------------------------------------------------------------------------


def test_without_quiet_hours_a_night_time_delivery_proceeds(make_delivery) -> None:
    night = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    assert policy.evaluate(make_delivery(metadata={"timezone": "Europe/London"}), night) == Proceed()


def test_quiet_hours_defer_to_the_morning_in_the_recipients_time_zone(make_delivery, reconfigure) -> None:
    reconfigure(quiet_hours="22:00-07:00")
    delivery = make_delivery(metadata={"timezone": "America/New_York"})
    # 23:30 in New York on 2026-03-07; the clocks spring forward that night
    now = datetime(2026, 3, 8, 4, 30, tzinfo=UTC)
    assert policy.evaluate(delivery, now) == Defer(datetime(2026, 3, 8, 11, 0, tzinfo=UTC))


def test_quiet_hours_across_the_autumn_change_in_london_end_at_seven_greenwich_time(
    make_delivery, reconfigure
) -> None:
    reconfigure(quiet_hours="22:00-07:00")
    delivery = make_delivery(metadata={"timezone": "Europe/London"})
    now = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST, before the clocks go back
    assert policy.evaluate(delivery, now) == Defer(datetime(2026, 10, 25, 7, 0, tzinfo=UTC))


def test_quiet_hours_in_the_recipients_afternoon_do_not_defer(make_delivery, reconfigure) -> None:
    reconfigure(quiet_hours="22:00-07:00")
    delivery = make_delivery(metadata={"timezone": "Asia/Tokyo"})
    assert policy.evaluate(delivery, datetime(2026, 6, 1, 5, 0, tzinfo=UTC)) == Proceed()  # 14:00 in Tokyo


def test_a_recipient_without_a_time_zone_uses_the_configured_default(make_delivery, reconfigure) -> None:
    reconfigure(quiet_hours="22:00-07:00", quiet_hours_timezone="Asia/Tokyo")
    now = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo, 14:00 in UTC
    assert policy.evaluate(make_delivery(), now) == Defer(datetime(2026, 6, 1, 22, 0, tzinfo=UTC))


def test_an_unknown_time_zone_falls_back_to_the_configured_default(
    make_delivery, reconfigure, caplog
) -> None:
    reconfigure(quiet_hours="22:00-07:00")
    delivery = make_delivery(metadata={"timezone": "Mars/Olympus_Mons"})
    assert policy.evaluate(delivery, datetime(2026, 6, 1, 23, 0, tzinfo=UTC)) == Defer(
        datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    )
    assert "unknown metadata timezone" in caplog.text and "bob@" not in caplog.text


def test_per_delivery_quiet_hours_replace_the_setting_and_an_empty_value_turns_them_off(
    make_delivery, reconfigure
) -> None:
    reconfigure(quiet_hours="22:00-07:00")
    now = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    own = make_delivery(metadata={"quiet_hours": "12:00-14:00"})
    urgent = make_delivery(metadata={"quiet_hours": ""})
    assert policy.evaluate(own, now) == Defer(datetime(2026, 6, 1, 14, 0, tzinfo=UTC))
    assert policy.evaluate(urgent, datetime(2026, 6, 1, 23, 0, tzinfo=UTC)) == Proceed()


def test_per_delivery_quiet_hours_work_without_the_setting(make_delivery) -> None:
    delivery = make_delivery(metadata={"quiet_hours": "21:00-08:00", "timezone": "Europe/London"})
    now = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)  # 23:00 BST
    assert policy.evaluate(delivery, now) == Defer(datetime(2026, 6, 2, 7, 0, tzinfo=UTC))


# --- delayed fallback ---------------------------------------------------------------------------------


def test_a_delayed_fallback_is_suppressed_once_its_notification_was_read(make_delivery) -> None:
    push = make_delivery(channel="push", recipient="device-1")
    fallback = make_delivery(notification_id=push.notification_id, delay_fallback=True)
    assert policy.evaluate(fallback, NOW) == Proceed()
    Delivery.update(read_at=NOW).where(Delivery.id == push.id).execute()
    assert policy.evaluate(fallback, NOW) == Suppress(Reason.ALREADY_READ)


def test_a_delivery_that_is_not_a_fallback_is_sent_even_when_read(make_delivery) -> None:
    push = make_delivery(channel="push", recipient="device-1", read_at=NOW)
    email = make_delivery(notification_id=push.notification_id)
    assert policy.evaluate(email, NOW) == Proceed()


def test_a_read_notification_of_another_tenant_does_not_suppress_a_fallback(make_delivery) -> None:
    other = make_delivery(channel="push", recipient="device-1", tenant_id="acme", read_at=NOW)
    fallback = make_delivery(notification_id=other.notification_id, delay_fallback=True)
    assert policy.evaluate(fallback, NOW) == Proceed()
