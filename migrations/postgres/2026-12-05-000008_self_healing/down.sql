DROP TABLE drift_audits;
DROP TABLE walk_lease;
ALTER TABLE users DROP COLUMN audited_at;
DROP INDEX webhook_events_user_idx;
DROP INDEX webhook_events_received_idx;
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
ALTER TABLE webhook_events DROP COLUMN clerk_updated_at;
ALTER TABLE role_changes DROP CONSTRAINT role_changes_source_check;
UPDATE role_changes SET source = 'cli' WHERE source = 'reconcile';
ALTER TABLE role_changes ADD CONSTRAINT role_changes_source_check
    CHECK (source IN ('admin_api', 'clerk_webhook', 'backfill', 'cli'));
