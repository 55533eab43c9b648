"""The one HTTP client layer under every HTTP adapter (``webhook``, ``postmark``, ``sendgrid``, ``twilio``).

:class:`HttpAdapter` owns the sequence of a send; a provider module fills the named steps and the
lookup tables, as django-anymail's backends do::

    send(request)
    ├── build(request) -> HttpCall           provider: method, path or URL, JSON/form body, headers
    ├── auth_headers(), idempotency_header   provider: credentials; the key where one is documented
    ├── POST through one shared httpx.Client here: timeouts, connection reuse, transport errors
    ├── 2xx → message_id(response, request)  provider: where the provider puts its message id
    │         accepted_error(response)       provider: a 2xx that still reports a failure
    └── else → classify(response)            here: error_code() looked up (lookup()) in ``error_codes``,
                                             else ``status_outcomes``, else the HTTP status class;
                                             retry_after() for temporary ones

Foreign errors are translated once, here (docs/architecture.md §10, habit 5): httpx timeouts and connection failures become
:class:`TemporaryError`, an unusable URL a :class:`PermanentError`, and an HTTP error response one of
the three :class:`DeliveryError` classes chosen by the provider's code table. Nothing else leaves
``send()``.

Redaction: the ``response`` dict kept on the attempt row and every exception message are built only
from the HTTP status, the provider's *error code* and the description in *our* table, plus the
parsed Retry-After. The provider's own error text is never copied, because providers echo the
recipient in it (Postmark 406 names the inactive address, Twilio 21211 the phone number); request
headers (credentials) and bodies never reach a result, an error or a log line.
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar

import httpx

from chimeway.adapter import (
    Adapter,
    DeliveryError,
    Option,
    PermanentError,
    SendRequest,
    SendResult,
    TemporaryError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "TEMPORARY_STATUSES",
    "HttpAdapter",
    "HttpCall",
    "Classification",
    "base_url_option",
    "email_parts",
    "parse_retry_after",
    "positive_seconds",
    "timeout_option",
]

#: seconds an HTTP adapter waits to connect, and then for each read, unless its ``timeout`` option says otherwise
DEFAULT_TIMEOUT = 10.0

#: HTTP statuses that mean "try again later" when the provider's body gives no code we know
TEMPORARY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: One classification: which DeliveryError class to raise, and our own words for why.
Classification = tuple[type[DeliveryError], str]

logger = logging.getLogger("chimeway.adapters.http")

#: True while this thread (context) is inside an adapter's HTTP call
_SENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("chimeway_adapter_sending", default=False)


class _QuietWhileSending(logging.Filter):
    """Drops httpx's own INFO line ("HTTP Request: POST <url> …") for our calls only.

    A webhook URL is the recipient and often embeds a token (Slack, Teams…); the application's other
    httpx calls keep logging as before.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not _SENDING.get()


_QUIET = _QuietWhileSending()


def positive_seconds(value: Any) -> float:
    """Option parser for timeouts: a number of seconds greater than zero."""
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    seconds = float(value)
    if not seconds > 0:
        raise ValueError("expected a number of seconds greater than 0")
    return seconds


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns None when the header is absent or unreadable, and never a negative number.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class HttpCall:
    """What a provider wants sent for one attempt. ``url`` is absolute or relative to ``base_url``."""

    url: str
    json: Any = None
    form: Mapping[str, Any] | None = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


class HttpAdapter(Adapter):
    """Base of the HTTP adapters: one thread-safe ``httpx.Client`` per adapter instance.

    Subclasses set ``name``, ``channel``, ``options`` (including ``timeout`` and, for API providers,
    ``base_url``), ``error_codes`` and ``idempotency_header``, and implement :meth:`build` and
    :meth:`message_id`; they override :meth:`auth_headers` and :meth:`error_code` as their API needs.
    """

    #: the provider's error code -> (DeliveryError class, our description); the provider's text is never kept
    error_codes: ClassVar[Mapping[Any, Classification]] = {}
    #: HTTP statuses whose meaning overrides the generic 4xx/5xx rule for this provider
    status_outcomes: ClassVar[Mapping[int, Classification]] = {}
    #: header carrying ``request.idempotency_key`` — None when the provider documents no such header
    idempotency_header: ClassVar[str | None] = None

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.timeout = float(options.get("timeout") or DEFAULT_TIMEOUT)
        # httpx.Client is safe to share between threads; it pools and reuses connections per host.
        self._client = httpx.Client(
            base_url=options.get("base_url") or "",
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,  # a redirect would resend a signed or authenticated request elsewhere
            headers={"User-Agent": "chimeway"},
        )
        self._closed = threading.Event()
        logging.getLogger("httpx").addFilter(_QUIET)  # idempotent: a filter is added once

    # -- steps a provider fills ------------------------------------------------------------------

    def build(self, request: SendRequest) -> HttpCall:
        """The HTTP call for this attempt. Raise PermanentError for a payload that can never be sent."""
        raise NotImplementedError

    def auth_headers(self, request: SendRequest) -> dict[str, str]:
        """Credentials for this call (never logged, never kept)."""
        return {}

    def message_id(self, response: httpx.Response, request: SendRequest) -> str | None:
        """The provider's id of the accepted message, from a 2xx response."""
        return None

    def accepted_error(self, response: httpx.Response) -> Classification | None:
        """A 2xx response that nevertheless reports a failure (e.g. a message created already failed)."""
        return None

    def error_code(self, response: httpx.Response) -> Any:
        """The provider's error code in an error response, or None. Looked up in ``error_codes``."""
        return None

    def retry_after(self, response: httpx.Response) -> float | None:
        """Seconds the provider asks us to wait before trying again (``Retry-After``), or None."""
        return parse_retry_after(response.headers.get("Retry-After"))

    def lookup(self, code: Any, response: httpx.Response) -> Classification | None:
        """The outcome of a provider error code; override when one code means several things."""
        return self.error_codes.get(code) if code is not None else None

    # -- the sequence ----------------------------------------------------------------------------

    def send(self, request: SendRequest) -> SendResult:
        call = self.build(request)
        headers = {**call.headers, **self.auth_headers(request)}
        if self.idempotency_header:
            headers[self.idempotency_header] = request.idempotency_key
        response = self._post(call, headers)
        if 200 <= response.status_code < 300:
            failure = self.accepted_error(response)
            if failure is not None:
                self._raise(failure, response, code=self.error_code(response))
            summary = {"status": response.status_code}
            message_id = self.message_id(response, request)
            if message_id is None:
                summary["warning"] = "the provider accepted the send but returned no message id"
            return SendResult(provider=self.name, provider_message_id=message_id, response=summary)
        self.classify(response)
        raise AssertionError("classify() always raises")  # pragma: no cover

    def _post(self, call: HttpCall, headers: dict[str, str]) -> httpx.Response:
        what = f"{self.name}: {call.method}"
        if self._closed.is_set():
            raise TemporaryError(
                f"{what}: the adapter was closed (reconfigured)", response={"error": "closed"}
            )
        try:
            outgoing = self._client.build_request(
                call.method, call.url, json=call.json, data=call.form, content=call.content, headers=headers
            )
        except (TypeError, ValueError) as err:  # a payload value JSON cannot encode
            raise PermanentError(
                f"{what}: the payload cannot be encoded as JSON or form data",
                response={"error": "invalid_payload"},
            ) from err
        except httpx.InvalidURL as err:
            raise PermanentError(f"{what}: the URL is not usable", response={"error": "invalid_url"}) from err
        started = time.monotonic()
        token = _SENDING.set(True)
        try:
            response = self._client.send(outgoing)
            response.read()
            logger.debug(
                "%s: HTTP %d in %.0f ms", self.name, response.status_code, (time.monotonic() - started) * 1000
            )
            return response
        except httpx.TimeoutException as err:
            raise TemporaryError(
                f"{what} timed out after {self.timeout:g}s ({type(err).__name__})",
                response={"error": "timeout", "timeout_seconds": self.timeout},
            ) from err
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as err:
            raise PermanentError(
                f"{what} cannot be sent: the URL or request is not usable ({type(err).__name__})",
                response={"error": "invalid_request"},
            ) from err
        except httpx.TransportError as err:
            raise TemporaryError(
                f"{what} failed: {type(err).__name__} (connection refused, reset or unreadable)",
                response={"error": "connection"},
            ) from err
        finally:
            _SENDING.reset(token)

    def classify(self, response: httpx.Response) -> None:
        """Raise the DeliveryError an error response calls for: the code table, else the status."""
        code = self.error_code(response)
        outcome = self.lookup(code, response)
        if outcome is None:
            outcome = self.status_outcome(response.status_code)
        self._raise(outcome, response, code=code)

    def status_outcome(self, status: int) -> Classification:
        if status in self.status_outcomes:
            return self.status_outcomes[status]
        if status in TEMPORARY_STATUSES or status >= 500:
            return TemporaryError, f"HTTP {status}: the provider is unavailable or rate limiting"
        if 300 <= status < 400:
            return PermanentError, f"HTTP {status}: redirects are not followed"
        return PermanentError, f"HTTP {status}: the provider refused the request"

    def _raise(self, outcome: Classification, response: httpx.Response, *, code: Any) -> None:
        error_class, reason = outcome
        summary: dict[str, Any] = {"status": response.status_code}
        if code is not None:
            summary["error_code"] = code
        summary["reason"] = reason
        shown = f" (error code {code})" if code is not None else ""
        message = f"{self.name}: HTTP {response.status_code}{shown}: {reason}"
        if error_class is TemporaryError:
            retry_after = self.retry_after(response)
            if retry_after is not None:
                summary["retry_after"] = retry_after
                message += f"; retry after {retry_after:g}s"
            raise TemporaryError(message, retry_after=retry_after, response=summary)
        raise error_class(message, response=summary)

    # -- helpers for providers -------------------------------------------------------------------

    @staticmethod
    def json_body(response: httpx.Response) -> Any:
        """The response body as JSON, or None when it is not JSON."""
        try:
            return json.loads(response.content or b"null")
        except ValueError:
            return None

    @classmethod
    def json_field(cls, response: httpx.Response, key: str) -> Any:
        """One top-level field of a JSON object body, or None (not JSON, not an object, absent)."""
        body = cls.json_body(response)
        return body.get(key) if isinstance(body, dict) else None

    @classmethod
    def text_field(cls, response: httpx.Response, key: str) -> str | None:
        """A non-empty top-level field of a JSON object body, as text."""
        value = cls.json_field(response, key)
        return str(value) if value not in (None, "") else None

    @classmethod
    def code_field(cls, response: httpx.Response, key: str) -> int | None:
        """A numeric error-code field of a JSON object body (a number or digits), or None."""
        value = cls.json_field(response, key)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._client.close()


def timeout_option(doc: str = "seconds to wait for the provider (connect and each read)") -> Option:
    return Option(default=DEFAULT_TIMEOUT, parse=positive_seconds, doc=doc)


def base_url_option(default: str) -> Option:
    return Option(default=default, parse=_http_url, doc=f"the API's base URL (default {default})")


def _http_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if not text.startswith(("https://", "http://")):
        raise ValueError("expected an http:// or https:// URL")
    return text


def email_parts(request: SendRequest, default_from: str | None) -> dict[str, Any]:
    """The common email payload, checked: subject, text and/or html, from, headers."""
    payload = request.payload
    sender = payload.get("from") or default_from
    if not sender:
        raise PermanentError(
            f"{request.channel} payload has no 'from' and the adapter has no 'from' option",
            response={"error": "invalid_payload", "field": "from"},
        )
    if not (payload.get("text") or payload.get("html")):
        raise PermanentError(
            "email payload needs 'text' or 'html'", response={"error": "invalid_payload", "field": "text"}
        )
    return {
        "from": str(sender),
        "subject": str(payload.get("subject") or ""),
        "text": payload.get("text") or None,
        "html": payload.get("html") or None,
        "headers": _text_mapping(payload, "headers"),
        "tag": payload.get("tag"),
        "metadata": _text_mapping(payload, "metadata"),
    }


def _text_mapping(payload: Mapping[str, Any], key: str) -> dict[str, str]:
    value = payload.get(key) or {}
    if not isinstance(value, Mapping):
        raise PermanentError(
            f"email payload {key!r} must be a mapping of name to value",
            response={"error": "invalid_payload", "field": key},
        )
    return {str(k): str(v) for k, v in value.items()}
