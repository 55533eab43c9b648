"""Provider steps that need no database: timestamps, message ids, the suppression rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chimeway.webhooks.providers import provider_class
from chimeway.webhooks.providers.base import Malformed, Unauthorized, WebhookRequest
from chimeway.webhooks.providers.sendgrid import message_id_of
from chimeway.webhooks.suppression_entries import reason_for
from chimeway.wiring.config import load_settings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def provider(name: str):
    return provider_class(name)(load_settings(environ={}), clock=lambda: NOW)


def stamp(offset: int) -> str:
    return str(int(NOW.timestamp()) + offset)


def provider_with(name: str, **settings):
    return provider_class(name)(load_settings(environ={}, **settings), clock=lambda: NOW)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_signed_timestamp_within_300_seconds_either_way_passes(offset: int) -> None:
    provider("standard").check_timestamp(stamp(offset))


@pytest.mark.parametrize("value", [stamp(-301), stamp(301), "", "soon", None])
def test_a_signed_timestamp_outside_the_tolerance_or_unreadable_is_unauthorized(value) -> None:
    with pytest.raises(Unauthorized):
        provider("standard").check_timestamp(value)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e9", f"{stamp(0)}.0", f" {stamp(0)}", "-1", "١٢٣", "²"])
def test_given_a_timestamp_that_is_not_whole_epoch_seconds_then_it_is_unauthorized(value) -> None:
    # float("nan") compares false with everything, so "nan" used to pass the window check.
    for name in ("sendgrid", "mailgun", "standard"):
        with pytest.raises(Unauthorized):
            provider(name).check_timestamp(value)


def test_given_no_setting_then_each_provider_keeps_its_documented_default_window() -> None:
    # SendGrid retries for 24 h and Mailgun for 8 h, neither documented as re-signed; Svix re-signs.
    assert {name: provider(name).tolerance_seconds() for name in ("sendgrid", "mailgun", "standard")} == {
        "sendgrid": 90000, "mailgun": 32400, "standard": 300,
    }
    provider("mailgun").check_timestamp(stamp(-8 * 3600))
    with pytest.raises(Unauthorized):
        provider("mailgun").check_timestamp(stamp(-9 * 3600 - 1))
    with pytest.raises(Unauthorized):  # the future stays at five minutes: a retry is never ahead of us
        provider("mailgun").check_timestamp(stamp(301))


def test_given_the_tolerance_setting_then_it_applies_to_every_provider_or_to_the_one_named() -> None:
    everyone = {"webhook_tolerance_seconds": "600"}
    assert provider_with("mailgun", **everyone).tolerance_seconds() == 600
    provider_with("standard", **everyone).check_timestamp(stamp(-599))
    per_provider = {"webhook_tolerance_seconds": "600,standard=3600"}
    assert provider_with("standard", **per_provider).tolerance_seconds() == 3600
    assert provider_with("sendgrid", **per_provider).tolerance_seconds() == 600


@pytest.mark.parametrize("value", ["0", "soon", "pigeon=60", "mailgun=", "mailgun=99999999"])
def test_a_bad_tolerance_setting_fails_at_configure_time_naming_the_variable(value) -> None:
    from chimeway.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS"):
        load_settings(environ={"CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS": value})


@pytest.mark.parametrize(
    ("sg_message_id", "expected"),
    [
        ("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "14c5d75ce93.dfd.64b469"),
        ("wrfRRvF7Q0GgwUo2CvDmEA.filter0425p1mdw1.13037.57168B4A1D.0", "wrfRRvF7Q0GgwUo2CvDmEA"),
        ("FYSIk8z7RM6GbfpFb6XQ5w.recvd-5f94b4d7d4-hzxk7-1-6488D8FC-2.0", "FYSIk8z7RM6GbfpFb6XQ5w"),
        ("filter0093p1las1.9128.5717FB8127.0", None),  # dropped before sending: no X-Message-Id
        (None, None),
    ],
)
def test_the_sendgrid_message_id_is_the_x_message_id_part_of_sg_message_id(sg_message_id, expected) -> None:
    assert message_id_of(sg_message_id) == expected


@pytest.mark.parametrize(
    ("event_type", "reject_reason", "expected"),
    [
        ("bounced", "bounced", "hard_bounce"),
        ("bounced", "invalid", "hard_bounce"),
        ("bounced", "blocked", None),  # a refusal that may clear: not the address's fault
        ("bounced", "other", None),
        ("deferred", None, None),  # soft bounces and deferrals never suppress
        ("complained", None, "complaint"),
        ("complained", "spam", "complaint"),
        ("rejected", "invalid", None),
        ("unsubscribed", "unsubscribed", None),
    ],
)
def test_only_hard_bounces_and_complaints_suppress(event_type, reject_reason, expected) -> None:
    assert reason_for(event_type, reject_reason) == expected


def test_a_body_that_is_not_json_is_malformed() -> None:
    request = WebhookRequest(headers={}, body=b"\xff{", received_at=NOW)
    with pytest.raises(Malformed):
        request.document  # noqa: B018


def test_an_unknown_provider_name_has_no_class() -> None:
    assert provider_class("carrier-pigeon") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999-12-31T23:59:59-01:00", None),  # past datetime.max once in UTC: unreadable, not an OverflowError
        ("0001-01-01T00:30:00+01:00", None),  # before datetime.min in UTC
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_an_iso_time_outside_what_utc_can_hold_is_unreadable(value, expected) -> None:
    from chimeway.webhooks.providers.base import parse_iso

    assert parse_iso(value) == expected


@pytest.mark.parametrize(
    ("smtp_id", "expected"),
    [
        ("<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>", "wrfRRvF7Q0GgwUo2CvDmEA"),
        ("<14c5d75ce93.dfd.64b469@ismtpd-555>", "14c5d75ce93.dfd.64b469"),
        ("no-at-sign", None),
        ("<@host>", None),
        (None, None),
        (["<a@b>"], None),
    ],
)
def test_the_sendgrid_smtp_id_gives_its_local_part(smtp_id, expected) -> None:
    from chimeway.webhooks.providers.sendgrid import smtp_local_part

    assert smtp_local_part(smtp_id) == expected


def test_an_echoed_delivery_id_is_kept_only_when_it_is_a_uuid() -> None:
    from chimeway.webhooks.providers.sendgrid import delivery_id_of

    assert delivery_id_of("C74002D9-7CCB-4F67-8B8C-766CEC03C9A6") == "c74002d9-7ccb-4f67-8b8c-766cec03c9a6"
    assert [delivery_id_of(value) for value in ("42", "", None, 42, "c74002d9-7ccb-4f67")] == [None] * 5
