"""Standard Webhooks (and Svix, which signs the same way under ``svix-*`` header names).

Signing is the ``standardwebhooks`` library's: HMAC-SHA256 over ``id.timestamp.body`` with the
``whsec_…`` secret. The timestamp window is Chimeway's own (``CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS``,
default five minutes, as the library's): Svix documents the timestamp as that of the delivery
attempt, so a retry is signed afresh. ``webhook-id`` is the event id (stable across retries). The payload is ``{"type", "created_at" | "timestamp", "data"}``; types are
Resend-style ``email.*`` names or Chimeway's own ledger vocabulary (``delivered``, ``bounced``…).
"""

from __future__ import annotations

import binascii
import functools
import hmac
from datetime import UTC, datetime
from typing import Any

from chimeway.states import EventType as E
from chimeway.states import RejectReason as R
from chimeway.webhooks.providers.base import (
    NormalizedEvent,
    NotConfigured,
    Provider,
    Unauthorized,
    WebhookRequest,
    parse_iso,
    unknown,
)

#: ``type`` -> ledger type. Chimeway's own vocabulary maps onto itself.
EVENT_TYPES: dict[str, E] = {
    "email.scheduled": E.QUEUED,
    "email.sent": E.SENT,
    "email.delivered": E.DELIVERED,
    "email.delivery_delayed": E.DEFERRED,
    "email.bounced": E.BOUNCED,
    "email.complained": E.COMPLAINED,
    "email.opened": E.OPENED,
    "email.clicked": E.CLICKED,
    "email.failed": E.FAILED,
    **{member.value: member for member in E if member not in (E.UNKNOWN, E.RECONCILED)},
}

#: ``data.bounce.type`` -> (ledger type, reject reason); a bounce without detail is permanent.
BOUNCE_TYPES: dict[str, tuple[E, R]] = {
    "permanent": (E.BOUNCED, R.BOUNCED),
    "transient": (E.DEFERRED, R.OTHER),
    "undetermined": (E.BOUNCED, R.OTHER),
}

_HEADERS = ("id", "timestamp", "signature")


@functools.lru_cache(maxsize=8)
def _webhook(secret: str) -> Any:
    from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

    try:
        return Webhook(secret)
    except (EmptyWebhookSecretError, binascii.Error, ValueError) as err:
        raise NotConfigured("CHIMEWAY_STANDARD_WEBHOOK_SECRET is not a whsec_… base64 secret") from err


def _signing_headers(request: WebhookRequest) -> dict[str, str]:
    """``webhook-*`` headers, falling back to Svix's ``svix-*`` names."""
    found = {}
    for part in _HEADERS:
        value = request.header(f"webhook-{part}") or request.header(f"svix-{part}")
        if value:
            found[f"webhook-{part}"] = value
    return found


class StandardProvider(Provider):
    name = "standard"
    required_settings = ("standard_webhook_secret",)

    def verify(self, request: WebhookRequest) -> None:
        webhook = _webhook(self.settings.standard_webhook_secret)
        headers = _signing_headers(request)
        if len(headers) != len(_HEADERS):
            raise Unauthorized("missing signature headers")
        signed_at = datetime.fromtimestamp(self.check_timestamp(headers["webhook-timestamp"]), tz=UTC)
        try:
            # The library's verify() also enforces its own fixed five minutes; sign() and compare instead.
            expected = webhook.sign(headers["webhook-id"], signed_at, request.body.decode("utf-8")).encode()
        except (ValueError, UnicodeError):  # an undecodable body or id cannot carry a valid signature
            raise Unauthorized("signature does not match") from None
        given = [sig.encode() for sig in headers["webhook-signature"].split(" ") if sig.isascii()]
        if not any(hmac.compare_digest(expected, candidate) for candidate in given):
            raise Unauthorized("signature does not match")

    def request_id(self, request: WebhookRequest) -> str | None:
        return _signing_headers(request).get("webhook-id")

    def normalize(self, raw: dict[str, Any], request: WebhookRequest) -> NormalizedEvent:
        code = raw.get("type")
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        occurred_at = parse_iso(raw.get("created_at")) or parse_iso(raw.get("timestamp")) or request.received_at
        message_id = data.get("email_id") or data.get("message_id") or None
        event_type = EVENT_TYPES.get(code) if isinstance(code, str) else None
        if event_type is None:
            return unknown(code, raw, occurred_at, message_id=message_id)
        reason = None
        if event_type is E.BOUNCED:
            bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
            event_type, reason = BOUNCE_TYPES.get(str(bounce.get("type", "permanent")).lower(), (E.BOUNCED, R.OTHER))
        elif event_type is E.COMPLAINED:
            reason = R.SPAM
        return NormalizedEvent(event_type, occurred_at, message_id, None, reason, {"code": code})
