-- Chimeway schema, version 7 (SQLite). Mirrors migrations/postgres/0007_sending.sql: the delivery's
-- priority lane and the time a scheduled send was asked for (NULL: at once).
ALTER TABLE chimeway_deliveries ADD COLUMN priority text NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('high', 'normal', 'bulk'));
ALTER TABLE chimeway_deliveries ADD COLUMN send_at text;
