"""Configuration: arguments, else CHIMEWAY_* variables, else defaults; bad values name their variable."""

from __future__ import annotations

import pytest

from chimeway.errors import ConfigurationError
from chimeway.wiring.config import DEFAULT_DATABASE_URL, describe, load_settings
from chimeway.wiring.registry import Registry

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
    ("CHIMEWAY_RETENTION_DAYS", "-1"),
    ("CHIMEWAY_RETENTION_DAYS", "ninety"),
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


# -- unknown CHIMEWAY_* variables and masked URLs ----------------------------------------------------


def _configure(tmp_path, **environ):
    from chimeway.wiring import runtime

    try:
        return runtime.configure(environ={"CHIMEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite3'}", **environ})
    finally:
        runtime.reset()


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("CHIMEWAY_MAX_ATTEMPS", "CHIMEWAY_MAX_ATTEMPTS"), ("CHIMEWAY_POSTMARK_BASEURL", "CHIMEWAY_POSTMARK_BASE_URL")],
)
def test_given_a_mistyped_variable_when_configuring_then_it_is_refused_with_the_closest_known_name(
    tmp_path, typo, meant
):
    with pytest.raises(ConfigurationError) as caught:
        _configure(tmp_path, **{typo: "3"})
    assert caught.value.variable == typo
    assert f"did you mean {meant}?" in str(caught.value)


def test_given_a_variable_like_nothing_known_when_configuring_then_it_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        _configure(tmp_path, CHIMEWAY_ZZZ="1")
    assert "unknown environment variable CHIMEWAY_ZZZ" in str(caught.value)


def test_given_the_variables_the_repository_itself_uses_when_configuring_then_none_is_refused(tmp_path):
    """Every CHIMEWAY_* name written in the tests, harnesses, Makefile, CI script and README is a
    setting, an installed adapter's variable or under a reserved prefix."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [*root.glob("tests/**/*.py"), root / "Makefile", root / ".ci" / "run", root / "README.md"]
    names = set()
    for path in files:
        names |= set(re.findall(r"\bCHIMEWAY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    examples = {  # names the tests write on purpose: typos, a test adapter, example adapters in prose
        "CHIMEWAY_MAX_ATTEMPS", "CHIMEWAY_POSTMARK_BASEURL", "CHIMEWAY_ZZZ", "CHIMEWAY_PIGEON_LOFT",
        "CHIMEWAY_PIGEON_LOFTS", "CHIMEWAY_ACME_API_KEY", "CHIMEWAY_ACME_BASEURL",
    }
    environ = {name: "" for name in names - examples}  # empty values: only the names are checked
    assert _configure(tmp_path, **environ) is not None


def test_given_a_bad_url_with_a_password_when_loading_then_the_error_hides_the_password():
    for variable, url in [("CHIMEWAY_DATABASE_URL", "mysql://app:s3cr3t-pw@db.internal/app"),
                          ("CHIMEWAY_REDIS_URL", "http://:s3cr3t-pw@cache.internal:6379/0")]:
        with pytest.raises(ConfigurationError) as caught:
            load_settings(environ={variable: url})
        assert "s3cr3t-pw" not in str(caught.value)
        assert "***" in str(caught.value) and variable in str(caught.value)
