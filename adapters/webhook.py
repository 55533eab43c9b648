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

=========  ========================================================  =========
option     meaning                                                   default
=========  ========================================================  =========
secret     signing secret, ``whsec_<base64>`` (secret)               required
timeout    seconds to connect and for each read                      10
=========  ========================================================  =========

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
from typing import TYPE_CHECKING, Any, ClassVar

from chimeway.adapter import BouncedError, Option, PermanentError, SendRequest

from ._http import Classification, HttpAdapter, HttpCall, timeout_option

if TYPE_CHECKING:
    import httpx

from standardwebhooks import Webhook


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
        "timeout": timeout_option("seconds to wait for the receiver (connect and each read)"),
    }
    idempotency_header = "Idempotency-Key"
    status_outcomes: ClassVar[dict[int, Classification]] = {
        410: (BouncedError, "HTTP 410: the endpoint is gone; stop sending to it"),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._signer = Webhook(options["secret"])

    def build(self, request: SendRequest) -> HttpCall:
        if not request.recipient.startswith(("https://", "http://")):
            raise PermanentError(
                "webhook recipient must be an http:// or https:// URL",
                response={"error": "invalid_recipient"},
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
