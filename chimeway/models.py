"""Peewee models: the same columns as the SQL migrations, for querying. Migrations own the schema.

Fields convert at the boundary so Python code always sees ``str`` ids, aware UTC datetimes and
decoded JSON, whichever dialect is behind :data:`chimeway.db.proxy`.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import peewee

from chimeway import db

if TYPE_CHECKING:
    from chimeway.policy import PolicyFacts
if sys.version_info >= (3, 14):
    from uuid import uuid7
else:
    from uuid6 import uuid7


def new_id() -> str:
    """A UUIDv7: time-ordered, so new rows land on the right-hand pages of every id index (and
    foreign-key index) instead of on random ones, and an id tells roughly when its row was made."""
    return str(uuid7())


class UUIDText(peewee.Field):
    """A UUID column (uuid on PostgreSQL, text on SQLite), seen from Python as ``str``."""

    field_type = "UUID"

    def db_value(self, value: Any) -> Any:
        return None if value is None else str(value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else str(value)


class UTCDateTime(peewee.Field):
    """timestamptz on PostgreSQL, sortable UTC text on SQLite; always an aware UTC datetime in Python."""

    field_type = "TIMESTAMPTZ"

    def db_value(self, value: Any) -> Any:
        return db.to_db_time(value, self.model._meta.database.obj if self.model else None)

    def python_value(self, value: Any) -> Any:
        return db.from_db_time(value)


class JSON(peewee.Field):
    """jsonb on PostgreSQL, text on SQLite."""

    field_type = "JSONB"

    def db_value(self, value: Any) -> Any:
        return db.to_db_json(value)

    def python_value(self, value: Any) -> Any:
        return db.from_db_json(value)


class BaseModel(peewee.Model):
    class Meta:
        database = db.proxy
        legacy_table_names = False


class Delivery(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField(default="default")
    notification_id = UUIDText()
    channel = peewee.TextField()
    category = peewee.TextField(null=True)
    recipient = peewee.TextField()
    adapter = peewee.TextField()
    payload = JSON(default=dict)
    metadata = JSON(default=dict)
    idempotency_key = peewee.TextField(null=True)
    #: sha256 of the first send's parameters (deliveries.fingerprint); NULL without a key, or from before 0004
    idempotency_fingerprint = peewee.TextField(null=True)
    status = peewee.TextField(default="pending")
    orchestration_state = peewee.TextField(default="ready")
    next_eligible_at = UTCDateTime(null=True)
    reason = peewee.TextField(null=True)
    attempt_count = peewee.IntegerField(default=0)
    max_attempts = peewee.IntegerField(default=5)
    next_attempt_at = UTCDateTime(null=True)
    lease_until = UTCDateTime(null=True)
    enqueued_at = UTCDateTime(null=True)
    provider = peewee.TextField(null=True)
    provider_message_id = peewee.TextField(null=True)
    delay_fallback = peewee.BooleanField(default=False)
    read_at = UTCDateTime(null=True)
    last_event_type = peewee.TextField(null=True)
    last_event_at = UTCDateTime(null=True)
    delivered_at = UTCDateTime(null=True)
    bounced_at = UTCDateTime(null=True)
    complained_at = UTCDateTime(null=True)
    opened_at = UTCDateTime(null=True)
    clicked_at = UTCDateTime(null=True)
    lock_version = peewee.IntegerField(default=0)
    created_at = UTCDateTime(default=db.now)
    updated_at = UTCDateTime(default=db.now)
    #: the priority lane: high, normal or bulk (0007)
    priority = peewee.TextField(default="normal")
    #: when a scheduled send was asked for; None: at once (0007)
    send_at = UTCDateTime(null=True)

    class Meta:
        table_name = "chimeway_deliveries"

    #: Not a column: the facts the deliver actor's load read with the row (``policy.PolicyFacts``) for
    #: the first policy rules, or None when the rules must query (``deliveries.load`` sets it).
    policy_facts: PolicyFacts | None = None

    @property
    def is_terminal(self) -> bool:
        from chimeway.states import TERMINAL

        return self.status in TERMINAL

    @property
    def suppression_reason(self) -> str | None:
        """Deprecated alias of :attr:`reason` (the column's name before schema version 5); goes in the next release."""
        warnings.warn("Delivery.suppression_reason is deprecated; use Delivery.reason", DeprecationWarning, stacklevel=2)
        return self.reason


class Attempt(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    delivery_id = UUIDText()
    attempt_number = peewee.IntegerField()
    outcome = peewee.TextField()
    error_class = peewee.TextField(null=True)
    error_message = peewee.TextField(null=True)
    adapter = peewee.TextField()
    provider_message_id = peewee.TextField(null=True)
    provider_response = JSON(default=dict)
    duration_ms = peewee.IntegerField(default=0)
    created_at = UTCDateTime(default=db.now)

    class Meta:
        table_name = "chimeway_delivery_attempts"


class WebhookEvent(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField(default="default")
    provider = peewee.TextField()
    provider_event_id = peewee.TextField()
    body = peewee.BlobField()
    status = peewee.TextField(default="processed")
    received_at = UTCDateTime(default=db.now)
    processed_at = UTCDateTime(null=True)

    class Meta:
        table_name = "chimeway_webhook_events"


class Event(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField(default="default")
    delivery_id = UUIDText(null=True)
    type = peewee.TextField()
    reject_reason = peewee.TextField(null=True)
    provider = peewee.TextField()
    provider_message_id = peewee.TextField(null=True)
    provider_event_id = peewee.TextField(null=True)
    occurred_at = UTCDateTime()
    received_at = UTCDateTime(default=db.now)
    needs_reconciliation = peewee.BooleanField(default=False)
    idempotency_key = peewee.TextField(null=True)
    metadata = JSON(default=dict)
    webhook_event_id = UUIDText(null=True)

    class Meta:
        table_name = "chimeway_events"


class Suppression(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField(default="default")
    channel = peewee.TextField()
    address = peewee.TextField()
    reason = peewee.TextField()
    source = peewee.TextField(null=True)
    expires_at = UTCDateTime(null=True)
    created_at = UTCDateTime(default=db.now)

    class Meta:
        table_name = "chimeway_suppressions"


class Preference(BaseModel):
    id = UUIDText(primary_key=True, default=new_id)
    tenant_id = peewee.TextField(default="default")
    recipient = peewee.TextField()
    channel = peewee.TextField()
    category = peewee.TextField(default="*")
    enabled = peewee.BooleanField()
    updated_at = UTCDateTime(default=db.now)

    class Meta:
        table_name = "chimeway_preferences"


#: Every model, in the order their tables are created.
ALL_MODELS: tuple[type[BaseModel], ...] = (Delivery, Attempt, WebhookEvent, Event, Suppression, Preference)
