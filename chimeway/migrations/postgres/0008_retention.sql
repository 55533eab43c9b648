-- Chimeway schema, version 8 (PostgreSQL): retention that keeps the append-only promise.
-- `chimeway prune` removes terminal deliveries older than CHIMEWAY_RETENTION_DAYS together with their
-- attempts and ledger events, and orphan events as old. The ledger and the attempts stay append-only
-- for every row that is kept: UPDATE is always refused, and DELETE only of a row older than the
-- horizon the running prune writes in chimeway_retention (and sets back to NULL before committing, so
-- no other transaction ever sees it) and whose delivery, if any, is terminal. A row inside the
-- retention window can never be deleted.
-- Why a guarded DELETE and not partitions: docs/architecture.md §9.

CREATE TABLE chimeway_retention (
    id           integer PRIMARY KEY CHECK (id = 1),
    prune_before timestamptz  -- NULL: nothing may be deleted
);
INSERT INTO chimeway_retention (id, prune_before) VALUES (1, NULL);

-- Checked once per DELETE statement over the rows it removed (a transition table), not row by row:
-- prune deletes thousands of rows per statement, and a per-row PL/pgSQL check was most of its cost.
-- Raising in the AFTER trigger undoes the whole statement.
CREATE FUNCTION chimeway_refuse_kept_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon timestamptz := (SELECT prune_before FROM chimeway_retention WHERE id = 1);
    kept boolean;
BEGIN
    -- Each branch is planned only when it runs (and per table), so it names only its own columns.
    IF TG_TABLE_NAME = 'chimeway_events' THEN
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
    RETURN NULL;
END
$$;

DROP TRIGGER chimeway_delivery_attempts_append_only ON chimeway_delivery_attempts;
CREATE TRIGGER chimeway_delivery_attempts_append_only BEFORE UPDATE ON chimeway_delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_change();
CREATE TRIGGER chimeway_delivery_attempts_retention AFTER DELETE ON chimeway_delivery_attempts
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete();
DROP TRIGGER chimeway_events_append_only ON chimeway_events;
CREATE TRIGGER chimeway_events_append_only BEFORE UPDATE ON chimeway_events
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_change();
CREATE TRIGGER chimeway_events_retention AFTER DELETE ON chimeway_events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete();

-- Terminal deliveries by when they last changed: prune walks it oldest first in keyset order
-- (updated_at, id), and status counts the outcomes of the last hour and day from it (status and
-- reason in the key: read from the index alone).
-- Its cost follows the rows read, not the history.
CREATE INDEX chimeway_deliveries_closed
    ON chimeway_deliveries (updated_at, id, status, reason) WHERE status IN ('succeeded', 'suppressed', 'cancelled');
