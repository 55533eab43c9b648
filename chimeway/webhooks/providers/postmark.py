"""Postmark: HTTP basic auth on the webhook URL; one JSON event per request.

Tables from https://postmarkapp.com/developer/webhooks/webhooks-overview and the bounce type codes
of the Bounce API (``TypeCode``). Soft bounces and transient failures map to ``deferred``: they
never suppress an address.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from chimeway.states import EventType as E
from chimeway.states import RejectReason as R
from chimeway.webhooks.providers.base import (
    NormalizedEvent,
    Provider,
    Unauthorized,
    WebhookRequest,
    parse_iso,
    unknown,
)

#: RecordType -> ledger type, for records whose type needs no further detail.
RECORD_TYPES: dict[str, tuple[E, R | None]] = {
    "Delivery": (E.DELIVERED, None),
    "Open": (E.OPENED, None),
    "Click": (E.CLICKED, None),
    "SpamComplaint": (E.COMPLAINED, R.SPAM),
}

#: Bounce ``TypeCode`` -> (ledger type, reject reason).
BOUNCE_TYPE_CODES: dict[int, tuple[E, R | None]] = {
    1: (E.BOUNCED, R.BOUNCED),  #: HardBounce
    2: (E.DEFERRED, None),  #: Transient
    16: (E.UNSUBSCRIBED, R.UNSUBSCRIBED),  #: Unsubscribe
    32: (E.SUBSCRIBED, None),  #: Subscribe
    64: (E.AUTORESPONDED, None),  #: AutoResponder
    128: (E.AUTORESPONDED, None),  #: AddressChange
    256: (E.DEFERRED, None),  #: DnsError
    512: (E.COMPLAINED, R.SPAM),  #: SpamNotification
    1024: (E.DEFERRED, None),  #: OpenRelayTest
    4096: (E.DEFERRED, None),  #: SoftBounce: may turn into a HardBounce later
    8192: (E.BOUNCED, R.OTHER),  #: VirusNotification
    16384: (E.AUTORESPONDED, None),  #: ChallengeVerification
    100000: (E.REJECTED, R.INVALID),  #: BadEmailAddress
    100001: (E.COMPLAINED, R.SPAM),  #: SpamComplaint
    100002: (E.REJECTED, R.BLOCKED),  #: ManuallyDeactivated
    100003: (E.REJECTED, R.OTHER),  #: Unconfirmed
    100006: (E.REJECTED, R.BLOCKED),  #: Blocked
    100007: (E.FAILED, None),  #: SMTPApiError
    100009: (E.REJECTED, R.BLOCKED),  #: DMARCPolicy
    100010: (E.FAILED, None),  #: TemplateRenderingFailed
}

#: SubscriptionChange ``SuppressionReason`` -> (ledger type, reject reason) when sending is suppressed.
SUPPRESSION_REASONS: dict[str, tuple[E, R | None]] = {
    "HardBounce": (E.BOUNCED, R.BOUNCED),
    "SpamComplaint": (E.COMPLAINED, R.SPAM),
    "ManualSuppression": (E.UNSUBSCRIBED, R.UNSUBSCRIBED),
}

_TIME_FIELDS = ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt")


class PostmarkProvider(Provider):
    name = "postmark"
    required_settings = ("postmark_webhook_user", "postmark_webhook_password")

    def verify(self, request: WebhookRequest) -> None:
        scheme, _, encoded = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthorized("missing basic auth credentials")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII text b64decode refuses
            raise Unauthorized("malformed basic auth credentials") from None
        # Compare both parts, always, so timing reveals neither which part nor how much matched.
        user_ok = hmac.compare_digest(user.encode(), self.settings.postmark_webhook_user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.settings.postmark_webhook_password.encode())
        if not (sep and user_ok and password_ok):
            raise Unauthorized("wrong basic auth credentials")

    def normalize(self, raw: dict[str, Any], request: WebhookRequest) -> NormalizedEvent:
        record = raw.get("RecordType")
        occurred_at = next(filter(None, (parse_iso(raw.get(name)) for name in _TIME_FIELDS)), request.received_at)
        message_id = raw.get("MessageID") or None
        event_id = str(raw["ID"]) if raw.get("ID") is not None else None
        if record == "Bounce":
            mapped = BOUNCE_TYPE_CODES.get(raw.get("TypeCode"))  # type: ignore[arg-type]
        elif record == "SubscriptionChange":
            if raw.get("SuppressSending"):
                mapped = SUPPRESSION_REASONS.get(raw.get("SuppressionReason"))  # type: ignore[arg-type]
            else:
                mapped = (E.SUBSCRIBED, None)
        else:
            mapped = RECORD_TYPES.get(record)  # type: ignore[arg-type]
        code = raw.get("TypeCode", raw.get("SuppressionReason")) if record in ("Bounce", "SubscriptionChange") else None
        if mapped is None:
            return unknown(code if code is not None else record, raw, occurred_at, message_id=message_id, event_id=event_id)
        event_type, reason = mapped
        metadata = {"code": record if code is None else f"{record}:{code}"}
        return NormalizedEvent(event_type, occurred_at, message_id, event_id, reason, metadata)
