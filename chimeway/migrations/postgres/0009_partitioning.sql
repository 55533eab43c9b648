-- Chimeway schema, version 9 (PostgreSQL): attempts and ledger events partitioned by month, so that
-- prune removes a month past retention by dropping its partition instead of deleting its rows.
-- Design and trade-offs: docs/architecture.md §3 (data model) and §9 (decision).
--
-- chimeway_delivery_attempts is partitioned by created_at, chimeway_events by received_at, in
-- calendar months (UTC): chimeway_delivery_attempts_p202612 holds December 2026. A DEFAULT partition
-- catches any row no month partition covers, so a writer never fails for want of a partition; prune
-- creates this month's and the next two months' partitions ahead (chimeway_ensure_partitions).
-- chimeway_deliveries is not partitioned: its unique keys (notification, idempotency key, provider
-- message id) must hold across all time, and a partitioned table's unique keys must include the
-- partition key.
--
-- The conversion copies nothing: each existing table becomes the partition "<table>_legacy" covering
-- everything up to the month after its newest row (FROM MINVALUE). Its indexes, foreign key and CHECK
-- constraints are taken over as they are; only the range check reads the table once. Prune deletes
-- its expired rows by chunks (as migration 0008 does) and drops it once all of it is past retention.
-- Run it with the workers and the webhook endpoint stopped: it locks attempts, events and (for their
-- foreign keys) deliveries, in an order no writer can share.

-- The ledger's idempotency across all partitions. A partitioned table's unique index holds only
-- within one partition, so the key (tenant + idempotency key) moves to this table. A row trigger on
-- the ledger claims the key before the event is stored and skips the event when the key is taken: an
-- INSERT ... ON CONFLICT DO NOTHING RETURNING on the ledger answers exactly as it did (a known key
-- stores nothing and returns nothing), on every partition. A key leaves with its event (the retention
-- trigger below for deletes, prune for dropped partitions).
CREATE TABLE chimeway_event_keys (
    idempotency_key text NOT NULL,
    tenant_id       text NOT NULL,
    received_at     timestamptz NOT NULL,  -- its event's: prune removes the keys of dropped months
    CONSTRAINT chimeway_event_keys_pkey PRIMARY KEY (idempotency_key, tenant_id)
);
INSERT INTO chimeway_event_keys (idempotency_key, tenant_id, received_at)
    SELECT idempotency_key, tenant_id, received_at FROM chimeway_events WHERE idempotency_key IS NOT NULL;
CREATE INDEX chimeway_event_keys_received ON chimeway_event_keys (received_at);

CREATE FUNCTION chimeway_claim_event_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idempotency_key IS NULL THEN
        RETURN NEW;
    END IF;
    -- A concurrent claim of the same key waits for the other transaction, as a unique index does.
    INSERT INTO chimeway_event_keys (idempotency_key, tenant_id, received_at)
        VALUES (NEW.idempotency_key, NEW.tenant_id, NEW.received_at) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;  -- the key is taken: the event is not stored
END
$$;

-- Deletes stay refused except by prune past retention (0008); a permitted delete of events takes
-- their keys with it. The table is told by its name's prefix: the trigger also runs on each partition
-- for a DELETE addressed to the partition itself (a statement trigger on the parent does not fire then).
CREATE OR REPLACE FUNCTION chimeway_refuse_kept_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon timestamptz := (SELECT prune_before FROM chimeway_retention WHERE id = 1);
    kept boolean;
BEGIN
    -- Each branch is planned only when it runs (and per table), so it names only its own columns.
    IF TG_TABLE_NAME LIKE 'chimeway\_events%' THEN
        kept := EXISTS (SELECT 1 FROM gone g WHERE horizon IS NULL OR g.received_at >= horizon
            OR (g.delivery_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM chimeway_deliveries d
                WHERE d.id = g.delivery_id AND d.status IN ('succeeded', 'suppressed', 'cancelled'))));
    ELSE
        kept := EXISTS (SELECT 1 FROM gone g WHERE horizon IS NULL OR g.created_at >= horizon
            OR NOT EXISTS (SELECT 1 FROM chimeway_deliveries d
                WHERE d.id = g.delivery_id AND d.status IN ('succeeded', 'suppressed', 'cancelled')));
    END IF;
    IF kept THEN
        RAISE EXCEPTION 'DELETE on % refused: the table is append-only (only prune removes rows past retention whose delivery is terminal)', TG_TABLE_NAME
            USING ERRCODE = '45A01';
    END IF;
    IF TG_TABLE_NAME LIKE 'chimeway\_events%' THEN
        DELETE FROM chimeway_event_keys k USING gone g
         WHERE k.idempotency_key = g.idempotency_key AND k.tenant_id = g.tenant_id;
    END IF;
    RETURN NULL;
END
$$;

-- One month's partition (lower bound inclusive) with what every partition carries on its own: the
-- primary key on id, the attempts' (delivery, number) key, and the retention guard for DELETEs
-- addressed to it. A key on id alone cannot be declared on the parent (it must include the partition
-- key); ids are UUIDv7, unique by construction.
CREATE FUNCTION chimeway_partition_keys(parent text, part text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (id)', part, part || '_pkey');
    IF parent = 'chimeway_delivery_attempts' THEN
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (delivery_id, attempt_number)', part, part || '_number_key');
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS gone '
        'FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete()', part || '_retention', part);
END
$$;

-- The partitions of the month of ``at`` (prune's now) and of the next ``ahead`` months, each created
-- if missing, for both tables. Each is made as a table of its own, then ATTACHed: ATTACH takes only
-- SHARE UPDATE EXCLUSIVE on the parent, which the writers' ROW EXCLUSIVE does not conflict with.
-- CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE on the parent and, for the foreign key,
-- a lock on chimeway_deliveries: a worker's record holds a delivery row, then inserts its attempt,
-- so holding the parent while waiting for the deliveries deadlocks with it (found under load).
-- A month whose rows already sit in the DEFAULT partition (prune did not run for months) is left
-- there: PostgreSQL refuses a partition whose rows the default holds, and the rows are found and
-- removed there by the chunked delete. The names created are returned.
CREATE FUNCTION chimeway_ensure_partitions(ahead integer, at timestamptz) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    parent text;
    month timestamp;  -- UTC, without a time zone: month arithmetic never shifts by an offset
    part text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['chimeway_delivery_attempts', 'chimeway_events'] LOOP
        FOR i IN 0..ahead LOOP
            month := date_trunc('month', at AT TIME ZONE 'UTC') + make_interval(months => i);
            part := parent || '_p' || to_char(month, 'YYYYMM');
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            BEGIN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
                PERFORM chimeway_partition_keys(parent, part);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    parent, part, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
                RETURN NEXT part;
            EXCEPTION
                -- 42P17: the month overlaps an existing partition (the legacy one covers it);
                -- 23514: the DEFAULT partition holds rows of that month.
                WHEN invalid_object_definition OR check_violation THEN
                    RAISE NOTICE 'partition % not created: %', part, SQLERRM;
            END;
        END LOOP;
    END LOOP;
END
$$;

-- The attempts: the table becomes chimeway_delivery_attempts_legacy, attached as the partition of
-- everything before the month after its newest row (its own key on id and (delivery, number), its
-- foreign key and CHECK constraints stay). The parent repeats the constraints under the same names,
-- which is what lets ATTACH take them over.
ALTER TABLE chimeway_delivery_attempts RENAME TO chimeway_delivery_attempts_legacy;
DROP TRIGGER chimeway_delivery_attempts_append_only ON chimeway_delivery_attempts_legacy;
DROP TRIGGER chimeway_delivery_attempts_retention ON chimeway_delivery_attempts_legacy;
CREATE TABLE chimeway_delivery_attempts (
    id                  uuid NOT NULL,
    delivery_id         uuid NOT NULL,
    attempt_number      integer NOT NULL CONSTRAINT chimeway_delivery_attempts_attempt_number_check CHECK (attempt_number >= 1),
    outcome             text NOT NULL
        CONSTRAINT chimeway_attempts_outcome_check CHECK (outcome IN ('succeeded', 'failed', 'rejected', 'bounced')),
    error_class         text
        CONSTRAINT chimeway_attempts_error_class_check
        CHECK (error_class IN ('temporary', 'permanent', 'bounced', 'unknown_classification')),
    error_message       text,
    adapter             text NOT NULL,
    provider_message_id text,
    provider_response   jsonb NOT NULL DEFAULT '{}'::jsonb,
    duration_ms         integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

-- The ledger, the same way.
ALTER TABLE chimeway_events RENAME TO chimeway_events_legacy;
DROP TRIGGER chimeway_events_append_only ON chimeway_events_legacy;
DROP TRIGGER chimeway_events_retention ON chimeway_events_legacy;
DROP INDEX chimeway_events_idempotency_key;  -- chimeway_event_keys holds it now
-- The parent's indexes take these names; the legacy ones are attached to them below.
ALTER INDEX chimeway_events_orphans RENAME TO chimeway_events_legacy_orphans;
ALTER INDEX chimeway_events_orphan_scan RENAME TO chimeway_events_legacy_orphan_scan;
ALTER INDEX chimeway_events_delivery RENAME TO chimeway_events_legacy_delivery;
CREATE TABLE chimeway_events (
    id                   uuid NOT NULL,
    tenant_id            text NOT NULL DEFAULT 'default',
    delivery_id          uuid,
    type                 text NOT NULL
        CONSTRAINT chimeway_events_type_check CHECK (type IN ('queued', 'sent', 'rejected', 'failed', 'bounced',
            'deferred', 'delivered', 'autoresponded', 'opened', 'clicked', 'complained', 'unsubscribed',
            'subscribed', 'unknown', 'reconciled')),
    reject_reason        text
        CONSTRAINT chimeway_events_reject_reason_check CHECK (reject_reason IN ('invalid', 'bounced', 'timed_out',
            'blocked', 'spam', 'unsubscribed', 'other')),
    provider             text NOT NULL,
    provider_message_id  text,
    provider_event_id    text,
    occurred_at          timestamptz NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    needs_reconciliation boolean NOT NULL DEFAULT false,
    idempotency_key      text,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    webhook_event_id     uuid
) PARTITION BY RANGE (received_at);

DO $$
DECLARE
    parent text;
    newest timestamptz;
    upper_bound timestamptz;
BEGIN
    FOREACH parent IN ARRAY ARRAY['chimeway_delivery_attempts', 'chimeway_events'] LOOP
        EXECUTE format('SELECT max(%I) FROM %I', CASE parent WHEN 'chimeway_events' THEN 'received_at' ELSE 'created_at' END,
            parent || '_legacy') INTO newest;
        -- The start of next month at least, so that this month's partition is the legacy one and the
        -- ahead months get their own.
        upper_bound := (date_trunc('month', greatest(newest, now()) AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
            parent, parent || '_legacy', upper_bound);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS gone '
            'FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete()', parent || '_legacy_retention', parent || '_legacy');
    END LOOP;
END
$$;

-- Declared on the parents, so every partition has them: the legacy ones' identical foreign keys and
-- indexes are taken over, not rebuilt.
ALTER TABLE chimeway_delivery_attempts ADD CONSTRAINT chimeway_delivery_attempts_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES chimeway_deliveries (id);
ALTER TABLE chimeway_events ADD CONSTRAINT chimeway_events_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES chimeway_deliveries (id);
CREATE INDEX chimeway_events_orphans ON chimeway_events (tenant_id, received_at) WHERE needs_reconciliation;
CREATE INDEX chimeway_events_orphan_scan ON chimeway_events (received_at, id) WHERE needs_reconciliation;
CREATE INDEX chimeway_events_delivery ON chimeway_events (delivery_id) WHERE delivery_id IS NOT NULL;

-- Row triggers on a partitioned table are cloned onto every partition, present and future. The
-- statement trigger fires for statements addressed to the parent; each partition has its own.
CREATE TRIGGER chimeway_delivery_attempts_append_only BEFORE UPDATE ON chimeway_delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_change();
CREATE TRIGGER chimeway_delivery_attempts_retention AFTER DELETE ON chimeway_delivery_attempts
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete();
CREATE TRIGGER chimeway_events_append_only BEFORE UPDATE ON chimeway_events
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_change();
CREATE TRIGGER chimeway_events_retention AFTER DELETE ON chimeway_events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete();
CREATE TRIGGER chimeway_events_key BEFORE INSERT ON chimeway_events
    FOR EACH ROW EXECUTE FUNCTION chimeway_claim_event_key();

CREATE TABLE chimeway_delivery_attempts_default PARTITION OF chimeway_delivery_attempts DEFAULT;
SELECT chimeway_partition_keys('chimeway_delivery_attempts', 'chimeway_delivery_attempts_default');
CREATE TABLE chimeway_events_default PARTITION OF chimeway_events DEFAULT;
SELECT chimeway_partition_keys('chimeway_events', 'chimeway_events_default');
SELECT chimeway_ensure_partitions(2, now());
