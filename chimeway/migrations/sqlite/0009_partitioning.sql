-- Chimeway schema, version 9 (SQLite): nothing to change. PostgreSQL partitions attempts and ledger
-- events by month here; SQLite has no partitions and keeps migration 0008's guarded chunked delete
-- (docs/architecture.md §9). The file keeps both dialects at the same version number.
SELECT 1;
