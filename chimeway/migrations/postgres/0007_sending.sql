-- Chimeway schema, version 7 (PostgreSQL): priority lanes and scheduled sends.
-- priority: the lane (queue) every message of the delivery goes to, its first and every later one
-- (retries, deferrals, the sweep), so the row must carry it. send_at: when the sender asked it to be
-- sent (NULL: at once), kept for reading; the claim's guard is next_eligible_at, which a scheduled
-- send sets too (docs/architecture.md §9).
-- A constant default is stored in the catalog: neither column rewrites the table.
ALTER TABLE chimeway_deliveries ADD COLUMN priority text NOT NULL DEFAULT 'normal'
    CONSTRAINT chimeway_deliveries_priority_check CHECK (priority IN ('high', 'normal', 'bulk'));
ALTER TABLE chimeway_deliveries ADD COLUMN send_at timestamptz;
