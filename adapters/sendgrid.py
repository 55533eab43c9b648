"""``sendgrid``: email through SendGrid's v3 Mail Send API (``POST /v3/mail/send``).

Recipient: the email address. Payload (the common email shape)::

    {"subject": "…", "text": "plain body", "html": "<p>html body</p>",   # text and/or html
     "from": "Name <sender@example.com>",   # optional: else the ``from`` option
     "headers": {"X-Campaign": "…"},       # optional extra message headers
     "tag": "welcome",                     # optional: sent as a SendGrid category
     "metadata": {"order": "42"}}          # optional: sent as custom_args (string values)

Chimeway adds ``custom_args["chimeway_delivery_id"]``; SendGrid echoes custom_args in its Event Webhook.

Options (``configure(adapters={"sendgrid": {...}})`` or ``CHIMEWAY_SENDGRID_<OPTION>``):

========  =====================================================  ===========================
option    meaning                                                default
========  =====================================================  ===========================
api_key   API key, sent as ``Authorization: Bearer …``           required (secret)
from      default sender when the payload has no ``from``        none
base_url  API base URL (``https://api.eu.sendgrid.com`` for EU)  ``https://api.sendgrid.com``
timeout   seconds the whole call may take                        10
========  =====================================================  ===========================

Provider message id: the ``X-Message-Id`` header of the 202 response (SendGrid's event webhook
reports ``sg_message_id`` as that id plus a suffix). Idempotency: SendGrid's Mail Send API documents
no idempotency key, so none is sent; the delivery id travels in custom_args instead.

Errors carry no error codes, only ``{"errors": [{"message", "field", "help"}]}``, so the HTTP status
decides (:data:`STATUS_OUTCOMES`; 429 and 5xx temporary, honouring ``Retry-After`` or SendGrid's
``X-RateLimit-Reset``), except a 400 whose every error is about the recipient's address field
(``personalizations.N.to.N.email``), which is bounced.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from chimeway.adapter import BouncedError, Classification, Option, PermanentError, SendRequest

from ._http import HttpAdapter, HttpCall, base_url_option, email_parts, timeout_option

if TYPE_CHECKING:
    import httpx

#: SendGrid v3 statuses (https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors)
STATUS_OUTCOMES: dict[int, Classification] = {
    400: (PermanentError, "bad request: the message was refused"),
    401: (PermanentError, "the API key is missing or invalid"),
    403: (PermanentError, "forbidden: the key lacks mail.send or the sender is not verified"),
    406: (PermanentError, "missing Accept header"),
    413: (PermanentError, "the message is too large"),
}

_RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.to(\.\d+(\.email)?)?$")


class SendgridAdapter(HttpAdapter):
    name = "sendgrid"
    channel = "email"
    options: ClassVar[dict[str, Option]] = {
        "api_key": Option(required=True, secret=True, doc="a SendGrid API key with mail.send access"),
        "from": Option(doc="default sender address"),
        "base_url": base_url_option("https://api.sendgrid.com"),
        "timeout": timeout_option(),
    }
    status_outcomes = STATUS_OUTCOMES
    idempotency_header = None  # not documented by SendGrid

    def build(self, request: SendRequest) -> HttpCall:
        parts = email_parts(request, self.config.get("from"))
        name, address = email.utils.parseaddr(parts["from"])
        sender = {"email": address or parts["from"]}
        if name:
            sender["name"] = name
        content = []
        if parts["text"]:
            content.append({"type": "text/plain", "value": parts["text"]})
        if parts["html"]:
            content.append({"type": "text/html", "value": parts["html"]})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": request.recipient}]}],
            "from": sender,
            "subject": parts["subject"],
            "content": content,
            "custom_args": {
                **parts["metadata"],
                "chimeway_delivery_id": request.delivery_id,
            },
        }
        if parts["headers"]:
            body["headers"] = parts["headers"]
        if parts["tag"]:
            body["categories"] = [str(parts["tag"])]
        return HttpCall(url="/v3/mail/send", json=body, headers={"Accept": "application/json"})

    def auth_headers(self, request: SendRequest) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['api_key']}"}

    def message_id(self, response: httpx.Response, request: SendRequest) -> str | None:
        return response.headers.get("X-Message-Id") or None

    def lookup(self, code: Any, response: httpx.Response) -> Classification | None:
        if response.status_code == 400:
            body = self.json_body(response)
            errors = body.get("errors") if isinstance(body, dict) else None
            fields = [e.get("field") for e in errors or [] if isinstance(e, dict)]
            if fields and all(isinstance(f, str) and _RECIPIENT_FIELD.match(f) for f in fields):
                return BouncedError, "the recipient address is not valid"
        return None

    def retry_after(self, response: httpx.Response) -> float | None:
        seconds = super().retry_after(response)
        reset = response.headers.get("X-RateLimit-Reset")
        if seconds is None and reset and reset.strip().isdigit():
            seconds = max(0.0, int(reset) - time.time())
        return seconds
