"""The adapter contract: what a provider plug-in implements, and the only module adapters import.

An adapter is a class with a registry ``name``, a ``channel``, declared ``options`` and
``send(request) -> SendResult``. It is called outside any database transaction, once per attempt.
It classifies every failure by raising :class:`TemporaryError`, :class:`PermanentError` or
:class:`BouncedError` (re-exported here); anything else it raises or returns is recorded as an
unclassified outcome. Register it under the ``chimeway.adapters`` entry-point group::

    [options.entry_points]
    chimeway.adapters =
        acme = acme_chimeway:AcmeAdapter

Options are declared with :class:`Option` and set with ``configure(adapters={"acme": {...}})`` or
the environment variable ``CHIMEWAY_<NAME>_<OPTION>`` (``CHIMEWAY_ACME_API_KEY``); a bad or
unknown one fails at configure time naming the variable, a missing required one when a worker starts
or a send uses the adapter. Any other ``CHIMEWAY_*`` variable the adapter reads itself is listed in
``environment``, or configure refuses it as a typo.

An adapter that talks HTTP classifies a provider's error answer with :func:`http_error` (the rules
the built-in HTTP adapters follow, see :mod:`chimeway.http`) and reads ``Retry-After`` with
:func:`parse_retry_after`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from chimeway.errors import BouncedError, DeliveryError, PermanentError, TemporaryError
from chimeway.http import TEMPORARY_STATUSES, Classification, http_error, parse_retry_after, status_outcome
from chimeway.wiring.config import parse_flag

__all__ = [
    "Adapter",
    "BouncedError",
    "DeliveryError",
    "Option",
    "PermanentError",
    "SendRequest",
    "SendResult",
    "TEMPORARY_STATUSES",
    "TemporaryError",
    "Classification",
    "http_error",
    "parse_flag",
    "parse_retry_after",
    "status_outcome",
]


@dataclass(frozen=True)
class SendRequest:
    """Everything an adapter gets for one attempt. The payload is the delivery's, as sent."""

    delivery_id: str
    tenant_id: str
    channel: str
    recipient: str
    payload: Mapping[str, Any]
    metadata: Mapping[str, Any]
    attempt_number: int
    max_attempts: int

    @property
    def idempotency_key(self) -> str:
        """``chimeway-<delivery_id>``: stable across attempts of one delivery, for providers that dedupe
        on a key. It is not the application's ``send(idempotency_key=...)``, which dedupes ``send()``
        calls inside Chimeway and never reaches the adapter."""
        return f"chimeway-{self.delivery_id}"


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the send. ``response`` is a small redacted summary kept on the attempt.

    ``provider`` must be the name of the webhook provider whose events report on this message
    (``postmark``, ``sendgrid``, ``mailgun``, ``standard``): webhook events link to their delivery on
    (tenant, provider, provider_message_id), so any other name leaves every event an orphan.
    """

    provider: str
    provider_message_id: str | None = None
    response: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One setting an adapter accepts."""

    default: Any = None
    parse: Callable[[Any], Any] = str
    required: bool = False
    secret: bool = False  #: never shown in errors, logs or telemetry
    doc: str = ""


class Adapter:
    """Base class for adapters. Subclasses set ``name``, ``channel``, ``options`` and implement ``send``."""

    #: the registry name (the entry-point name must match)
    name: ClassVar[str] = ""
    #: the channel it serves: email, sms, push, chat, webhook…
    channel: ClassVar[str] = ""
    #: declared options: unknown ones are refused at configure time
    options: ClassVar[Mapping[str, Option]] = {}
    #: other CHIMEWAY_* environment variables the adapter reads itself (known, so not refused as typos)
    environment: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.config: dict[str, Any] = options

    def send(self, request: SendRequest) -> SendResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (called when the runtime is reconfigured or shut down)."""
