-- Chimeway schema, version 4 (SQLite). Mirrors migrations/postgres/0004_idempotency_fingerprint.sql:
-- the sha256 of the parameters an idempotency key was first used with (NULL: unknown, accepted).
ALTER TABLE chimeway_deliveries ADD COLUMN idempotency_fingerprint text;
