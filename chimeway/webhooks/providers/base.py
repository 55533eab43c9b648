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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from chimeway.config import Settings
from chimeway.states import EventType, RejectReason

#: Signed timestamps further than this from our clock are refused (replayed or forged requests).
TIMESTAMP_TOLERANCE_SECONDS = 300


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
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise Malformed("body is not valid JSON") from err


@dataclass(frozen=True)
class NormalizedEvent:
    type: EventType
    occurred_at: datetime  #: the provider's own time for the event, else when we received it
    message_id: str | None = None  #: matches ``chimeway_deliveries.provider_message_id``
    event_id: str | None = None  #: the provider's id for this one event, when it gives one
    reject_reason: RejectReason | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


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
        return Parsed(request_id=self.request_id(request) or request.body_hash, events=events)

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
        if not events or not all(isinstance(event, dict) for event in events):
            raise Malformed("expected a JSON object or a non-empty list of objects")
        return events

    def normalize(self, raw: Any, request: WebhookRequest) -> NormalizedEvent:
        raise NotImplementedError

    def request_id(self, request: WebhookRequest) -> str | None:
        """The provider's id for the whole request, when it gives one (else the body hash is used)."""
        return None

    # -- helpers for the steps -----------------------------------------------------------------

    def check_timestamp(self, value: str | None) -> None:
        """Refuse a signed timestamp outside the tolerance, in either direction."""
        try:
            signed = float(value) if value is not None else None
        except ValueError:
            signed = None
        if signed is None:
            raise Unauthorized("missing or malformed signature timestamp")
        if abs(self.clock().timestamp() - signed) > TIMESTAMP_TOLERANCE_SECONDS:
            raise Unauthorized("signature timestamp outside tolerance")


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
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_epoch(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
