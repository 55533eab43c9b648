"""``twilio``: SMS through Twilio's Programmable Messaging API (``POST /2010-04-01/Accounts/{sid}/Messages.json``).

Recipient: the phone number in E.164 form (``+14155550100``). Payload::

    {"body": "Your code is 123456",          # text; body and/or media_url
     "media_url": ["https://…/pic.png"],     # optional MMS media
     "from": "+14155550199"}                 # optional: else the ``from`` or messaging_service_sid option

Options (``configure(adapters={"twilio": {...}})`` or ``CHIMEWAY_TWILIO_<OPTION>``):

=====================  ==================================================  ========================
option                 meaning                                             default
=====================  ==================================================  ========================
account_sid            the account SID (``AC…``), part of the URL          required
auth_token             the auth token, or the API key secret (secret)      required (secret)
api_key_sid            an API key SID (``SK…``) to authenticate with       none: account_sid is used
from                   default sender number or alphanumeric sender id     none
messaging_service_sid  send through a Messaging Service (``MG…``) instead  none
status_callback        URL Twilio posts status changes to                  none
base_url               API base URL                                        ``https://api.twilio.com``
timeout                seconds the whole call may take                     10
=====================  ==================================================  ========================

Provider message id: the ``sid`` of the created Message (``SM…``). Idempotency: the Messages API
documents no idempotency key, so none is sent.

Errors are ``{"code": n, "message": "…", "more_info": "…", "status": s}`` and classified by ``code``
through :data:`ERROR_CODES`; unknown codes fall back to the HTTP status (429 and 5xx temporary,
other 4xx permanent). A Message created already failed (its ``error_code`` set) is classified by the
same table, which therefore also holds the 300xx delivery codes Twilio reports later.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, ClassVar

from chimeway.adapter import BouncedError, Classification, Option, PermanentError, SendRequest, TemporaryError

from ._http import HttpAdapter, HttpCall, base_url_option, timeout_option

if TYPE_CHECKING:
    import httpx

#: Twilio error codes (https://www.twilio.com/docs/api/errors)
ERROR_CODES: dict[int, Classification] = {
    20003: (PermanentError, "authentication failed: check account_sid and auth_token"),
    20404: (PermanentError, "resource not found: check account_sid"),
    20429: (TemporaryError, "too many requests"),
    20500: (TemporaryError, "Twilio internal error"),
    20503: (TemporaryError, "Twilio service unavailable"),
    21211: (BouncedError, "invalid 'To' phone number"),
    21408: (PermanentError, "sending to this region is not enabled (geo permissions)"),
    21602: (PermanentError, "message body is required"),
    21606: (PermanentError, "the 'From' number cannot send SMS to this destination"),
    21608: (PermanentError, "trial accounts may only send to verified numbers"),
    21610: (BouncedError, "the recipient unsubscribed (replied STOP)"),
    21612: (PermanentError, "the 'To' number is not reachable from this 'From' number"),
    21614: (BouncedError, "the 'To' number is not a mobile number"),
    21617: (PermanentError, "the body exceeds 1600 characters"),
    30001: (TemporaryError, "queue overflow"),
    30002: (PermanentError, "account suspended"),
    30003: (TemporaryError, "unreachable destination handset (off or out of coverage)"),
    30004: (BouncedError, "message blocked by the recipient"),
    30005: (BouncedError, "unknown destination handset"),
    30006: (BouncedError, "landline or unreachable carrier"),
    30007: (PermanentError, "message filtered by the carrier"),
    30008: (TemporaryError, "unknown delivery error"),
}

_FAILED_STATUSES = frozenset({"failed", "undelivered", "canceled"})


class TwilioAdapter(HttpAdapter):
    name = "twilio"
    channel = "sms"
    options: ClassVar[dict[str, Option]] = {
        "account_sid": Option(required=True, doc="the Twilio account SID (AC…)"),
        "auth_token": Option(required=True, secret=True, doc="the auth token, or the API key secret"),
        "api_key_sid": Option(doc="an API key SID (SK…) used instead of account_sid to authenticate"),
        "from": Option(doc="default sender: a Twilio number or alphanumeric sender id"),
        "messaging_service_sid": Option(doc="a Messaging Service SID (MG…) used instead of a sender"),
        "status_callback": Option(doc="URL for Twilio's status callbacks"),
        "base_url": base_url_option("https://api.twilio.com"),
        "timeout": timeout_option(),
    }
    error_codes = ERROR_CODES
    idempotency_header = None  # not documented for the Messages API

    def build(self, request: SendRequest) -> HttpCall:
        payload = request.payload
        media = payload.get("media_url") or []
        if isinstance(media, str):
            media = [media]
        if not (payload.get("body") or media):
            raise PermanentError(
                "sms payload needs 'body' or 'media_url'", response={"error": "invalid_payload"}
            )
        form: dict[str, Any] = {"To": request.recipient}
        if payload.get("body"):
            form["Body"] = str(payload["body"])
        if media:
            form["MediaUrl"] = [str(url) for url in media]
        sender = payload.get("from") or self.config.get("from")
        if sender:
            form["From"] = str(sender)
        elif self.config.get("messaging_service_sid"):
            form["MessagingServiceSid"] = self.config["messaging_service_sid"]
        else:
            raise PermanentError(
                "sms payload has no 'from' and the adapter has neither 'from' nor 'messaging_service_sid'",
                response={"error": "invalid_payload", "field": "from"},
            )
        callback = payload.get("status_callback") or self.config.get("status_callback")
        if callback:
            form["StatusCallback"] = str(callback)
        url = f"/2010-04-01/Accounts/{self.config['account_sid']}/Messages.json"
        return HttpCall(url=url, form=form, headers={"Accept": "application/json"})

    def auth_headers(self, request: SendRequest) -> dict[str, str]:
        user = self.config.get("api_key_sid") or self.config["account_sid"]
        token = base64.b64encode(f"{user}:{self.config['auth_token']}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def message_id(self, response: httpx.Response, request: SendRequest) -> str | None:
        return self.text_field(response, "sid")

    def accepted_error(self, response: httpx.Response) -> Classification | None:
        status = self.text_field(response, "status")
        if status not in _FAILED_STATUSES:
            return None
        return self.lookup(self.error_code(response), response) or (
            PermanentError,
            f"the message was created {status}",
        )

    def error_code(self, response: httpx.Response) -> int | None:
        # An error response carries "code"; a Message created already failed carries "error_code".
        return self.code_field(response, "code" if response.status_code >= 300 else "error_code")
