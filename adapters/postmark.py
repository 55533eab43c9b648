"""``postmark``: email through Postmark's Email API (``POST /email``).

Recipient: the email address. Payload (the common email shape)::

    {"subject": "…", "text": "plain body", "html": "<p>html body</p>",   # text and/or html
     "from": "Name <sender@example.com>",   # optional: else the ``from`` option
     "headers": {"X-Campaign": "…"},       # optional extra message headers
     "tag": "welcome",                     # optional Postmark Tag
     "metadata": {"order": "42"}}          # optional Postmark Metadata (string values)

Chimeway adds ``Metadata["chimeway_delivery_id"]``; Postmark echoes metadata in its webhooks.

Options (``configure(adapters={"postmark": {...}})`` or ``CHIMEWAY_POSTMARK_<OPTION>``):

==============  ====================================================  ===============================
option          meaning                                               default
==============  ====================================================  ===============================
server_token    Server API token, sent as X-Postmark-Server-Token     required (secret)
from            default sender when the payload has no ``from``       none
message_stream  Postmark message stream                               ``outbound``
base_url        API base URL                                          ``https://api.postmarkapp.com``
timeout         seconds the whole call may take                       10
==============  ====================================================  ===============================

Provider message id: ``MessageID`` of the response. Idempotency: Postmark does not support an
idempotency key (its support article "What is an Idempotency Key?" says so), so none is sent; the
delivery id travels in Metadata instead.

Errors (HTTP 401 bad token, 422 with ``{"ErrorCode": n, "Message": "…"}``, 429, 5xx) are classified
by ``ErrorCode`` through :data:`ERROR_CODES`; a code not in the table falls back to the HTTP status
(422 and other 4xx permanent, 429 and 5xx temporary). Code 300 "invalid email request" is bounced
when Postmark says the ``To`` address is invalid (as django-anymail reads it) and permanent otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from chimeway.adapter import BouncedError, Classification, Option, PermanentError, SendRequest, TemporaryError

from ._http import HttpAdapter, HttpCall, base_url_option, email_parts, timeout_option

if TYPE_CHECKING:
    import httpx

#: Postmark API error codes (https://postmarkapp.com/developer/api/overview#error-codes)
ERROR_CODES: dict[int, Classification] = {
    10: (PermanentError, "bad or missing server API token"),
    100: (TemporaryError, "Postmark is in maintenance"),
    300: (PermanentError, "invalid email request"),
    400: (PermanentError, "sender signature not found"),
    401: (PermanentError, "sender signature not confirmed"),
    402: (PermanentError, "invalid JSON"),
    403: (PermanentError, "incompatible JSON"),
    405: (PermanentError, "not allowed to send (account out of credits)"),
    406: (BouncedError, "inactive recipient: it hard-bounced, complained or was suppressed"),
    409: (PermanentError, "JSON required"),
    410: (PermanentError, "too many batch messages"),
    411: (PermanentError, "forbidden attachment type"),
    412: (PermanentError, "account is pending"),
    413: (PermanentError, "account may not send"),
    429: (TemporaryError, "rate limit exceeded"),
}

#: code 300 messages that are about the recipient ("Invalid 'To' address: …", "Error parsing 'To': …")
_RECIPIENT_INVALID = re.compile(r"^(Invalid|Error\s+parsing)\s+'To'", re.IGNORECASE)


class PostmarkAdapter(HttpAdapter):
    name = "postmark"
    channel = "email"
    options: ClassVar[dict[str, Option]] = {
        "server_token": Option(required=True, secret=True, doc="the Postmark Server API token"),
        "from": Option(doc="default sender address"),
        "message_stream": Option(default="outbound", doc="the Postmark message stream id"),
        "base_url": base_url_option("https://api.postmarkapp.com"),
        "timeout": timeout_option(),
    }
    error_codes = ERROR_CODES
    idempotency_header = None  # not supported by Postmark

    def build(self, request: SendRequest) -> HttpCall:
        parts = email_parts(request, self.config.get("from"))
        body: dict[str, Any] = {
            "From": parts["from"],
            "To": request.recipient,
            "Subject": parts["subject"],
            "MessageStream": self.config.get("message_stream") or "outbound",
            "Metadata": {
                **parts["metadata"],
                "chimeway_delivery_id": request.delivery_id,
            },
        }
        if parts["text"]:
            body["TextBody"] = parts["text"]
        if parts["html"]:
            body["HtmlBody"] = parts["html"]
        if parts["headers"]:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in parts["headers"].items()]
        if parts["tag"]:
            body["Tag"] = str(parts["tag"])
        return HttpCall(url="/email", json=body, headers={"Accept": "application/json"})

    def auth_headers(self, request: SendRequest) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.config["server_token"]}

    def message_id(self, response: httpx.Response, request: SendRequest) -> str | None:
        return self.text_field(response, "MessageID")

    def accepted_error(self, response: httpx.Response) -> Classification | None:
        code = self.error_code(response)
        if code in (None, 0):
            return None
        return self.lookup(code, response) or (PermanentError, f"Postmark error code {code}")

    def error_code(self, response: httpx.Response) -> int | None:
        return self.code_field(response, "ErrorCode")

    def lookup(self, code: Any, response: httpx.Response) -> Classification | None:
        if code == 300:
            message = self.text_field(response, "Message")
            if message and _RECIPIENT_INVALID.match(message):
                return BouncedError, "invalid 'To' address"
        return super().lookup(code, response)
