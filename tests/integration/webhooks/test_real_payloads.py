"""Provider payloads as the providers really send them, signed and posted through ``handle()``.

The shapes follow the providers' documentation and django-anymail's test fixtures (SendGrid's
``test_dropped_invalid_event``, Mailgun's legacy form posts); ids are fresh per test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from chimeway.models import Delivery, Event
from chimeway.webhooks import handle
from tests.integration.webhooks import test_provider_contract as contract
from tests.integration.webhooks.test_hostile_bodies import mailgun_signed, sendgrid_signed

NOTHING = {"webhook_events": 0, "events": 0, "suppressions": 0}


def sendgrid_post(secrets: Any, events: list[dict[str, Any]], *, age: float = 0) -> tuple[int, str]:
    body = json.dumps(events).encode()
    return handle("sendgrid", sendgrid_signed(secrets, body, str(int(time.time() - age))), body)


def dropped(smtp_local: str, **fields: Any) -> dict[str, Any]:
    """A ``dropped`` event as SendGrid posts it: ``sg_message_id`` is the filter part alone."""
    return {
        "email": "invalid@invalid",
        "timestamp": 1461095250,
        "smtp-id": f"<{smtp_local}@ismtpd0006p1sjc2.sendgrid.net>",
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "filter0093p1las1.9128.5717FB8127.0",
        "reason": "Invalid",
        "event": "dropped",
        **fields,
    }


# -- SendGrid dropped events ---------------------------------------------------------------------------


def test_given_a_dropped_event_echoing_the_delivery_id_then_it_is_linked_to_that_delivery(webhooks, secrets, make_delivery) -> None:
    # custom_args come back as top-level fields; the adapter sent chimeway_delivery_id in them.
    delivery = make_delivery("sendgrid", "wrfRRvF7Q0GgwUo2CvDmEA")
    other_smtp_id = "SomethingElse"  # the link by delivery id wins over a message id that matches nothing
    assert sendgrid_post(secrets, [dropped(other_smtp_id, chimeway_delivery_id=str(delivery.id))]) == (200, "ok")
    event = Event.get()
    assert (event.type, event.reject_reason, event.delivery_id, event.needs_reconciliation) == (
        "rejected", "invalid", delivery.id, False,
    )
    assert Delivery.get_by_id(delivery.id).last_event_type == "rejected"


def test_given_a_dropped_event_without_custom_args_then_it_is_linked_by_the_smtp_id(webhooks, secrets, make_delivery) -> None:
    delivery = make_delivery("sendgrid", "wrfRRvF7Q0GgwUo2CvDmEA")  # the X-Message-Id the send answered
    assert sendgrid_post(secrets, [dropped("wrfRRvF7Q0GgwUo2CvDmEA")]) == (200, "ok")
    event = Event.get()
    assert (event.delivery_id, event.provider_message_id) == (delivery.id, "wrfRRvF7Q0GgwUo2CvDmEA")


def test_given_a_dropped_event_before_its_message_id_is_recorded_then_it_is_an_orphan_reconcile_can_link(
    webhooks, secrets, make_delivery
) -> None:
    from chimeway.api import reconcile

    assert sendgrid_post(secrets, [dropped("LateMessageId")]) == (200, "ok")
    orphan = Event.get()
    assert (orphan.delivery_id, orphan.provider_message_id, orphan.needs_reconciliation) == (None, "LateMessageId", True)
    delivery = make_delivery("sendgrid", "LateMessageId")
    reconcile(now=orphan.received_at + timedelta(hours=1))  # past the grace period
    assert Event.get(Event.type == "reconciled").delivery_id == delivery.id


def test_given_an_echoed_delivery_id_of_another_tenant_then_it_is_not_linked(webhooks, secrets, make_delivery) -> None:
    delivery = make_delivery("sendgrid", "TenantBound", tenant_id="acme")
    assert sendgrid_post(secrets, [dropped("Unrelated", chimeway_delivery_id=str(delivery.id))]) == (200, "ok")
    assert Event.get().delivery_id is None


def test_given_an_echoed_delivery_id_that_is_not_a_uuid_then_the_event_is_still_stored(webhooks, secrets) -> None:
    assert sendgrid_post(secrets, [dropped("NotAUuid", chimeway_delivery_id="'; DROP TABLE x; --")]) == (200, "ok")
    assert Event.get().provider_message_id == "NotAUuid"


# -- SendGrid empty batch ------------------------------------------------------------------------------


def test_given_an_empty_sendgrid_batch_then_200_and_no_events(webhooks, secrets, counts) -> None:
    assert sendgrid_post(secrets, []) == (200, "ok")
    assert counts()["events"] == 0


# -- Mailgun legacy form-encoded webhooks ------------------------------------------------------------------


def legacy_mailgun_form(secrets: Any) -> dict[str, str]:
    """A legacy (pre-2018) Mailgun ``delivered`` webhook: form fields, signature fields at top level."""
    stamp, token = str(int(time.time())), uuid.uuid4().hex + uuid.uuid4().hex[:18]
    return {
        "domain": "example.com", "event": "delivered", "recipient": "alice@example.com",
        "Message-Id": "<20180320150620.1.C09AB4E6C4D6F2A7@example.com>", "timestamp": stamp, "token": token,
        "signature": hmac.new(secrets.mailgun_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest(),
        "message-headers": json.dumps([["Message-Id", "<20180320150620.1.C09AB4E6C4D6F2A7@example.com>"]]),
    }


def test_given_a_legacy_form_encoded_mailgun_webhook_then_406_so_mailgun_stops_retrying(webhooks, secrets, counts) -> None:
    body = urlencode(legacy_mailgun_form(secrets)).encode()
    status, text = handle("mailgun", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 406 and "JSON webhooks" in text
    assert counts() == NOTHING


def test_given_a_legacy_multipart_mailgun_webhook_then_406(webhooks, secrets, counts) -> None:
    boundary = "----chimeway"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in legacy_mailgun_form(secrets).items()
    )
    body = f"{parts}--{boundary}--\r\n".encode()
    status, _ = handle("mailgun", {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    assert status == 406
    assert counts() == NOTHING


# -- signature age: retries that carry the original timestamp --------------------------------------------


def test_given_a_sendgrid_retry_signed_two_hours_ago_then_it_is_accepted(webhooks, secrets) -> None:
    # A 503 asks SendGrid to retry for up to 24 hours; an original timestamp must not refuse the retry.
    assert sendgrid_post(secrets, contract.TestSendgrid().document("delivered", "retry-2h"), age=2 * 3600) == (200, "ok")


def test_given_a_mailgun_retry_signed_four_hours_ago_then_it_is_accepted_and_a_replay_still_changes_nothing(
    webhooks, secrets, counts
) -> None:
    event_data = contract.TestMailgun().document("delivered", "retry-4h")["event-data"]
    headers, body = mailgun_signed(secrets, event_data, str(int(time.time() - 4 * 3600)))
    assert handle("mailgun", headers, body) == (200, "ok")
    assert handle("mailgun", headers, body) == (200, "duplicate")  # the token dedupe refuses the replay
    assert counts()["events"] == 1


@pytest.mark.parametrize("setting", ["60", "300,mailgun=60"])
def test_given_a_shorter_tolerance_setting_then_an_older_signature_is_refused(webhooks_with, secrets, counts, setting) -> None:
    webhooks_with(webhook_tolerance_seconds=setting)
    event_data = contract.TestMailgun().document("delivered", "short-window")["event-data"]
    assert handle("mailgun", *mailgun_signed(secrets, event_data, str(int(time.time() - 120)))) == (401, "unauthorized")
    assert counts() == NOTHING


def test_given_a_longer_tolerance_for_standard_webhooks_then_the_librarys_five_minutes_do_not_apply(webhooks_with, secrets) -> None:
    webhooks_with(webhook_tolerance_seconds="standard=3600")
    signer = contract.TestStandardWebhooks()
    headers, body = signer.sign(secrets, signer.document("email.delivered", "std-old"), timestamp=time.time() - 1800)
    assert handle("standard", headers, body) == (200, "ok")
