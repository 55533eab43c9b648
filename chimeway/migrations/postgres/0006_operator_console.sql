-- Chimeway schema, version 6: the operator's view.
-- chimeway_operator_actions is the append-only record of what an operator did to a delivery (a
-- redrive, a cancel from the console): who, when, why, and the state it replaced. Owned by
-- chimeway/operator_record.py. No foreign key: the record outlives nothing, and a key to the
-- deliveries would make every TRUNCATE of them name this table too.
CREATE TABLE chimeway_operator_actions (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    delivery_id uuid NOT NULL,
    action      text NOT NULL
        CONSTRAINT chimeway_operator_actions_action_check CHECK (action IN ('redrive', 'cancel')),
    actor       text NOT NULL,
    reason      text,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chimeway_operator_actions_delivery ON chimeway_operator_actions (delivery_id, created_at);
CREATE TRIGGER chimeway_operator_actions_append_only BEFORE UPDATE OR DELETE ON chimeway_operator_actions
    FOR EACH ROW EXECUTE FUNCTION chimeway_refuse_change();

-- The console's deliveries list pages by keyset on (created_at, id), newest first. It costs one index
-- entry per INSERT and per non-HOT UPDATE. (A recipient search uses the recipient index, which
-- leads with tenant_id, once per tenant: no index of its own.)
CREATE INDEX chimeway_deliveries_created ON chimeway_deliveries (created_at, id);
