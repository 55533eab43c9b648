"""The closed vocabularies of the data model (docs/architecture.md §3–§4), each in one place.

The migrations' CHECK constraints list the same values; ``tests/migrations`` checks that the schema
accepts every value named here.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  #: recorded, waiting for a worker
    DISPATCHED = "dispatched"  #: claimed by a worker under a lease; the adapter is being called
    SUCCEEDED = "succeeded"  #: the provider accepted the send (terminal)
    FAILED = "failed"  #: the last attempt failed transiently; a retry is scheduled
    SUPPRESSED = "suppressed"  #: policy decided not to send (terminal)
    CANCELLED = "cancelled"  #: given up: see reason (terminal)


#: States that never change again. Provider feedback moves only the projection columns after these.
TERMINAL = frozenset({Status.SUCCEEDED, Status.SUPPRESSED, Status.CANCELLED})

#: Why a cancelled delivery may be redriven by an operator (``chimeway.redrive``): the provider or an
#: outage was at fault, not the delivery. The one exception to "terminal states never change".
REDRIVABLE = frozenset({"retries_exhausted", "permanent_failure"})

#: The SQL conditions for "open" and "terminal", written exactly as the partial indexes
#: chimeway_deliveries_open (0001) and chimeway_deliveries_closed (0008) state them: a query with the
#: same words reads its index on both dialects (SQLite matches a partial index's WHERE by its terms).
OPEN_SQL = "status IN ('pending', 'dispatched', 'failed')"
TERMINAL_SQL = "status IN ('succeeded', 'suppressed', 'cancelled')"



class Orchestration(StrEnum):
    READY = "ready"  #: may be attempted now
    DEFERRED = "deferred"  #: policy deferred it until next_eligible_at


class Reason(StrEnum):
    """Why a delivery was suppressed or cancelled (``reason``)."""

    CHANNEL_DISABLED = "channel_disabled"  #: the recipient turned this channel/category off
    RECIPIENT_SUPPRESSED = "recipient_suppressed"  #: the address is on the suppression list
    DELIVERY_CAP_REACHED = "delivery_cap_reached"  #: too many deliveries to this recipient in the window
    ALREADY_READ = "already_read"  #: a delayed fallback whose notification was read elsewhere
    PERMANENT_FAILURE = "permanent_failure"  #: the adapter raised PermanentError
    BOUNCED = "bounced"  #: the adapter raised BouncedError
    RETRIES_EXHAUSTED = "retries_exhausted"  #: the final allowed attempt failed transiently
    CANCELLED_BY_USER = "cancelled_by_user"  #: chimeway.cancel()


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"  #: the adapter returned a SendResult
    FAILED = "failed"  #: TemporaryError
    REJECTED = "rejected"  #: PermanentError, or an unclassified outcome
    BOUNCED = "bounced"  #: BouncedError


class ErrorClass(StrEnum):
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    BOUNCED = "bounced"
    UNKNOWN_CLASSIFICATION = "unknown_classification"  #: neither a SendResult nor a DeliveryError


class EventType(StrEnum):
    """Normalized provider facts in the ledger (the anymail vocabulary) plus ``reconciled``."""

    QUEUED = "queued"
    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    AUTORESPONDED = "autoresponded"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"
    UNKNOWN = "unknown"  #: a provider code no table maps; the raw payload is kept
    RECONCILED = "reconciled"  #: internal: an orphan was linked to its delivery


class RejectReason(StrEnum):
    INVALID = "invalid"
    BOUNCED = "bounced"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"
    SPAM = "spam"
    UNSUBSCRIBED = "unsubscribed"
    OTHER = "other"


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class Priority(StrEnum):
    """A delivery's lane: each has its own queue, and a worker takes a waiting high message first
    (docs/architecture.md §9)."""

    HIGH = "high"  #: one-time passwords, alerts: never waits behind the other lanes
    NORMAL = "normal"  #: the default
    BULK = "bulk"  #: newsletters: served when nothing else waits
