-- Chimeway schema, version 11 (PostgreSQL): terminal outcomes are counted per hour as deliveries
-- change, so that `chimeway status` and the console's overview read a day of outcomes from a few rows
-- per hour instead of counting the day's deliveries (at a million a day, 150-200 ms of every status).
-- Design: docs/architecture.md §9 ("Outcome counts kept as deliveries change").
--
-- The promise: for every hour, the sum of chimeway_outcome_hours and chimeway_outcome_changes per
-- (tenant, status, reason) equals the number of terminal deliveries whose updated_at falls in that
-- hour (UTC), in every snapshot: the triggers write in the transaction that changes the delivery.

-- Appended to by the triggers, one row per change (+1 into an hour, -1 out of one); never updated,
-- so that two workers finishing deliveries never wait for each other. Folded into
-- chimeway_outcome_hours every minute by the scheduler, so it holds few live rows; but after a burst
-- (a scheduler stopped for a day, a bulk load) its heap stays large until a vacuum truncates it, and
-- a status that read it whole would read every page: measured on 10 M rows deleted and vacuumed
-- without truncation, 131 ms per read against 0.2 ms through this index (which costs the trigger
-- about 1 us per change: new hours go to the index's right-hand page).
CREATE TABLE chimeway_outcome_changes (
    hour        timestamptz NOT NULL,  -- date_trunc('hour', updated_at, 'UTC')
    tenant_id   text NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL,  -- '' for none: part of the key below
    deliveries  bigint NOT NULL
);
CREATE INDEX chimeway_outcome_changes_hour ON chimeway_outcome_changes (hour);

-- The folded counts: one row per hour, tenant, status and reason.
CREATE TABLE chimeway_outcome_hours (
    hour        timestamptz NOT NULL,
    tenant_id   text NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL,
    deliveries  bigint NOT NULL,
    PRIMARY KEY (hour, tenant_id, status, reason)
);

-- A row trigger with a WHEN clause costs nothing on the updates that touch no terminal state (claims,
-- leases, retries); a statement trigger with transition tables would copy every updated row of every
-- statement. Measured on 20,000 rows: 4.5-8 us per finishing row, none on a claim.
CREATE FUNCTION chimeway_count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chimeway_outcome_changes
        VALUES (date_trunc('hour', NEW.updated_at, 'UTC'), NEW.tenant_id, NEW.status, COALESCE(NEW.reason, ''), 1);
    ELSE  -- an UPDATE into, out of or within the terminal states: out of the old bucket, into the new
        INSERT INTO chimeway_outcome_changes
        SELECT * FROM (VALUES
            (date_trunc('hour', OLD.updated_at, 'UTC'), OLD.tenant_id, OLD.status, COALESCE(OLD.reason, ''), -1::bigint),
            (date_trunc('hour', NEW.updated_at, 'UTC'), NEW.tenant_id, NEW.status, COALESCE(NEW.reason, ''), 1::bigint)
        ) AS c (hour, tenant_id, status, reason, deliveries)
        WHERE c.status IN ('succeeded', 'suppressed', 'cancelled');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER chimeway_deliveries_outcome_insert AFTER INSERT ON chimeway_deliveries FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'suppressed', 'cancelled'))
    EXECUTE FUNCTION chimeway_count_outcome();

CREATE TRIGGER chimeway_deliveries_outcome_update AFTER UPDATE ON chimeway_deliveries FOR EACH ROW
    WHEN ((OLD.status IN ('succeeded', 'suppressed', 'cancelled') OR NEW.status IN ('succeeded', 'suppressed', 'cancelled'))
          AND (OLD.status, OLD.reason, OLD.tenant_id, date_trunc('hour', OLD.updated_at, 'UTC'))
              IS DISTINCT FROM (NEW.status, NEW.reason, NEW.tenant_id, date_trunc('hour', NEW.updated_at, 'UTC')))
    EXECUTE FUNCTION chimeway_count_outcome();

-- Deletes come from prune, 5,000 deliveries a statement: one row per hour and outcome, from the
-- transition table the reference check (0010) captures anyway.
CREATE FUNCTION chimeway_count_deleted_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chimeway_outcome_changes
    SELECT date_trunc('hour', updated_at, 'UTC'), tenant_id, status, COALESCE(reason, ''), -count(*)
      FROM gone WHERE status IN ('succeeded', 'suppressed', 'cancelled')
     GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END
$$;

CREATE TRIGGER chimeway_deliveries_outcome_delete AFTER DELETE ON chimeway_deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_count_deleted_outcomes();

-- The history so far. The triggers above already hold their lock on chimeway_deliveries (no writer
-- can change a delivery until this migration commits), so the counts start exact.
INSERT INTO chimeway_outcome_hours
SELECT date_trunc('hour', updated_at, 'UTC'), tenant_id, status, COALESCE(reason, ''), count(*)
  FROM chimeway_deliveries WHERE status IN ('succeeded', 'suppressed', 'cancelled')
 GROUP BY 1, 2, 3, 4;
