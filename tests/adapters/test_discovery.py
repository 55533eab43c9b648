"""Adapters are found through the ``chimeway.adapters`` entry-point group, and configured up front.

A third-party adapter is a distribution of its own: here one is written to a temporary directory
(a package plus a ``*.dist-info`` with ``entry_points.txt``, which is what ``pip install`` leaves)
and put on ``sys.path``, then discovered and used exactly as the built-ins are. Unknown adapter
names and bad options fail at configure time, naming what is known and the variable to fix.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import chimeway
from chimeway.adapter import SendRequest, SendResult
from chimeway.errors import ConfigurationError
from chimeway.wiring.config import load_settings
from chimeway.wiring.registry import Registry, discover
from tests.adapters.distribution import write_pigeon_distribution

BUILT_INS = {"fake", "log", "smtp", "webhook", "postmark", "sendgrid", "twilio"}


@pytest.fixture
def third_party_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed-looking distribution 'chimeway-pigeon' whose entry point registers adapter ``pigeon``."""
    package = write_pigeon_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield package
    sys.modules.pop(package, None)


def test_every_built_in_adapter_is_an_entry_point_under_chimeway_adapters() -> None:
    found = discover()
    assert set(found) >= BUILT_INS
    for name in BUILT_INS:
        assert found[name].value.startswith("chimeway_adapters."), (
            "built-ins never install a top-level 'adapters'"
        )


def test_given_a_third_party_distribution_when_discovering_then_its_adapter_is_found_and_used(
    third_party_adapter: str,
) -> None:
    assert discover()["pigeon"].value == f"{third_party_adapter}:PigeonAdapter"

    settings = load_settings(
        environ={}, channel_adapters={"pigeon": "pigeon"}, adapters={"pigeon": {"loft": "north"}}
    )
    registry = Registry(settings, environ={})
    try:
        assert "pigeon" in registry.known
        name = registry.resolve(None, "pigeon")
        result = registry.get(name).send(
            SendRequest(
                delivery_id="d-1",
                tenant_id="default",
                channel="pigeon",
                recipient="the-old-mill",
                payload={"note": "meet at dawn"},
                metadata={},
                attempt_number=1,
                max_attempts=3,
            )
        )
    finally:
        registry.close()
    assert result == SendResult(provider="pigeon", provider_message_id="leg-band-1")
    assert sys.modules[third_party_adapter].SENT == [("north", "the-old-mill", {"note": "meet at dawn"})]


def test_given_a_third_party_adapter_when_its_option_comes_from_the_environment_then_it_is_used(
    third_party_adapter: str,
) -> None:
    settings = load_settings(environ={}, default_adapter="pigeon")
    registry = Registry(settings, environ={"CHIMEWAY_PIGEON_LOFT": "south"})
    try:
        assert registry.get("pigeon").config == {"loft": "south"}
    finally:
        registry.close()


def test_given_a_third_party_adapter_missing_its_required_option_then_a_worker_check_or_a_send_names_the_variable(
    third_party_adapter: str,
) -> None:
    registry = Registry(load_settings(environ={}, default_adapter="pigeon"), environ={})  # status, migrate: fine
    with pytest.raises(ConfigurationError) as at_worker_start:
        registry.check()
    assert at_worker_start.value.variable == "CHIMEWAY_PIGEON_LOFT"
    with pytest.raises(ConfigurationError) as at_send:
        registry.resolve(None, "pigeon")
    assert at_send.value.variable == "CHIMEWAY_PIGEON_LOFT"


def test_given_a_third_party_adapter_with_a_bad_option_name_in_the_environment_then_configure_suggests_the_right_one(
    third_party_adapter: str, tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        chimeway.configure(
            environ={"CHIMEWAY_PIGEON_LOFTS": "north", "CHIMEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                     "CHIMEWAY_REDIS_URL": ""},
        )
    assert caught.value.variable == "CHIMEWAY_PIGEON_LOFTS"
    assert "did you mean CHIMEWAY_PIGEON_LOFT?" in str(caught.value)


def test_given_an_unknown_adapter_name_when_configuring_then_the_error_names_the_known_ones(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        chimeway.configure(
            environ={},
            database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
            channel_adapters={"email": "mailchimpz"},
        )
    message = str(caught.value)
    assert "mailchimpz" in message
    for name in ("smtp", "webhook", "postmark", "sendgrid", "twilio"):
        assert name in message
    assert caught.value.variable == "CHIMEWAY_CHANNEL_ADAPTERS"
    assert not (tmp_path / "x.sqlite3").exists(), "configure failed before touching the database"


def test_given_an_unknown_adapter_in_the_environment_then_configure_fails_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Registry(load_settings(environ={"CHIMEWAY_DEFAULT_ADAPTER": "carrier-pigeon"}), environ={})
    assert caught.value.variable == "CHIMEWAY_DEFAULT_ADAPTER"
    assert "known adapters:" in str(caught.value) and "smtp" in str(caught.value)


def test_given_chimeway_smtp_port_abc_then_configure_fails_naming_the_variable() -> None:
    settings = load_settings(environ={}, channel_adapters={"email": "smtp"})
    with pytest.raises(ConfigurationError) as caught:
        Registry(settings, environ={"CHIMEWAY_SMTP_PORT": "abc"})
    assert caught.value.variable == "CHIMEWAY_SMTP_PORT"
    assert "CHIMEWAY_SMTP_PORT" in str(caught.value) and "'abc'" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHIMEWAY_SMTP_STARTTLS", "maybe"),
        ("CHIMEWAY_SMTP_TIMEOUT", "0"),
        ("CHIMEWAY_SMTP_PORT", "70000"),
    ],
)
def test_given_a_bad_smtp_option_then_configure_fails_naming_it(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Registry(load_settings(environ={}, channel_adapters={"email": "smtp"}), environ={variable: value})
    assert caught.value.variable == variable


def test_given_a_secret_option_with_a_bad_value_then_the_value_is_hidden() -> None:
    settings = load_settings(environ={}, channel_adapters={"webhook": "webhook"})
    with pytest.raises(ConfigurationError) as caught:
        Registry(settings, environ={"CHIMEWAY_WEBHOOK_SECRET": "whsec_%%%not-base64%%%"})
    assert caught.value.variable == "CHIMEWAY_WEBHOOK_SECRET"
    assert "%%%" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CHIMEWAY_POSTMARK_BASE_URL", "api.postmarkapp.com"), ("CHIMEWAY_POSTMARK_TIMEOUT", "soon")],
)
def test_given_a_bad_http_option_then_configure_fails_naming_it(variable: str, value: str) -> None:
    environ = {"CHIMEWAY_POSTMARK_SERVER_TOKEN": "t", variable: value}
    with pytest.raises(ConfigurationError) as caught:
        Registry(load_settings(environ={}, channel_adapters={"email": "postmark"}), environ=environ)
    assert caught.value.variable == variable


def test_given_an_unknown_option_then_configure_names_the_options_the_adapter_accepts() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Registry(load_settings(environ={}, adapters={"smtp": {"prot": 25}}), environ={})
    assert "'prot'" in str(caught.value)
    assert "port" in str(caught.value) and "starttls" in str(caught.value)


