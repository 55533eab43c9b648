-- Chimeway schema, version 3 (PostgreSQL): every uniqueness a tenant can reach is scoped by tenant.
-- Without it, one tenant's webhook (a Postmark event ID, a raw request id), notification id or
-- provider message id silently claimed the key for every other tenant: the second tenant's event
-- answered 200 and was never stored, and reusing a notification id revealed that another tenant had
-- used it.
-- tenant_id is NOT NULL (the default tenant is 'default'), so plain composite keys are exact: no
-- NULL ever makes two rows distinct. The tenant comes last so that lookups by the old columns alone
-- (mark_read by notification id, the reconciler's probe of 'reconciled:<orphan id>') keep their index.
ALTER TABLE chimeway_deliveries DROP CONSTRAINT chimeway_deliveries_notification_channel_key;
ALTER TABLE chimeway_deliveries
    ADD CONSTRAINT chimeway_deliveries_notification_channel_key UNIQUE (notification_id, channel, tenant_id);

-- Two provider accounts (two tenants) may hand out the same message id: the second delivery's
-- record must not fail on the first one's. Every lookup by message id names the tenant too.
DROP INDEX chimeway_deliveries_provider_message;
CREATE UNIQUE INDEX chimeway_deliveries_provider_message
    ON chimeway_deliveries (provider, provider_message_id, tenant_id) WHERE provider_message_id IS NOT NULL;

ALTER TABLE chimeway_webhook_events DROP CONSTRAINT chimeway_webhook_events_provider_event_key;
ALTER TABLE chimeway_webhook_events
    ADD CONSTRAINT chimeway_webhook_events_provider_event_key UNIQUE (provider, provider_event_id, tenant_id);

DROP INDEX chimeway_events_idempotency_key;
CREATE UNIQUE INDEX chimeway_events_idempotency_key
    ON chimeway_events (idempotency_key, tenant_id) WHERE idempotency_key IS NOT NULL;
