"""Mailgun (JSON webhooks): HMAC-SHA256 over timestamp + token, inside the body's ``signature`` block.

The signature covers the timestamp and token only, not the event, so a captured signature could be
re-used with a forged event: the token is therefore the request id, and a token seen twice is a
replay (the raw-row dedupe answers 200 and stores nothing). Anymail uses the token as the event id
for the same reason — ``event-data.id`` is only unique within a day.

Mailgun retries a failed POST for 8 hours (5 min, 10 min, 15 min, 1 h, 2 h, 4 h) and its documentation
does not say that a retry is signed afresh, so the default window is 9 hours; the token dedupe still
refuses a replay. Legacy form-encoded webhooks are answered 406, which Mailgun takes as "rejected, do
not retry": configure the JSON webhooks instead.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from chimeway.states import EventType as E
from chimeway.states import RejectReason as R
from chimeway.webhooks.providers.base import (
    Malformed,
    NormalizedEvent,
    NotAcceptable,
    Provider,
    Unauthorized,
    WebhookRequest,
    parse_epoch,
    unknown,
)

#: ``event-data.event`` -> ledger type.
EVENT_TYPES: dict[str, E] = {
    "accepted": E.QUEUED,
    "rejected": E.REJECTED,
    "delivered": E.DELIVERED,
    "failed": E.BOUNCED,  # permanent; a temporary failure is a deferral (below)
    "opened": E.OPENED,
    "clicked": E.CLICKED,
    "unsubscribed": E.UNSUBSCRIBED,
    "complained": E.COMPLAINED,
}

#: ``event-data.reason`` -> reject reason.
REJECT_REASONS: dict[str, R] = {
    "bounce": R.BOUNCED,
    "suppress-bounce": R.BOUNCED,
    "suppress-complaint": R.SPAM,
    "suppress-unsubscribe": R.UNSUBSCRIBED,
    "old": R.TIMED_OUT,
    "generic": R.OTHER,
}


class MailgunProvider(Provider):
    name = "mailgun"
    required_settings = ("mailgun_webhook_signing_key",)
    default_tolerance_seconds = 9 * 3600

    #: The legacy webhooks' content types (form fields instead of a JSON body).
    LEGACY_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

    def _signature_block(self, request: WebhookRequest) -> dict[str, Any]:
        document = request.document  # the signature lives in the body: undecodable is 400
        block = document.get("signature") if isinstance(document, dict) else None
        return block if isinstance(block, dict) else {}

    def verify(self, request: WebhookRequest) -> None:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type in self.LEGACY_CONTENT_TYPES:
            raise NotAcceptable("legacy form-encoded Mailgun webhooks are not accepted: use the JSON webhooks")
        block = self._signature_block(request)
        token, timestamp, signature = block.get("token"), block.get("timestamp"), block.get("signature")
        if not all(isinstance(value, str | int) and value for value in (token, timestamp, signature)):
            raise Unauthorized("missing signature")
        self.check_timestamp(str(timestamp))
        try:  # a lone surrogate in the token or signature cannot be encoded: it cannot match either
            signed, given = f"{timestamp}{token}".encode(), str(signature).encode()
        except UnicodeEncodeError:
            raise Unauthorized("signature does not match") from None
        key = self.settings.mailgun_webhook_signing_key.encode("utf-8")
        if not hmac.compare_digest(given, hmac.new(key, signed, hashlib.sha256).hexdigest().encode()):
            raise Unauthorized("signature does not match")

    def request_id(self, request: WebhookRequest) -> str | None:
        return str(self._signature_block(request)["token"])

    def parse(self, request: WebhookRequest) -> list[Any]:
        event = request.document.get("event-data")
        if not isinstance(event, dict):
            raise Malformed("missing event-data")
        return [event]

    def normalize(self, raw: dict[str, Any], request: WebhookRequest) -> NormalizedEvent:
        code = raw.get("event")
        occurred_at = parse_epoch(raw.get("timestamp")) or request.received_at
        headers = (raw.get("message") or {}).get("headers") or {}
        message_id = headers.get("message-id") if isinstance(headers, dict) else None
        # Mailgun's send API answers "<id@domain>"; its webhooks drop the angle brackets.
        if isinstance(message_id, str) and message_id and not message_id.startswith("<"):
            message_id = f"<{message_id}>"
        event_type = EVENT_TYPES.get(code)  # type: ignore[arg-type]
        if event_type is None:
            return unknown(code, raw, occurred_at, message_id=message_id or None)
        severity = raw.get("severity")
        if event_type is E.BOUNCED and severity == "temporary":
            event_type = E.DEFERRED
        reason = REJECT_REASONS.get(raw.get("reason"), R.OTHER) if "reason" in raw else None  # type: ignore[arg-type]
        if event_type is E.REJECTED:
            reason = reason or R.OTHER
        metadata = {"code": code if severity is None else f"{code}:{severity}"}
        return NormalizedEvent(event_type, occurred_at, message_id or None, None, reason, metadata)
