"""SendGrid Event Webhook: ECDSA P-256 / SHA-256 signature over timestamp + raw body; batches.

Headers ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER signature) and
``X-Twilio-Email-Event-Webhook-Timestamp``; the verification key is the base64 DER (SPKI) public key
from the Mail Settings page. Verification uses ``cryptography``, never hand-rolled maths.

Linking, most reliable first: ``chimeway_delivery_id``, which the adapter puts in ``custom_args`` and
SendGrid echoes as a top-level field of every event; then the message id, the ``X-Message-Id``
SendGrid returned at send time (which the adapter stored). That id is the local part of ``smtp-id``
and the part of ``sg_message_id`` before ``.filter…`` / ``.recvd-…``; a ``dropped`` event's
``sg_message_id`` is the filter part alone, so ``smtp-id`` is read first.

Tolerance: SendGrid retries a batch for up to 24 hours after the event and its documentation does not
say that a retry is signed afresh, so the default window covers the retries (25 hours); replays are
refused by the body-hash and ``sg_event_id`` dedupe, as for any request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from typing import Any

from chimeway.states import EventType as E
from chimeway.states import RejectReason as R
from chimeway.webhooks.providers.base import (
    NormalizedEvent,
    NotConfigured,
    Provider,
    Unauthorized,
    WebhookRequest,
    parse_epoch,
    unknown,
)

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"

#: ``event`` -> ledger type.
EVENT_TYPES: dict[str, E] = {
    "processed": E.QUEUED,
    "deferred": E.DEFERRED,
    "delivered": E.DELIVERED,
    "bounce": E.BOUNCED,
    "dropped": E.REJECTED,
    "open": E.OPENED,
    "click": E.CLICKED,
    "spamreport": E.COMPLAINED,
    "unsubscribe": E.UNSUBSCRIBED,
    "group_unsubscribe": E.UNSUBSCRIBED,
    "group_resubscribe": E.SUBSCRIBED,
}

#: ``type`` of a bounce (``bounce`` is a hard bounce, ``blocked`` a refusal that may clear).
BOUNCE_REASONS: dict[str, R] = {"bounce": R.BOUNCED, "blocked": R.BLOCKED, "expired": R.TIMED_OUT}

#: ``reason`` of a dropped message, lower-cased.
DROP_REASONS: dict[str, R] = {
    "invalid": R.INVALID,
    "invalid smtpapi header": R.INVALID,
    "unsubscribed address": R.UNSUBSCRIBED,
    "bounced address": R.BOUNCED,
    "spam reporting address": R.SPAM,
    "expired": R.TIMED_OUT,
}


@functools.lru_cache(maxsize=8)
def _public_key(encoded: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as err:
        raise NotConfigured("CHIMEWAY_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise NotConfigured("CHIMEWAY_SENDGRID_WEBHOOK_PUBLIC_KEY must be an ECDSA P-256 key")
    return key


def message_id_of(sg_message_id: Any) -> str | None:
    if not isinstance(sg_message_id, str) or not sg_message_id or sg_message_id.startswith("filter"):
        return None  # dropped messages carry only the filter part: no X-Message-Id to match
    for marker in (".filter", ".recvd-"):
        if marker in sg_message_id:
            return sg_message_id.split(marker, 1)[0]
    return sg_message_id


def smtp_local_part(smtp_id: Any) -> str | None:
    """``<W86EgYT6SQKk0lRflfLRsA@ismtpd0001p1lon1.sendgrid.net>`` -> ``W86EgYT6SQKk0lRflfLRsA``."""
    if not isinstance(smtp_id, str):
        return None
    local, at, _ = smtp_id.strip().strip("<>").partition("@")
    return local if at and local else None


def delivery_id_of(value: Any) -> str | None:
    """The echoed ``chimeway_delivery_id`` in canonical form, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


class SendgridProvider(Provider):
    name = "sendgrid"
    required_settings = ("sendgrid_webhook_public_key",)
    default_tolerance_seconds = 25 * 3600
    batches = True

    def verify(self, request: WebhookRequest) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = _public_key(self.settings.sendgrid_webhook_public_key)
        signature, timestamp = request.header(SIGNATURE_HEADER), request.header(TIMESTAMP_HEADER)
        if not signature:
            raise Unauthorized("missing signature")
        self.check_timestamp(timestamp)
        try:
            key.verify(
                base64.b64decode(signature, validate=True),
                str(timestamp).encode("ascii") + request.body,
                ec.ECDSA(hashes.SHA256()),
            )
        except (binascii.Error, ValueError, UnicodeEncodeError, InvalidSignature):
            raise Unauthorized("signature does not match") from None

    def normalize(self, raw: dict[str, Any], request: WebhookRequest) -> NormalizedEvent:
        code = raw.get("event")
        occurred_at = parse_epoch(raw.get("timestamp")) or request.received_at
        fields = {
            "message_id": smtp_local_part(raw.get("smtp-id")) or message_id_of(raw.get("sg_message_id")),
            "event_id": raw.get("sg_event_id") or None,
            "delivery_id": delivery_id_of(raw.get("chimeway_delivery_id")),
        }
        event_type = EVENT_TYPES.get(code)  # type: ignore[arg-type]
        if event_type is None:
            return unknown(code, raw, occurred_at, **fields)
        reason = None
        if event_type is E.BOUNCED:
            reason = BOUNCE_REASONS.get(str(raw.get("type", "bounce")).lower(), R.OTHER)
        elif event_type is E.REJECTED:
            reason = DROP_REASONS.get(str(raw.get("reason", "")).lower(), R.OTHER)
        return NormalizedEvent(event_type, occurred_at, reject_reason=reason, metadata={"code": code}, **fields)
