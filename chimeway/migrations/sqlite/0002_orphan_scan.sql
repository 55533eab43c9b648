-- Chimeway schema, version 2 (SQLite). Mirrors migrations/postgres/0002_orphan_scan.sql: the
-- reconcile scan's index, in the keyset order (received_at, id) of its batches.
CREATE INDEX chimeway_events_orphan_scan ON chimeway_events (received_at, id) WHERE needs_reconciliation;
