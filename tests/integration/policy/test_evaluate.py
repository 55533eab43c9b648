"""``policy.evaluate``: the first decision that is not Proceed wins; custom rules join the chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chimeway import policy, preferences, suppressions
from chimeway.policy import Defer, Proceed, Suppress
from chimeway.states import Reason

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_a_delivery_nothing_objects_to_proceeds(make_delivery) -> None:
    assert policy.evaluate(make_delivery(), NOW) == Proceed()


def test_the_suppression_list_is_consulted_before_preferences(make_delivery) -> None:
    suppressions.add("bob@example.com", "email", "unsubscribe")
    preferences.set("bob@example.com", "email", False)
    assert policy.evaluate(make_delivery(), NOW) == Suppress(Reason.RECIPIENT_SUPPRESSED)


def test_a_suppression_wins_over_quiet_hours(make_delivery, reconfigure) -> None:
    reconfigure(quiet_hours="11:00-13:00")
    preferences.set("bob@example.com", "email", False)
    assert policy.evaluate(make_delivery(), NOW) == Suppress(Reason.CHANNEL_DISABLED)


def test_a_registered_rule_decides_in_its_place_in_the_chain(make_delivery, reconfigure) -> None:
    reconfigure(quiet_hours="11:00-13:00")
    seen = []

    def vip_only(delivery, now):
        seen.append(delivery.id)
        return Proceed() if delivery.metadata.get("vip") else Suppress(Reason.CHANNEL_DISABLED)

    policy.register(vip_only, before="quiet_hours")
    plain, vip = make_delivery(), make_delivery(metadata={"vip": True})
    assert policy.evaluate(plain, NOW) == Suppress(Reason.CHANNEL_DISABLED)
    assert policy.evaluate(vip, NOW) == Defer(datetime(2026, 6, 1, 13, 0, tzinfo=UTC))
    assert seen == [plain.id, vip.id]


def test_a_registered_rule_object_with_a_name_can_defer(make_delivery) -> None:
    class Maintenance:
        name = "maintenance_window"

        def __call__(self, delivery, now):
            return Defer(now + timedelta(hours=1))

    policy.register(Maintenance())
    assert policy.rules()[-1] == "maintenance_window"
    assert policy.evaluate(make_delivery(), NOW) == Defer(NOW + timedelta(hours=1))


def test_a_rule_that_returns_something_other_than_a_decision_fails_naming_itself(make_delivery) -> None:
    policy.register(lambda delivery, now: None, name="forgetful")
    with pytest.raises(TypeError, match="policy rule 'forgetful' returned None"):
        policy.evaluate(make_delivery(), NOW)


def test_reset_goes_back_to_the_built_in_rules(make_delivery) -> None:
    policy.register(lambda delivery, now: Suppress(Reason.CHANNEL_DISABLED), name="refuse_all")
    policy.reset()
    assert policy.evaluate(make_delivery(), NOW) == Proceed()


def test_evaluating_at_a_naive_time_is_refused(make_delivery) -> None:
    with pytest.raises(ValueError, match="aware"):
        policy.evaluate(make_delivery(), datetime(2026, 6, 1, 12, 0))
