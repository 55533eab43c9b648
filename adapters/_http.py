"""The one HTTP client layer under every HTTP adapter (``webhook``, ``postmark``, ``sendgrid``, ``twilio``).

:class:`HttpAdapter` owns the sequence of a send; a provider module fills the named steps and the
lookup tables, as django-anymail's backends do::

    send(request)
    ├── build(request) -> HttpCall           provider: method, path or URL, JSON/form body, headers
    ├── auth_headers(), idempotency_header   provider: credentials; the key where one is documented
    ├── POST through one shared httpx.Client here: one deadline, connection reuse, transport errors,
    │         the address policy (``address_policy``), at most MAX_RESPONSE_BYTES of the answer read
    ├── 2xx → message_id(response, request)  provider: where the provider puts its message id
    │         accepted_error(response)       provider: a 2xx that still reports a failure
    └── else → classify(response)            chimeway.http.http_error(): error_code() looked up
                                             (lookup()) in ``error_codes``, else ``status_outcomes``,
                                             else the HTTP status class; retry_after() for temporary ones

Foreign errors are translated once, here (docs/architecture.md, habit 5): httpx timeouts and connection failures become
:class:`TemporaryError`, an unusable URL or a refused address a :class:`PermanentError`, and an HTTP
error response one of the three :class:`DeliveryError` classes chosen by the provider's code table.
Nothing else leaves ``send()``.

Connections go through :class:`_Backend`, an httpcore network backend: it resolves the host once,
drops the addresses the adapter's :class:`AddressPolicy` refuses and connects to an address it
checked, so a name cannot answer a public address to a check and a private one to the connection;
the URL keeps the host name, so the Host header, TLS SNI and certificate verification are for it.
Every socket wait is also cut at the call's deadline (``timeout`` bounds the whole call: httpx's own
timeouts bound each read, which a server trickling one byte at a time never trips).

Redaction: the ``response`` dict kept on the attempt row and every exception message are built only
from the HTTP status, the provider's *error code* and the description in *our* table, plus the
parsed Retry-After. The provider's own error text is never copied, because providers echo the
recipient in it (Postmark 406 names the inactive address, Twilio 21211 the phone number); request
headers (credentials) and bodies never reach a result, an error or a log line.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpcore
import httpx

from chimeway.adapter import (
    Adapter,
    Classification,
    DeliveryError,
    Option,
    PermanentError,
    SendRequest,
    SendResult,
    TemporaryError,
    http_error,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "AddressPolicy",
    "HttpAdapter",
    "HttpCall",
    "base_url_option",
    "email_parts",
    "parse_networks",
    "positive_seconds",
    "timeout_option",
]

#: seconds an HTTP call may take as a whole (connect, send, read the answer), unless its ``timeout`` option says otherwise
DEFAULT_TIMEOUT = 10.0

#: bytes of an answer read at most: providers answer in a few hundred; the rest is not read
MAX_RESPONSE_BYTES = 64 * 1024

logger = logging.getLogger("chimeway.adapters.http")

#: time.monotonic() by which the call in progress in this thread (context) must end; None outside a call
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("chimeway_http_deadline", default=None)


def positive_seconds(value: Any) -> float:
    """Option parser for timeouts: a number of seconds greater than zero."""
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    seconds = float(value)
    if not seconds > 0:
        raise ValueError("expected a number of seconds greater than 0")
    return seconds


class AddressRefused(Exception):
    """Raised inside the connection step when every address of the host is refused (translated in ``_post``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


#: IPv6 prefixes whose last 32 bits are an IPv4 address a packet may end up at (mapped, compatible, NAT64)
_EMBEDDING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _target(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one leads to (IPv4-mapped, -compatible, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            return address.sixtofour
        if any(address in prefix for prefix in _EMBEDDING_IPV4):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


#: ranges ``ipaddress`` does not flag (as of Python 3.11) that still never lead to the public internet
_SPECIAL = {
    "carrier_grade_nat": ipaddress.IPv4Network("100.64.0.0/10"),  # RFC 6598; Alibaba's metadata service
    "special_purpose": ipaddress.IPv4Network("192.0.0.0/24"),  # RFC 6890; Oracle's metadata at .192
}


def _kind(address: IPAddress) -> str | None:
    """Why an address is not on the public internet (None when it is)."""
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private", "site_local"):
        if getattr(address, f"is_{kind}", False):
            return kind
    for kind, network in _SPECIAL.items():
        if address in network:
            return kind
    return None if address.is_global else "special_purpose"


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a call may connect to: public ones, plus the ``allowed`` networks.

    Refused: loopback, private, link-local (cloud metadata at 169.254.169.254), carrier-grade NAT,
    multicast, unspecified and reserved addresses, and IPv6 forms that lead to one of them.
    """

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """None when the address may be connected to, else the kind of address it is."""
        target = _target(address)
        if any(address in network or target in network for network in self.allowed):
            return None
        # ::1 and :: sit in the IPv4-compatible prefix too, but are what they are
        return _kind(address if address.is_loopback or address.is_unspecified else target)


def parse_networks(value: Any) -> AddressPolicy:
    """Option parser: comma-separated CIDRs (``127.0.0.0/8,10.1.0.0/16``) opened to outbound calls."""
    if isinstance(value, AddressPolicy):
        return value
    parts = value if isinstance(value, list | tuple) else str(value).split(",")
    return AddressPolicy(tuple(ipaddress.ip_network(str(part).strip()) for part in parts if str(part).strip()))


def _remaining(timeout: float | None, error: type[Exception]) -> float | None:
    """The socket timeout of one wait: httpx's own, cut at the call's deadline; ``error`` once it passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the call's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """Resolves a host once, keeps the addresses the policy allows, connects to one of those."""

    def __init__(self, policy: AddressPolicy | None) -> None:
        self.policy = policy
        self._sockets = httpcore.SyncBackend()  # httpcore's own sockets, given a numeric address

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise httpcore.ConnectError(f"cannot resolve the host ({type(err).__name__})") from err
        # (an IPv6 scope "%eth0" is dropped: only link-local addresses carry one, and those are refused)
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].partition("%")[0]) for info in found))
        if self.policy is not None:
            verdicts = {address: self.policy.refusal(address) for address in addresses}
            addresses = [address for address, refusal in verdicts.items() if refusal is None]
            if not addresses:  # a name answering public and private addresses gets the public ones only
                raise AddressRefused(next(iter(verdicts.values()), None) or "unresolved")
        error: Exception = httpcore.ConnectError("no address to connect to")
        for address in addresses:  # the checked addresses, as numbers: no second lookup
            try:
                stream = self._sockets.connect_tcp(
                    str(address), port, _remaining(timeout, httpcore.ConnectTimeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = err
                continue
            return _DeadlineStream(stream)
        raise error

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the HTTP adapters")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx's transport on :class:`_Backend` (httpx offers no parameter for it: its pool is replaced)."""

    def __init__(self, policy: AddressPolicy | None) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # as httpx's own: certifi, or SSL_CERT_FILE
            max_connections=100,  # httpx's default limits
            max_keepalive_connections=20,
            network_backend=_Backend(policy),
        )


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
            # identity: a compressed answer could inflate far past MAX_RESPONSE_BYTES once decoded
            headers={"User-Agent": "chimeway", "Accept-Encoding": "identity"},
            transport=_Transport(self.address_policy()),
        )
        self._closed = threading.Event()

    def address_policy(self) -> AddressPolicy | None:
        """The addresses this adapter may connect to; None: any (the URL is the operator's, not a sender's)."""
        return None

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
                raise self.error(response, self.error_code(response), failure)
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
        token = _DEADLINE.set(started + self.timeout)
        try:
            response = _capped(self._client.send(outgoing, stream=True))
            logger.debug(
                "%s: HTTP %d in %.0f ms", self.name, response.status_code, (time.monotonic() - started) * 1000
            )
            return response
        except AddressRefused as err:
            raise PermanentError(
                f"{what} refused: the URL's host is a {err.kind.replace('_', '-')} address, not a public one "
                f"(CHIMEWAY_{self.name.upper()}_ALLOWED_NETWORKS opens chosen networks)",
                response={"error": "refused_address", "address_kind": err.kind},
            ) from err
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
            _DEADLINE.reset(token)

    def classify(self, response: httpx.Response) -> None:
        """Raise the DeliveryError an error response calls for: the code table, else the status."""
        code = self.error_code(response)
        raise self.error(response, code, self.lookup(code, response))

    def error(self, response: httpx.Response, code: Any, outcome: Classification | None) -> DeliveryError:
        return http_error(
            self.name,
            response.status_code,
            outcome=outcome,
            code=code,
            status_outcomes=self.status_outcomes,
            retry_after=self.retry_after(response),
        )

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


def _capped(response: httpx.Response) -> httpx.Response:
    """The answer with at most MAX_RESPONSE_BYTES of its body read; the connection is released."""
    body = bytearray()
    try:
        # We asked for identity: a body compressed anyway is not read (classified by its status alone).
        if response.headers.get("Content-Encoding", "identity").lower() == "identity":
            for chunk in response.iter_raw():
                body += chunk
                if len(body) >= MAX_RESPONSE_BYTES:
                    break  # the rest is never read: closing drops the connection instead of reusing it
    finally:
        response.close()
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(body[:MAX_RESPONSE_BYTES]),
        request=response.request,
    )


def timeout_option(doc: str = "seconds the whole call may take (connect, send, read the answer)") -> Option:
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
