-- Chimeway schema, version 4 (PostgreSQL): what an idempotency key was first used for.
-- send() stores a sha256 of its parameters with the key, so that reusing the key for a different
-- send is refused instead of silently answered with the first delivery. Rows from before this
-- version keep NULL, which means "unknown": a send with their key is accepted, as it was.
-- A nullable column without a default: added without rewriting the table.
ALTER TABLE chimeway_deliveries ADD COLUMN idempotency_fingerprint text;
