-- Chimeway schema, version 10 (PostgreSQL): the references from attempts and ledger events to their
-- delivery are checked once per statement instead of once per row, so that prune can remove a day of
-- deliveries in seconds. Design: docs/architecture.md §9 ("References checked per statement").
--
-- A foreign key checks each deleted delivery with its own lookup in every partition of the attempts
-- and of the ledger: measured at 1 M deliveries, 37 µs of the 41 µs it takes to delete one. These
-- triggers keep the same promise — no attempt or event names a delivery that does not exist — with
-- one query per statement, and the same locks: an insert holds its deliveries FOR KEY SHARE until it
-- commits (as a foreign key does), so a delete of one of them waits for it and then sees its rows.
-- On SQLite the foreign keys stay (its prune is a chunked delete either way).

ALTER TABLE chimeway_delivery_attempts DROP CONSTRAINT chimeway_delivery_attempts_delivery_id_fkey;
ALTER TABLE chimeway_events DROP CONSTRAINT chimeway_events_delivery_id_fkey;

-- After a DELETE of deliveries: refuse it if an attempt or an event still names one of them.
-- Deliveries deleted together are usually neighbours in id order (UUIDv7 ids follow time: prune takes
-- the oldest first), so their rows are looked up as one range of each index on delivery_id, a few
-- pages whatever the number of partitions. When the range holds many rows of other deliveries (old
-- random UUIDv4 ids, or a scattered set), each deleted delivery is looked up on its own instead.
CREATE FUNCTION chimeway_refuse_referenced_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lo uuid;
    hi uuid;
    most bigint;
    near uuid[];
    one uuid;
BEGIN
    -- uuid has no min() before PostgreSQL 16; its text in the C collation sorts as the uuid does.
    SELECT min(id::text COLLATE "C")::uuid, max(id::text COLLATE "C")::uuid, 4 * count(*) INTO lo, hi, most FROM gone;
    IF lo IS NULL THEN
        RETURN NULL;
    END IF;
    -- The rows in the deleted ids' range, at most four per deleted delivery (planned for these bounds
    -- by EXECUTE: a plan cached for any bounds would look each delivery up instead).
    EXECUTE 'SELECT array(SELECT delivery_id FROM chimeway_delivery_attempts WHERE delivery_id BETWEEN $1 AND $2
                          UNION ALL
                          SELECT delivery_id FROM chimeway_events WHERE delivery_id BETWEEN $1 AND $2 LIMIT $3)'
        INTO near USING lo, hi, most + 1;
    IF cardinality(near) = 0 THEN
        RETURN NULL;  -- what prune's chunks find: the rows left with their month's partition
    ELSIF cardinality(near) <= most THEN
        one := (SELECT g.id FROM gone g WHERE g.id = ANY (near) LIMIT 1);
    ELSE  -- the range is crowded: look each deleted delivery up
        one := (SELECT g.id FROM gone g WHERE EXISTS (SELECT 1 FROM chimeway_delivery_attempts a WHERE a.delivery_id = g.id)
                   OR EXISTS (SELECT 1 FROM chimeway_events e WHERE e.delivery_id = g.id) LIMIT 1);
    END IF;
    IF one IS NOT NULL THEN
        RAISE EXCEPTION 'DELETE on chimeway_deliveries refused: attempts or ledger events still name a deleted delivery'
            USING ERRCODE = '23503';  -- foreign_key_violation, as the foreign key raised
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER chimeway_deliveries_referenced AFTER DELETE ON chimeway_deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_referenced_delete();

-- A delivery's id never changes (a foreign key would refuse it while rows name it).
CREATE FUNCTION chimeway_refuse_id_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'UPDATE of chimeway_deliveries.id refused: attempts and ledger events name deliveries by id'
        USING ERRCODE = '23503';
END
$$;
CREATE TRIGGER chimeway_deliveries_id_fixed BEFORE UPDATE OF id ON chimeway_deliveries
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION chimeway_refuse_id_change();

-- After an INSERT of attempts or events: every delivery they name exists, and is held FOR KEY SHARE
-- until this transaction ends (in id order, so that two inserters never deadlock on each other).
CREATE FUNCTION chimeway_refuse_unknown_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named bigint := (SELECT count(DISTINCT delivery_id) FROM added WHERE delivery_id IS NOT NULL);
    found bigint;
BEGIN
    IF named = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM chimeway_deliveries d WHERE d.id IN (SELECT delivery_id FROM added) ORDER BY d.id FOR KEY SHARE OF d;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < named THEN
        RAISE EXCEPTION 'INSERT on % refused: a row names a delivery that does not exist', TG_TABLE_NAME
            USING ERRCODE = '23503';
    END IF;
    RETURN NULL;
END
$$;

-- A statement trigger fires only for statements addressed to its own table: the parents get one, and
-- so does every partition (present ones here, later ones in chimeway_partition_keys), for an INSERT
-- addressed to a partition itself.
CREATE OR REPLACE FUNCTION chimeway_add_reference_check(tab text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS added '
        'FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_unknown_delivery()', tab || '_delivery_ref', tab);
END
$$;

SELECT chimeway_add_reference_check(parent) FROM unnest(ARRAY['chimeway_delivery_attempts', 'chimeway_events']) parent;
SELECT chimeway_add_reference_check(i.inhrelid::regclass::text) FROM pg_inherits i
 WHERE i.inhparent IN ('chimeway_delivery_attempts'::regclass, 'chimeway_events'::regclass);

CREATE OR REPLACE FUNCTION chimeway_partition_keys(parent text, part text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (id)', part, part || '_pkey');
    IF parent = 'chimeway_delivery_attempts' THEN
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (delivery_id, attempt_number)', part, part || '_number_key');
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS gone '
        'FOR EACH STATEMENT EXECUTE FUNCTION chimeway_refuse_kept_delete()', part || '_retention', part);
    PERFORM chimeway_add_reference_check(part);
END
$$;
