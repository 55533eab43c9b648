-- Chimeway schema, version 8 (SQLite). Mirrors migrations/postgres/0008_retention.sql: prune may
-- delete an attempt or ledger event only if it is older than the horizon the running prune wrote in
-- chimeway_retention and its delivery, if any, is terminal; UPDATE stays refused. A NULL horizon
-- compares as '' (below every timestamp): without the COALESCE the comparison is NULL, and a WHEN
-- that is NULL would let the DELETE through.
CREATE TABLE chimeway_retention (
    id           integer PRIMARY KEY CHECK (id = 1),
    prune_before text
);
INSERT INTO chimeway_retention (id, prune_before) VALUES (1, NULL);

DROP TRIGGER chimeway_delivery_attempts_no_delete;
CREATE TRIGGER chimeway_delivery_attempts_no_delete BEFORE DELETE ON chimeway_delivery_attempts
WHEN NOT (
    OLD.created_at < COALESCE((SELECT prune_before FROM chimeway_retention WHERE id = 1), '')
    AND EXISTS (SELECT 1 FROM chimeway_deliveries d WHERE d.id = OLD.delivery_id
                AND d.status IN ('succeeded', 'suppressed', 'cancelled'))
)
BEGIN SELECT RAISE(ABORT, '45A01: DELETE on chimeway_delivery_attempts refused: the table is append-only (only prune removes rows past retention whose delivery is terminal)'); END;

DROP TRIGGER chimeway_events_no_delete;
CREATE TRIGGER chimeway_events_no_delete BEFORE DELETE ON chimeway_events
WHEN NOT (
    OLD.received_at < COALESCE((SELECT prune_before FROM chimeway_retention WHERE id = 1), '')
    AND (OLD.delivery_id IS NULL OR EXISTS (SELECT 1 FROM chimeway_deliveries d WHERE d.id = OLD.delivery_id
                AND d.status IN ('succeeded', 'suppressed', 'cancelled')))
)
BEGIN SELECT RAISE(ABORT, '45A01: DELETE on chimeway_events refused: the table is append-only (only prune removes rows past retention whose delivery is terminal)'); END;

CREATE INDEX chimeway_deliveries_closed
    ON chimeway_deliveries (updated_at, id, status, reason) WHERE status IN ('succeeded', 'suppressed', 'cancelled');
