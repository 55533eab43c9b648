-- Chimeway schema, version 6 (SQLite). Mirrors migrations/postgres/0006_operator_console.sql:
-- the append-only operator record and the console's list index.
CREATE TABLE chimeway_operator_actions (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL,
    delivery_id text NOT NULL,
    action      text NOT NULL CHECK (action IN ('redrive', 'cancel')),
    actor       text NOT NULL,
    reason      text,
    data        text NOT NULL DEFAULT '{}',
    created_at  text NOT NULL
);
CREATE INDEX chimeway_operator_actions_delivery ON chimeway_operator_actions (delivery_id, created_at);
CREATE TRIGGER chimeway_operator_actions_no_update BEFORE UPDATE ON chimeway_operator_actions
BEGIN SELECT RAISE(ABORT, '45A01: UPDATE on chimeway_operator_actions refused: the table is append-only'); END;
CREATE TRIGGER chimeway_operator_actions_no_delete BEFORE DELETE ON chimeway_operator_actions
BEGIN SELECT RAISE(ABORT, '45A01: DELETE on chimeway_operator_actions refused: the table is append-only'); END;

CREATE INDEX chimeway_deliveries_created ON chimeway_deliveries (created_at, id);
