-- Chimeway schema, version 2 (PostgreSQL): the reconcile scan's index.
-- Reconcile walks orphans oldest first across tenants, in keyset batches of (received_at, id).
-- This partial index serves that order directly, so each batch reads only its own rows instead of
-- sorting every orphan in the window (the tenant-filtered scan keeps using chimeway_events_orphans).
CREATE INDEX chimeway_events_orphan_scan ON chimeway_events (received_at, id) WHERE needs_reconciliation;
