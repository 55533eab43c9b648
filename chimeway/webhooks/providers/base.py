"""The provider base: it owns the sequence, providers fill named steps.

``Provider.process(request)`` runs, for every provider, in this order:

1. ``require_settings`` — a provider whose secret is not configured refuses every request
   (500, naming the setting) instead of accepting unverified ones;
2. ``verify(request)`` — signature, credentials, timestamp tolerance (401 on failure);
3. ``parse(request)`` — decode the body into the provider's own events (400 on malformed input);
4. ``normalize(raw)`` — one :class:`NormalizedEvent` per provider event, mostly through lookup tables
   from provider codes to ledger types; a code no table knows becomes ``unknown`` and keeps the raw
   event in its metadata.

Nothing here touches the database: verification failures store nothing by construction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from chimeway.states import EventType, RejectReason
from chimeway.wiring.config import Settings

#: A signed timestamp further ahead of our clock than this is refused: clock skew, never a retry.
FUTURE_TOLERANCE_SECONDS = 300

#: A signed timestamp is whole seconds since the epoch: digits only ("nan", "1e9", " 1" are refused).
_EPOCH_SECONDS = re.compile(r"[0-9]{1,12}")

#: Containers deeper than this are refused: no provider nests so deep, and the recursive steps after
#: parsing (checks, JSON encoding for the ledger) must stay far from Python's recursion limit.
MAX_JSON_DEPTH = 64

#: Text the ledger cannot store: NUL (PostgreSQL's text and jsonb refuse it) and unpaired UTF-16
#: surrogates (no UTF-8 encoder accepts them). Refused on both dialects, so both behave the same.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class WebhookRejected(Exception):
    """A request the provider step refused; ``status`` and the short ``reason`` become the response."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthorized(WebhookRejected):
    status = 401


class Malformed(WebhookRejected):
    status = 400


class Unstorable(Malformed):
    """An authentic request holding text the ledger cannot store (NUL, an unpaired surrogate).

    ``request_id`` is the id the raw request is kept under (status ``failed``) so it stays retrievable."""

    def __init__(self, reason: str, request_id: str) -> None:
        super().__init__(reason)
        self.request_id = request_id


class NotAcceptable(WebhookRejected):
    """A request format we will never accept; 406 tells providers such as Mailgun not to retry it."""

    status = 406


class NotConfigured(WebhookRejected):
    """The provider's secret is unset: every request is refused until the named setting is given."""

    status = 500


@dataclass(frozen=True)
class WebhookRequest:
    headers: Mapping[str, str]  #: lower-cased names
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def body_hash(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @functools.cached_property
    def document(self) -> Any:
        """The body as JSON, decoded once however many steps read it; Malformed (400) if it is not."""
        try:
            document = json.loads(self.body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: "[" * 200000
            raise Malformed("body is not valid JSON") from err
        if not _nesting_within(document, MAX_JSON_DEPTH):
            raise Malformed("body is nested too deeply")
        return document


def _nesting_within(document: Any, limit: int) -> bool:
    """Whether no container is deeper than ``limit``; iterative, so a deep document cannot exhaust the stack."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return False
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python accepts them, RFC 8259 and the databases do not


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 would become Infinity, which no JSON column stores
        raise ValueError("number out of range")
    return value


@dataclass(frozen=True)
class NormalizedEvent:
    type: EventType
    occurred_at: datetime  #: the provider's own time for the event, else when we received it
    message_id: str | None = None  #: matches ``chimeway_deliveries.provider_message_id``
    event_id: str | None = None  #: the provider's id for this one event, when it gives one
    reject_reason: RejectReason | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The Chimeway delivery id the provider echoed back (SendGrid's custom_args): linked before the message id.
    delivery_id: str | None = None


@dataclass(frozen=True)
class Parsed:
    #: Dedupes the raw request: the provider's id for the request, else a hash of the body.
    request_id: str
    events: list[NormalizedEvent]


class Provider:
    """Subclass, name it, list the settings it needs, and fill in ``verify`` and ``normalize``."""

    name: ClassVar[str]
    #: Settings (``Settings`` field names) that must be set before any request is accepted.
    required_settings: ClassVar[tuple[str, ...]] = ()
    #: How old a signed timestamp may be unless ``CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS`` says otherwise:
    #: long enough for the provider's retries when they carry the original signature.
    default_tolerance_seconds: ClassVar[int] = 300
    #: Whether the provider batches events in a JSON list (an empty list is then a valid request).
    batches: ClassVar[bool] = False

    def __init__(self, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- the sequence --------------------------------------------------------------------------

    def process(self, request: WebhookRequest) -> Parsed:
        self.require_settings()
        self.verify(request)
        raw_events = self.parse(request)
        try:
            events = [self.normalize(raw, request) for raw in raw_events]
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise Malformed("unexpected event structure") from err  # e.g. a list where a code belongs
        for event in events:
            if not all(value is None or isinstance(value, str) for value in (event.message_id, event.event_id)):
                raise Malformed("message and event ids must be strings")
        request_id = self.request_id(request) or request.body_hash
        if not storable(request_id):
            request_id = request.body_hash
        if not all(storable((event.message_id, event.event_id, event.delivery_id, event.metadata)) for event in events):
            raise Unstorable("event text contains NUL or an unpaired surrogate", request_id)
        return Parsed(request_id=request_id, events=events)

    def require_settings(self) -> None:
        fields = Settings.__dataclass_fields__  # each field names its environment variable
        for name in self.required_settings:
            if not getattr(self.settings, name):
                raise NotConfigured(f"{self.name} webhooks are not configured: set {fields[name].metadata['env']}")

    # -- the steps -----------------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        raise NotImplementedError

    def parse(self, request: WebhookRequest) -> Sequence[Any]:
        """The provider's events as decoded JSON; one object, or a list for batching providers."""
        document = request.document
        events = document if isinstance(document, list) else [document]
        if not (events or self.batches) or not all(isinstance(event, dict) for event in events):
            raise Malformed("expected a JSON object or a non-empty list of objects")
        return events

    def normalize(self, raw: Any, request: WebhookRequest) -> NormalizedEvent:
        raise NotImplementedError

    def request_id(self, request: WebhookRequest) -> str | None:
        """The provider's id for the whole request, when it gives one (else the body hash is used)."""
        return None

    # -- helpers for the steps -----------------------------------------------------------------

    def tolerance_seconds(self) -> int:
        """How old a signed timestamp may be: the setting for this provider, else for all, else the default."""
        configured = self.settings.webhook_tolerance_seconds
        return configured.get(self.name, configured.get("*", self.default_tolerance_seconds))

    def check_timestamp(self, value: str | None) -> int:
        """The signed timestamp, refused when malformed, older than the tolerance or ahead of our clock."""
        if not isinstance(value, str) or not _EPOCH_SECONDS.fullmatch(value):
            raise Unauthorized("missing or malformed signature timestamp")
        age = self.clock().timestamp() - int(value)
        if age > self.tolerance_seconds() or -age > FUTURE_TOLERANCE_SECONDS:
            raise Unauthorized("signature timestamp outside tolerance")
        return int(value)


def storable(value: Any) -> bool:
    """Whether every text in ``value`` (strings, dict keys, nested lists) can be stored by both databases."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is None
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(storable(item) for item in value)
    return True


def unknown(code: Any, raw: Any, occurred_at: datetime, **fields: Any) -> NormalizedEvent:
    """A code no table maps: kept as ``unknown`` with the raw provider event, never dropped."""
    return NormalizedEvent(
        type=EventType.UNKNOWN, occurred_at=occurred_at, metadata={"code": code, "raw": raw}, **fields
    )


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 provider timestamp as aware UTC, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        return None


def parse_epoch(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
