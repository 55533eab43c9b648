"""The three resilience settings are validated when Chimeway is configured: a bad one is refused
naming its variable, before any worker runs; the route rules (chain, next adapter) are pure."""

from __future__ import annotations

import pytest

from chimeway.dispatch.resilience import chain, next_adapter
from chimeway.errors import ConfigurationError
from chimeway.wiring.config import load_settings
from chimeway.wiring.registry import Registry


def registry(**environ: str) -> Registry:
    return Registry(load_settings(environ=environ), environ)


@pytest.mark.parametrize("value", ["postmark", "postmark=50", "postmark=0/1", "postmark=5/0", "postmark=many/1"])
def test_given_a_malformed_rate_limit_when_configured_then_it_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="CHIMEWAY_RATE_LIMITS.*calls/seconds") as caught:
        load_settings(environ={"CHIMEWAY_RATE_LIMITS": value})
    assert caught.value.variable == "CHIMEWAY_RATE_LIMITS"


def test_given_rate_limits_as_text_or_argument_then_they_read_as_calls_per_seconds():
    assert load_settings(environ={"CHIMEWAY_RATE_LIMITS": "postmark=50/1,twilio=1/1"}).rate_limits == {
        "postmark": (50, 1), "twilio": (1, 1)}
    assert load_settings(environ={}, rate_limits={"postmark": "50/1"}).rate_limits == {"postmark": (50, 1)}


@pytest.mark.parametrize("value", ["postmark=sendgrid,sendgrid=postmark", "fake=fake", "a=b,b=c,c=a"])
def test_given_a_failover_cycle_when_configured_then_it_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="CHIMEWAY_FAILOVER.*without cycles") as caught:
        load_settings(environ={"CHIMEWAY_FAILOVER": value})
    assert caught.value.variable == "CHIMEWAY_FAILOVER"


def test_given_a_failover_target_of_another_channel_when_configured_then_it_is_refused_naming_the_setting():
    with pytest.raises(ConfigurationError, match="CHIMEWAY_FAILOVER: adapter 'twilio' serves 'sms', not 'email'"):
        registry(CHIMEWAY_FAILOVER="postmark=twilio")


def test_given_an_unknown_adapter_in_failover_or_rate_limits_then_it_is_refused_naming_the_setting():
    with pytest.raises(ConfigurationError, match="unknown adapter 'nosuch' \\(from CHIMEWAY_FAILOVER\\)"):
        registry(CHIMEWAY_FAILOVER="postmark=nosuch")
    with pytest.raises(ConfigurationError, match="unknown adapter 'nosuch' \\(from CHIMEWAY_RATE_LIMITS\\)"):
        registry(CHIMEWAY_RATE_LIMITS="nosuch=1/1")


def test_given_an_adapter_serving_any_channel_then_it_may_follow_any_adapter():
    assert registry(CHIMEWAY_FAILOVER="postmark=sendgrid,sendgrid=log").failover == {
        "postmark": "sendgrid", "sendgrid": "log"}


def test_given_a_chain_then_each_transient_failure_moves_to_the_next_adapter_and_the_last_returns_to_the_first():
    failover = {"postmark": "sendgrid", "sendgrid": "ses"}
    assert chain(failover, "postmark") == ["postmark", "sendgrid", "ses"]
    assert [next_adapter(failover, "postmark", a) for a in ("postmark", "sendgrid", "ses")] == [
        "sendgrid", "ses", "postmark"]
    assert next_adapter({}, "postmark", "postmark") == "postmark"  # no chain: the same adapter again
