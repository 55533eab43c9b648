-- Chimeway schema, version 10 (SQLite): nothing to change. PostgreSQL replaces its foreign keys from
-- attempts and events to deliveries with checks made once per statement (for prune's speed on large
-- histories); SQLite keeps its foreign keys. The file keeps both dialects at the same version number.
SELECT 1;
