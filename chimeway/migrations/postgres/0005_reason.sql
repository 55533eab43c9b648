-- Chimeway schema, version 5: the failure reason is named for what it is.
-- suppressed, cancelled, bounced, permanent and exhausted deliveries all record why in one column;
-- it was called suppression_reason. The model keeps ``suppression_reason`` as a deprecated alias
-- for one release. A rename changes only the catalog (no table rewrite).
ALTER TABLE chimeway_deliveries RENAME COLUMN suppression_reason TO reason;
