-- chimeway: foreign-keys-off
-- Chimeway schema, version 3 (SQLite). Mirrors migrations/postgres/0003_tenant_keys.sql: every
-- uniqueness a tenant can reach is scoped by tenant (tenant_id is NOT NULL, so no NULL ever makes two
-- rows distinct; the tenant comes last so lookups by the old columns alone keep their index).
-- SQLite cannot drop a table's UNIQUE constraint, so the two tables that have one are rebuilt (the
-- documented create-copy-drop-rename procedure). The first line asks the migrator to run this file
-- with foreign-key enforcement off, as that procedure requires (dropping chimeway_deliveries would
-- otherwise check the attempts and events that reference it), and to check every foreign key
-- before committing.

CREATE TABLE chimeway_deliveries_0003 (
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
    UNIQUE (notification_id, channel, tenant_id)
);
INSERT INTO chimeway_deliveries_0003 SELECT * FROM chimeway_deliveries;
DROP TABLE chimeway_deliveries;
ALTER TABLE chimeway_deliveries_0003 RENAME TO chimeway_deliveries;
CREATE UNIQUE INDEX chimeway_deliveries_idempotency_key
    ON chimeway_deliveries (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX chimeway_deliveries_provider_message
    ON chimeway_deliveries (provider, provider_message_id, tenant_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX chimeway_deliveries_open
    ON chimeway_deliveries (status, updated_at) WHERE status IN ('pending', 'dispatched', 'failed');
CREATE INDEX chimeway_deliveries_recipient ON chimeway_deliveries (tenant_id, recipient, created_at);

CREATE TABLE chimeway_webhook_events_0003 (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL DEFAULT 'default',
    provider            text NOT NULL,
    provider_event_id   text NOT NULL,
    body                blob NOT NULL,
    status              text NOT NULL DEFAULT 'processed' CHECK (status IN ('processed', 'failed')),
    received_at         text NOT NULL,
    processed_at        text,
    UNIQUE (provider, provider_event_id, tenant_id)
);
INSERT INTO chimeway_webhook_events_0003 SELECT * FROM chimeway_webhook_events;
DROP TABLE chimeway_webhook_events;
ALTER TABLE chimeway_webhook_events_0003 RENAME TO chimeway_webhook_events;
CREATE INDEX chimeway_webhook_events_received ON chimeway_webhook_events (received_at);

DROP INDEX chimeway_events_idempotency_key;
CREATE UNIQUE INDEX chimeway_events_idempotency_key
    ON chimeway_events (idempotency_key, tenant_id) WHERE idempotency_key IS NOT NULL;
