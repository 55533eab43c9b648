"""The policy's public surface without a database: decisions, the rule registry, its settings."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time

import pytest

from chimeway import policy
from chimeway.errors import ConfigurationError
from chimeway.states import Reason
from chimeway.wiring.config import load_settings


def test_decisions_are_frozen_values_that_compare_equal() -> None:
    assert policy.Suppress(Reason.ALREADY_READ) == policy.Suppress(Reason.ALREADY_READ)
    assert policy.Proceed() == policy.Proceed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.Suppress(Reason.ALREADY_READ).reason = Reason.BOUNCED  # type: ignore[misc]


def test_a_deferral_to_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        policy.Defer(datetime(2026, 1, 1, 7, 0))


def test_the_built_in_rules_run_in_the_documented_order() -> None:
    assert policy.rules() == [
        "suppression_list",
        "preferences",
        "delivery_cap",
        "quiet_hours",
        "delayed_fallback",
    ]


def test_a_rule_registers_last_or_before_a_named_rule_and_reset_forgets_it() -> None:
    def business_hours(delivery, now):
        return policy.Proceed()

    assert policy.register(business_hours, before="quiet_hours") == "business_hours"
    policy.register(lambda delivery, now: policy.Proceed(), name="audit")
    assert policy.rules()[2:] == [
        "delivery_cap",
        "business_hours",
        "quiet_hours",
        "delayed_fallback",
        "audit",
    ]
    policy.reset()
    assert "business_hours" not in policy.rules() and "audit" not in policy.rules()


def test_registering_a_name_twice_or_before_an_unknown_rule_fails_naming_the_rules() -> None:
    with pytest.raises(ValueError, match="already registered; rules: suppression_list"):
        policy.register(lambda d, n: policy.Proceed(), name="quiet_hours")
    with pytest.raises(ValueError, match="no policy rule named 'quite_hours'"):
        policy.register(lambda d, n: policy.Proceed(), name="mine", before="quite_hours")
    assert "mine" not in policy.rules()


def test_a_built_in_rule_can_be_unregistered_and_comes_back_on_reset() -> None:
    policy.unregister("quiet_hours")
    assert "quiet_hours" not in policy.rules()
    with pytest.raises(ValueError, match="no policy rule named 'quiet_hours'"):
        policy.unregister("quiet_hours")
    policy.reset()
    assert "quiet_hours" in policy.rules()


def test_policy_settings_are_off_by_default() -> None:
    settings = load_settings(environ={})
    assert settings.delivery_cap is None and settings.quiet_hours is None
    assert settings.quiet_hours_timezone == "UTC"


def test_policy_settings_parse_from_the_environment_and_from_arguments() -> None:
    settings = load_settings(
        environ={"CHIMEWAY_DELIVERY_CAP": "10/3600", "CHIMEWAY_QUIET_HOURS": "22:00-07:30"},
        quiet_hours_timezone="Europe/London",
    )
    assert settings.delivery_cap == (10, 3600)
    assert settings.quiet_hours == (time(22, 0), time(7, 30))
    assert load_settings(environ={}, quiet_hours=(time(22), time(7))).quiet_hours == (time(22), time(7))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHIMEWAY_DELIVERY_CAP", "ten"),
        ("CHIMEWAY_DELIVERY_CAP", "0/60"),
        ("CHIMEWAY_DELIVERY_CAP", "5"),
        ("CHIMEWAY_QUIET_HOURS", "22:00"),
        ("CHIMEWAY_QUIET_HOURS", "25:00-07:00"),
        ("CHIMEWAY_QUIET_HOURS", "07:00-07:00"),
        ("CHIMEWAY_QUIET_HOURS_TIMEZONE", "Mars/Olympus_Mons"),
    ],
)
def test_an_invalid_policy_setting_fails_at_configure_time_naming_its_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable) as caught:
        load_settings(environ={variable: value})
    assert caught.value.variable == variable
