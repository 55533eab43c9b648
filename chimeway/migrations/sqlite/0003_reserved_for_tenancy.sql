-- PLACEHOLDER, NOT FOR MAIN: version 3 belongs to the tenancy branch (w/tenancy), which scopes webhook
-- keys and UNIQUE (notification_id, channel) by tenant. The runner refuses a gap in the numbering, so
-- this branch (w/sendval, migration 0004) carries this no-op to run alone. Delete this file when merging.
SELECT 1;
