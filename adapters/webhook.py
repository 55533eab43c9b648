"""``webhook``: POST a JSON body to the recipient URL, signed with Standard Webhooks headers.

Recipient: the receiver's URL (``https://…``). Payload: the JSON body itself, sent as given
(Standard Webhooks recommends ``{"type": "...", "timestamp": "...", "data": {...}}``).

Headers on every request (https://www.standardwebhooks.com, signed with the ``standardwebhooks``
library): ``webhook-id`` is the delivery's idempotency key, the same on every attempt, so a receiver
can drop a retry of a request it already processed; ``webhook-timestamp`` is the time of this
attempt (receivers refuse timestamps more than 5 minutes off); ``webhook-signature`` is
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``. ``Idempotency-Key`` carries the same key for
receivers that dedupe on that header instead.

Options (``configure(adapters={"webhook": {...}})`` or ``CHIMEWAY_WEBHOOK_<OPTION>``):

================  =======================================================  ========
option            meaning                                                  default
================  =======================================================  ========
secret            signing secret, ``whsec_<base64>`` (secret)              required
timeout           seconds the whole call may take                          10
allowed_networks  CIDRs opened besides public addresses (``127.0.0.0/8``)  none
================  =======================================================  ========

The recipient URL is the sender's, so where it may lead is checked (server-side request forgery):
its host is resolved once and only public addresses are connected to — never loopback, private
(RFC 1918, ``fc00::/7``), link-local (cloud metadata at ``169.254.169.254``), carrier-grade NAT,
multicast, unspecified or reserved ones, nor IPv6 forms leading to them (IPv4-mapped, 6to4, NAT64),
however the host is written (``localhost``, ``0x7f000001``, ``2130706433``, ``127.1``…). The
connection goes to the address that was checked, while the Host header and TLS certificate
verification stay the URL's. ``allowed_networks`` (``CHIMEWAY_WEBHOOK_ALLOWED_NETWORKS``) opens chosen
networks, e.g. ``127.0.0.0/8`` for local development. A URL with user:password@ in it is refused too
(it would be sent as Basic credentials). A refused URL is permanent: the delivery is cancelled
(permanent_failure) and the attempt row says why.

Outcomes: 2xx → succeeded (the provider message id is the webhook-id); 410 Gone → bounced (the
endpoint is gone for good: REST Hooks' "unsubscribe" signal); 408, 425, 429, 5xx, timeouts and
connection errors → temporary, honouring ``Retry-After`` (seconds or an HTTP-date); redirects and
every other 4xx → permanent.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from standardwebhooks import Webhook

from chimeway.adapter import BouncedError, Classification, Option, PermanentError, SendRequest

from ._http import AddressPolicy, HttpAdapter, HttpCall, parse_networks, timeout_option


def _secret(value: Any) -> str:
    """A ``whsec_<base64>`` secret (or bare base64), strictly decoded: the library alone skips bad characters."""
    text = str(value).strip()
    encoded = text.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("expected a Standard Webhooks secret: whsec_ followed by base64") from err
    if len(key) < 16:
        raise ValueError("expected a Standard Webhooks secret of at least 16 bytes")
    return text


class WebhookAdapter(HttpAdapter):
    name = "webhook"
    channel = "webhook"
    options: ClassVar[dict[str, Option]] = {
        "secret": Option(
            required=True,
            parse=_secret,
            secret=True,
            doc="expected a Standard Webhooks secret: whsec_<base64>",
        ),
        "timeout": timeout_option("seconds the whole call to the receiver may take"),
        "allowed_networks": Option(
            default=AddressPolicy(),
            parse=parse_networks,
            doc="expected comma-separated networks in CIDR form, e.g. 127.0.0.0/8,10.20.0.0/16",
        ),
    }
    idempotency_header = "Idempotency-Key"
    status_outcomes: ClassVar[dict[int, Classification]] = {
        410: (BouncedError, "HTTP 410: the endpoint is gone; stop sending to it"),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._signer = Webhook(options["secret"])

    def address_policy(self) -> AddressPolicy:
        return self.config.get("allowed_networks") or AddressPolicy()

    def build(self, request: SendRequest) -> HttpCall:
        if not request.recipient.startswith(("https://", "http://")):
            raise PermanentError(
                "webhook recipient must be an http:// or https:// URL",
                response={"error": "invalid_recipient"},
            )
        try:
            userinfo = httpx.URL(request.recipient).userinfo
        except httpx.InvalidURL as err:
            raise PermanentError("webhook: the URL is not usable", response={"error": "invalid_url"}) from err
        if userinfo:
            raise PermanentError(
                "webhook recipient must not carry user:password@ (it would be sent as Basic credentials)",
                response={"error": "invalid_recipient", "reason": "userinfo"},
            )
        try:
            body = json.dumps(dict(request.payload), separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise PermanentError(
                "webhook payload is not JSON-serializable", response={"error": "invalid_payload"}
            ) from err
        now = datetime.now(UTC)
        webhook_id = request.idempotency_key
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, now, body),
        }
        return HttpCall(url=request.recipient, content=body.encode("utf-8"), headers=headers)

    def message_id(self, response: httpx.Response, request: SendRequest) -> str:
        # A receiver has no id of its own to give back: the webhook-id is what both sides know.
        return request.idempotency_key
