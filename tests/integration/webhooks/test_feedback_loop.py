"""The whole loop a user meets: send → provider accepts → hard-bounce webhook → the next send is suppressed."""

from __future__ import annotations

import base64
import json

import chimeway
from chimeway.models import Suppression
from chimeway.testing import drain, fake_calls, start_worker
from chimeway.webhooks import handle
from chimeway.wiring import runtime as runtime_mod


def test_a_hard_bounce_suppresses_the_next_send_to_that_address(database_url, secrets) -> None:
    runtime = runtime_mod.configure(
        database_url=database_url, redis_url="", environ={}, default_adapter="fake", **secrets.settings()
    )
    try:
        runtime.registry.adapter_class("fake").reset()
        first = chimeway.send(
            "email", "Ann@Example.com",
            {"fake_provider": "postmark", "fake_provider_message_id": "883953f4-6105-42a2-a16a-77a8eac79483"},
        )
        with start_worker(runtime):
            assert drain(runtime) == []
        assert chimeway.get_delivery(first.id).provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"

        bounce = {
            "RecordType": "Bounce", "ID": 4323372036, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "MessageStream": "outbound",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": "ann@example.com", "From": "sender@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        }
        credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
        assert handle("postmark", {"Authorization": f"Basic {credentials}"}, json.dumps(bounce)) == (200, "ok")
        assert [(s.address, s.reason) for s in Suppression.select()] == [("ann@example.com", "hard_bounce")]
        bounced = chimeway.get_delivery(first.id)
        assert (bounced.status, bounced.last_event_type) == ("succeeded", "bounced")  # status is never rewritten

        second = chimeway.send("email", "ann@example.com")
        with start_worker(runtime):
            assert drain(runtime) == []
        row = chimeway.get_delivery(second.id)
        assert (row.status, row.reason) == ("suppressed", "recipient_suppressed")
        assert fake_calls(second.id, runtime) == []
    finally:
        runtime_mod.reset()
