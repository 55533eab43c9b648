-- Chimeway schema, version 1 (SQLite). Mirrors migrations/postgres/0001_initial.sql.
-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (sortable); ids are UUID text; JSON is text.

CREATE TABLE chimeway_deliveries (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL DEFAULT 'default',
    notification_id     text NOT NULL,
    channel             text NOT NULL,
    category            text,
    recipient           text NOT NULL,
    adapter             text NOT NULL,
    payload             text NOT NULL DEFAULT '{}',
    metadata            text NOT NULL DEFAULT '{}',
    idempotency_key     text,
    status              text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'dispatched', 'succeeded', 'failed', 'suppressed', 'cancelled')),
    orchestration_state text NOT NULL DEFAULT 'ready' CHECK (orchestration_state IN ('ready', 'deferred')),
    next_eligible_at    text,
    suppression_reason  text,
    attempt_count       integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    max_attempts        integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    next_attempt_at     text,
    lease_until         text,
    enqueued_at         text,
    provider            text,
    provider_message_id text,
    delay_fallback      integer NOT NULL DEFAULT 0,
    read_at             text,
    last_event_type     text,
    last_event_at       text,
    delivered_at        text,
    bounced_at          text,
    complained_at       text,
    opened_at           text,
    clicked_at          text,
    lock_version        integer NOT NULL DEFAULT 0,
    created_at          text NOT NULL,
    updated_at          text NOT NULL,
    UNIQUE (notification_id, channel)
);
CREATE UNIQUE INDEX chimeway_deliveries_idempotency_key
    ON chimeway_deliveries (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX chimeway_deliveries_provider_message
    ON chimeway_deliveries (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX chimeway_deliveries_open
    ON chimeway_deliveries (status, updated_at) WHERE status IN ('pending', 'dispatched', 'failed');
CREATE INDEX chimeway_deliveries_recipient ON chimeway_deliveries (tenant_id, recipient, created_at);

CREATE TABLE chimeway_delivery_attempts (
    id                  text PRIMARY KEY,
    delivery_id         text NOT NULL REFERENCES chimeway_deliveries (id),
    attempt_number      integer NOT NULL CHECK (attempt_number >= 1),
    outcome             text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'rejected', 'bounced')),
    error_class         text CHECK (error_class IN ('temporary', 'permanent', 'bounced', 'unknown_classification')),
    error_message       text,
    adapter             text NOT NULL,
    provider_message_id text,
    provider_response   text NOT NULL DEFAULT '{}',
    duration_ms         integer NOT NULL DEFAULT 0,
    created_at          text NOT NULL,
    UNIQUE (delivery_id, attempt_number)
);

CREATE TABLE chimeway_webhook_events (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL DEFAULT 'default',
    provider            text NOT NULL,
    provider_event_id   text NOT NULL,
    body                blob NOT NULL,
    status              text NOT NULL DEFAULT 'processed' CHECK (status IN ('processed', 'failed')),
    received_at         text NOT NULL,
    processed_at        text,
    UNIQUE (provider, provider_event_id)
);
CREATE INDEX chimeway_webhook_events_received ON chimeway_webhook_events (received_at);

CREATE TABLE chimeway_events (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL DEFAULT 'default',
    delivery_id          text REFERENCES chimeway_deliveries (id),
    type                 text NOT NULL CHECK (type IN ('queued', 'sent', 'rejected', 'failed', 'bounced',
        'deferred', 'delivered', 'autoresponded', 'opened', 'clicked', 'complained', 'unsubscribed',
        'subscribed', 'unknown', 'reconciled')),
    reject_reason        text CHECK (reject_reason IN ('invalid', 'bounced', 'timed_out', 'blocked', 'spam',
        'unsubscribed', 'other')),
    provider             text NOT NULL,
    provider_message_id  text,
    provider_event_id    text,
    occurred_at          text NOT NULL,
    received_at          text NOT NULL,
    needs_reconciliation integer NOT NULL DEFAULT 0,
    idempotency_key      text,
    metadata             text NOT NULL DEFAULT '{}',
    webhook_event_id     text
);
CREATE UNIQUE INDEX chimeway_events_idempotency_key
    ON chimeway_events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX chimeway_events_orphans ON chimeway_events (tenant_id, received_at) WHERE needs_reconciliation;
CREATE INDEX chimeway_events_delivery ON chimeway_events (delivery_id) WHERE delivery_id IS NOT NULL;

CREATE TABLE chimeway_suppressions (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL DEFAULT 'default',
    channel     text NOT NULL,
    address     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    source      text,
    expires_at  text,
    created_at  text NOT NULL,
    UNIQUE (tenant_id, channel, address)
);

CREATE TABLE chimeway_preferences (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL DEFAULT 'default',
    recipient   text NOT NULL,
    channel     text NOT NULL,
    category    text NOT NULL DEFAULT '*',
    enabled     integer NOT NULL,
    updated_at  text NOT NULL,
    UNIQUE (tenant_id, recipient, channel, category)
);

-- Append-only tables. SQLite has no SQLSTATE: the message carries 45A01 for the library to translate.
CREATE TRIGGER chimeway_delivery_attempts_no_update BEFORE UPDATE ON chimeway_delivery_attempts
BEGIN SELECT RAISE(ABORT, '45A01: UPDATE on chimeway_delivery_attempts refused: the table is append-only'); END;
CREATE TRIGGER chimeway_delivery_attempts_no_delete BEFORE DELETE ON chimeway_delivery_attempts
BEGIN SELECT RAISE(ABORT, '45A01: DELETE on chimeway_delivery_attempts refused: the table is append-only'); END;
CREATE TRIGGER chimeway_events_no_update BEFORE UPDATE ON chimeway_events
BEGIN SELECT RAISE(ABORT, '45A01: UPDATE on chimeway_events refused: the table is append-only'); END;
CREATE TRIGGER chimeway_events_no_delete BEFORE DELETE ON chimeway_events
BEGIN SELECT RAISE(ABORT, '45A01: DELETE on chimeway_events refused: the table is append-only'); END;
