"""Configuration: arguments, else CHIMEWAY_* variables, else defaults; bad values name their variable."""

from __future__ import annotations

import pytest

from chimeway.config import DEFAULT_DATABASE_URL, describe, load_settings
from chimeway.errors import ConfigurationError
from chimeway.registry import Registry

INVALID = [
    ("CHIMEWAY_DATABASE_URL", "mysql://root@localhost/app"),
    ("CHIMEWAY_REDIS_URL", "http://127.0.0.1:6379"),
    ("CHIMEWAY_REDIS_NAMESPACE", "has space"),
    ("CHIMEWAY_MAX_ATTEMPTS", "0"),
    ("CHIMEWAY_MAX_ATTEMPTS", "five"),
    ("CHIMEWAY_BACKOFF_MIN_MS", "-1"),
    ("CHIMEWAY_BACKOFF_MAX_MS", "soon"),
    ("CHIMEWAY_LEASE_SECONDS", "0"),
    ("CHIMEWAY_SWEEP_STALL_SECONDS", "1.5"),
    ("CHIMEWAY_RECONCILE_GRACE_SECONDS", "-5"),
    ("CHIMEWAY_RECONCILE_MAX_AGE_MINUTES", "0"),
    ("CHIMEWAY_WEBHOOK_MAX_BYTES", "big"),
    ("CHIMEWAY_MAX_PAYLOAD_BYTES", "0"),
    ("CHIMEWAY_MAX_PAYLOAD_BYTES", "256KiB"),
    ("CHIMEWAY_MAX_PAYLOAD_BYTES", "268435456"),  # over what PostgreSQL's jsonb can hold
    ("CHIMEWAY_WEBHOOK_RETENTION_DAYS", "0"),
    ("CHIMEWAY_DEFAULT_ADAPTER", "no such!"),
    ("CHIMEWAY_CHANNEL_ADAPTERS", "email"),
    ("CHIMEWAY_STATEMENT_TIMEOUT_MS", "10"),
    ("CHIMEWAY_DB_POOL_SIZE", "0"),
    ("CHIMEWAY_BROKER_HEARTBEAT_MS", "5"),
    ("CHIMEWAY_RECONCILE_CRON", "every five minutes"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_given_an_invalid_environment_value_when_loading_then_the_error_names_the_variable(variable, value):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={variable: value})
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_given_an_invalid_argument_when_loading_then_the_error_names_the_argument_and_variable():
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={}, max_attempts=0)
    assert "max_attempts=" in str(caught.value)
    assert caught.value.variable == "CHIMEWAY_MAX_ATTEMPTS"


def test_given_no_settings_when_loading_then_the_embedded_defaults_apply():
    settings = load_settings(environ={})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.redis_url is None  # in-memory broker
    assert settings.max_attempts == 5
    assert (settings.backoff_min_ms, settings.backoff_max_ms) == (15_000, 3_600_000)
    assert settings.lease_seconds == 300
    assert settings.webhook_max_bytes == 1_048_576
    assert settings.max_payload_bytes == 262_144


def test_given_an_argument_and_a_variable_when_loading_then_the_argument_wins():
    settings = load_settings(environ={"CHIMEWAY_MAX_ATTEMPTS": "7"}, max_attempts=3)
    assert settings.max_attempts == 3
    assert load_settings(environ={"CHIMEWAY_MAX_ATTEMPTS": "7"}).max_attempts == 7


def test_given_an_unknown_setting_when_loading_then_the_known_ones_are_named():
    with pytest.raises(ConfigurationError, match="unknown setting 'max_attempt'.*max_attempts"):
        load_settings(environ={}, max_attempt=3)


def test_given_backoff_bounds_reversed_when_loading_then_it_is_refused():
    with pytest.raises(ConfigurationError, match="CHIMEWAY_BACKOFF_MIN_MS"):
        load_settings(environ={"CHIMEWAY_BACKOFF_MIN_MS": "9000", "CHIMEWAY_BACKOFF_MAX_MS": "10"})


def test_given_channel_adapters_text_when_loading_then_it_becomes_a_mapping():
    settings = load_settings(environ={"CHIMEWAY_CHANNEL_ADAPTERS": "email=log, sms=fake"})
    assert settings.channel_adapters == {"email": "log", "sms": "fake"}


def test_given_an_unknown_default_adapter_when_configuring_then_the_known_ones_are_named():
    settings = load_settings(environ={"CHIMEWAY_DEFAULT_ADAPTER": "pigeon"})
    with pytest.raises(ConfigurationError) as caught:
        Registry(settings, environ={})
    assert caught.value.variable == "CHIMEWAY_DEFAULT_ADAPTER"
    assert "pigeon" in str(caught.value) and "log" in str(caught.value)


def test_every_setting_is_described_for_the_readme():
    variables = [row[0] for row in describe()]
    assert len(variables) == len(set(variables))
    assert "CHIMEWAY_DATABASE_URL" in variables and "CHIMEWAY_STANDARD_WEBHOOK_SECRET" in variables


def test_given_an_adapter_option_passed_as_none_then_its_default_applies():
    registry = Registry(load_settings(environ={}, adapters={"smtp": {"host": None, "timeout": None}}), environ={})
    options = registry.options_for("smtp")
    assert options["host"] == "localhost"
    assert options["timeout"] == 10
