"""Every error Chimeway raises, under one root.

::

    ChimewayError
    ├── ConfigurationError            a setting is invalid or missing (names the variable)
    ├── MigrationError                the schema cannot be brought to the code's version
    ├── EventLedgerImmutableError     UPDATE/DELETE on an append-only table (SQLSTATE 45A01)
    ├── DeliveryNotFound              no delivery with that id
    ├── NotRedrivableError            redrive() of a delivery that is not cancelled(retries_exhausted | permanent_failure)
    ├── InvalidSendError (ValueError) send() refused an argument (names it); nothing was stored
    │   └── IdempotencyConflictError  the idempotency key was first used for a different send
    ├── UnhandledOutcomeError         an attempt outcome no documented case handles
    └── DeliveryError                 raised by adapters to classify a failed send
        ├── TemporaryError            try again later (network, 4xx SMTP, 429/5xx HTTP)
        ├── PermanentError            never try again (rejected request, bad credentials)
        └── BouncedError              the recipient does not exist or refuses mail

Adapters translate their provider's errors into the three DeliveryError classes at the boundary,
keeping the cause with ``raise TemporaryError(...) from err``; nothing else may leak from
``send()``, and anything that does is recorded as an unclassified outcome.
"""

from __future__ import annotations

from typing import Any

#: The SQLSTATE our append-only triggers raise (PostgreSQL) or name in their message (SQLite).
APPEND_ONLY_SQLSTATE = "45A01"


class ChimewayError(Exception):
    """Root of every Chimeway error: ``except ChimewayError`` catches them all."""


class ConfigurationError(ChimewayError):
    """A setting is invalid. Fix the named variable (or ``configure()`` argument) and restart."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class MigrationError(ChimewayError):
    """The database schema does not match the code: run ``chimeway migrate`` or upgrade Chimeway."""


class EventLedgerImmutableError(ChimewayError):
    """An UPDATE or DELETE reached an append-only table (events, attempts). Append a new row instead."""


class DeliveryNotFound(ChimewayError, LookupError):
    """No delivery has that id (in that tenant)."""


class NotRedrivableError(ChimewayError):
    """``redrive()`` refused: only a delivery cancelled with reason ``retries_exhausted`` or
    ``permanent_failure`` goes back to pending; nothing was changed. ``status`` and ``reason`` are
    the delivery's as found (another operator's redrive may have just taken it: read it again)."""

    def __init__(self, delivery_id: str, status: str, reason: str | None) -> None:
        state = f"{status}({reason})" if reason else status
        super().__init__(
            f"delivery {delivery_id} is {state}: only cancelled(retries_exhausted) or "
            "cancelled(permanent_failure) can be redriven; nothing was changed"
        )
        self.delivery_id = delivery_id
        self.status = status
        self.reason = reason


class InvalidSendError(ChimewayError, ValueError):
    """``send()`` refused one of its arguments, named by ``argument``; nothing was stored or enqueued.

    Fix that argument: the message says what it accepts. It never quotes the value (recipients and
    payloads do not belong in logs).
    """

    #: ``send_many()``: the position of the refused item in ``items`` (None for ``send()``)
    index: int | None = None

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem

    def at_item(self, index: int) -> InvalidSendError:
        """This error, said of ``send_many()``'s item ``index`` (the message starts ``items[index]``)."""
        self.index = index
        self.args = (f"items[{index}].{self.args[0]}",)
        return self


class IdempotencyConflictError(InvalidSendError):
    """The idempotency key was first used for a send with other parameters (channel, recipient,
    adapter, payload, notification id); nothing was stored. A retry must repeat the first send's
    parameters; a different send needs a key of its own. ``differing`` names what differs, when known.
    """

    def __init__(self, key: str, differing: list[str]) -> None:
        what = f"a different {', '.join(differing)}" if differing else "different parameters"
        super().__init__("idempotency_key", f"key {key!r} was first used for a send with {what}")
        self.key = key
        self.differing = differing


class UnhandledOutcomeError(ChimewayError):
    """An attempt produced an outcome that no documented case handles.

    The worker logs it at ERROR (with every field and a traceback reaching into the adapter) rather
    than raising it: the attempt row is stored, with the adapter's exception type and message, and
    the delivery is retried at its ``next_attempt_at`` like a transient failure, so that the final
    attempt converges it. Seeing this means an adapter returned or raised something it must not:
    fix the adapter to return a ``SendResult`` or raise one of the ``DeliveryError`` classes.
    """

    def __init__(
        self,
        *,
        delivery_id: str,
        outcome: str,
        error_class: str | None,
        status: str,
        attempt: int,
        max_attempts: int,
    ) -> None:
        self.delivery_id = delivery_id
        self.outcome = outcome
        self.error_class = error_class
        self.status = status
        self.attempt = attempt
        self.max_attempts = max_attempts
        super().__init__(
            f"unhandled outcome for delivery {delivery_id}: outcome={outcome} error_class={error_class} "
            f"status={status} attempt={attempt}/{max_attempts}"
        )

    def fields(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "outcome": self.outcome,
            "error_class": self.error_class,
            "status": self.status,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
        }


class DeliveryError(ChimewayError):
    """Base of the errors an adapter raises to classify a failed send.

    ``response`` is a small, already-redacted summary of what the provider said (status code,
    error code); it is stored on the attempt row, so it must never hold secrets or message bodies.
    """

    def __init__(self, message: str, *, response: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.response = dict(response or {})


class TemporaryError(DeliveryError):
    """The send may succeed later. ``retry_after`` (seconds) overrides the backoff when the provider says so."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, response: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, response=response)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The send will never succeed as it is; the delivery is cancelled(permanent_failure)."""


class BouncedError(DeliveryError):
    """The recipient is unreachable for good; the delivery is cancelled(bounced)."""
