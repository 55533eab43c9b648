"""What a webhook request leaves behind in telemetry and logs: counts and names, never its content."""

from __future__ import annotations

import base64
import json
import logging

from chimeway import telemetry
from chimeway.api import reconcile
from chimeway.webhooks import handle

RECIPIENT = "secret-recipient@example.com"


def test_ingest_and_reconcile_telemetry_carry_only_whitelisted_metadata(webhooks, secrets, make_delivery, orphan) -> None:
    seen: list[tuple[str, str, dict]] = []

    def handler(event: str, phase: str, metadata: dict) -> None:
        seen.append((event, phase, metadata))

    telemetry.attach(handler)
    try:
        make_delivery("postmark", "pm-tel", recipient=RECIPIENT)
        credentials = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
        body = json.dumps({"RecordType": "Delivery", "MessageID": "pm-tel", "Recipient": RECIPIENT,
                           "DeliveredAt": "2019-11-05T16:33:54Z"})
        assert handle("postmark", {"Authorization": f"Basic {credentials}"}, body) == (200, "ok")
        orphan("postmark", "pm-nobody")
        reconcile()
    finally:
        telemetry.detach(handler)
    stops = {event: metadata for event, phase, metadata in seen if phase == "stop"}
    assert stops["ingest"]["http_status"] == 200 and stops["ingest"]["event_count"] == 1
    assert (stops["reconcile"]["scanned"], stops["reconcile"]["linked"]) == (1, 0)
    for _, _, metadata in seen:
        assert set(metadata) <= telemetry.ALLOWED_KEYS
        assert not any(secret in json.dumps(metadata, default=str) for secret in (RECIPIENT, secrets.postmark_password))


def test_logs_of_refused_and_accepted_requests_hold_no_credentials_or_payload(webhooks, secrets, caplog) -> None:
    body = json.dumps({"RecordType": "Delivery", "MessageID": "pm-log", "Recipient": RECIPIENT})
    wrong = base64.b64encode(f"{secrets.postmark_user}:guess-{secrets.postmark_password}".encode()).decode()
    right = base64.b64encode(f"{secrets.postmark_user}:{secrets.postmark_password}".encode()).decode()
    with caplog.at_level(logging.DEBUG, logger="chimeway"):
        assert handle("postmark", {"Authorization": f"Basic {wrong}"}, body).status == 401
        assert handle("postmark", {"Authorization": f"Basic {right}"}, b"{not json").status == 400
        assert handle("postmark", {"Authorization": f"Basic {right}"}, body).status == 200
    text = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("chimeway"))
    assert "failed verification" in text and "malformed" in text
    for secret in (RECIPIENT, secrets.postmark_password, wrong, right, "pm-log"):
        assert secret not in text
