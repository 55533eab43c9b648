"""Provider steps that need no database: timestamps, message ids, the suppression rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chimeway.config import load_settings
from chimeway.webhooks.providers import provider_class
from chimeway.webhooks.providers.base import Malformed, Unauthorized, WebhookRequest
from chimeway.webhooks.providers.sendgrid import message_id_of
from chimeway.webhooks.suppressions import reason_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def provider(name: str):
    return provider_class(name)(load_settings(environ={}), clock=lambda: NOW)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_signed_timestamp_within_300_seconds_either_way_passes(offset: int) -> None:
    provider("sendgrid").check_timestamp(str(NOW.timestamp() + offset))


@pytest.mark.parametrize("value", [str(NOW.timestamp() - 301), str(NOW.timestamp() + 301), "", "soon", None])
def test_a_signed_timestamp_outside_the_tolerance_or_unreadable_is_unauthorized(value) -> None:
    with pytest.raises(Unauthorized):
        provider("mailgun").check_timestamp(value)


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
