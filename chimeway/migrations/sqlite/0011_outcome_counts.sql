-- Chimeway schema, version 11 (SQLite). Mirrors migrations/postgres/0011_outcome_counts.sql: terminal
-- outcomes counted per hour as deliveries change, appended by triggers and folded by the scheduler.
-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', so an hour is its first 13 characters
-- followed by ':00:00.000000' (and compares with every other timestamp as text). No index on the
-- changes: SQLite's table frees the pages of deleted rows, so a read never scans a burst's leftovers.
CREATE TABLE chimeway_outcome_changes (
    hour        text NOT NULL,
    tenant_id   text NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL,
    deliveries  integer NOT NULL
);

CREATE TABLE chimeway_outcome_hours (
    hour        text NOT NULL,
    tenant_id   text NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL,
    deliveries  integer NOT NULL,
    PRIMARY KEY (hour, tenant_id, status, reason)
);

CREATE TRIGGER chimeway_deliveries_outcome_insert AFTER INSERT ON chimeway_deliveries
WHEN NEW.status IN ('succeeded', 'suppressed', 'cancelled')
BEGIN
    INSERT INTO chimeway_outcome_changes
    VALUES (substr(NEW.updated_at, 1, 13) || ':00:00.000000', NEW.tenant_id, NEW.status, COALESCE(NEW.reason, ''), 1);
END;

CREATE TRIGGER chimeway_deliveries_outcome_update AFTER UPDATE ON chimeway_deliveries
WHEN (OLD.status IN ('succeeded', 'suppressed', 'cancelled') OR NEW.status IN ('succeeded', 'suppressed', 'cancelled'))
 AND (OLD.status IS NOT NEW.status OR OLD.reason IS NOT NEW.reason OR OLD.tenant_id IS NOT NEW.tenant_id
      OR substr(OLD.updated_at, 1, 13) IS NOT substr(NEW.updated_at, 1, 13))
BEGIN
    INSERT INTO chimeway_outcome_changes
    SELECT substr(OLD.updated_at, 1, 13) || ':00:00.000000', OLD.tenant_id, OLD.status, COALESCE(OLD.reason, ''), -1
     WHERE OLD.status IN ('succeeded', 'suppressed', 'cancelled');
    INSERT INTO chimeway_outcome_changes
    SELECT substr(NEW.updated_at, 1, 13) || ':00:00.000000', NEW.tenant_id, NEW.status, COALESCE(NEW.reason, ''), 1
     WHERE NEW.status IN ('succeeded', 'suppressed', 'cancelled');
END;

CREATE TRIGGER chimeway_deliveries_outcome_delete AFTER DELETE ON chimeway_deliveries
WHEN OLD.status IN ('succeeded', 'suppressed', 'cancelled')
BEGIN
    INSERT INTO chimeway_outcome_changes
    VALUES (substr(OLD.updated_at, 1, 13) || ':00:00.000000', OLD.tenant_id, OLD.status, COALESCE(OLD.reason, ''), -1);
END;

INSERT INTO chimeway_outcome_hours
SELECT substr(updated_at, 1, 13) || ':00:00.000000', tenant_id, status, COALESCE(reason, ''), count(*)
  FROM chimeway_deliveries WHERE status IN ('succeeded', 'suppressed', 'cancelled')
 GROUP BY 1, 2, 3, 4;
