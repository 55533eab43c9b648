"""Prune deletes raw webhook rows past the retention and never a ledger row."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from chimeway import db
from chimeway.models import Event, WebhookEvent
from chimeway.webhooks import handle, prune


def post(secrets, message_id: str) -> None:
    credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
    body = json.dumps({"RecordType": "Delivery", "MessageID": message_id, "DeliveredAt": "2019-11-05T16:33:54Z"})
    assert handle("postmark", {"Authorization": f"Basic {credentials}"}, body) == (200, "ok")


def test_raw_rows_older_than_the_retention_are_deleted_and_counted(webhooks, secrets) -> None:
    post(secrets, "pm-1")
    post(secrets, "pm-2")
    days = webhooks.settings.webhook_retention_days
    assert prune(runtime=webhooks, now=db.now() + timedelta(days=days - 1)) == 0
    assert prune(runtime=webhooks, now=db.now() + timedelta(days=days, seconds=1)) == 2
    assert WebhookEvent.select().count() == 0
    assert Event.select().count() == 2  # the ledger stays whole


def test_the_retention_can_be_given_per_call(webhooks, secrets) -> None:
    post(secrets, "pm-3")
    assert prune(runtime=webhooks, retention_days=30) == 0
    assert prune(runtime=webhooks, retention_days=0, now=db.now() + timedelta(seconds=1)) == 1


def test_a_negative_retention_is_refused(webhooks) -> None:
    with pytest.raises(ValueError, match="retention_days"):
        prune(runtime=webhooks, retention_days=-1)
