ALTER TABLE clerk_sync DROP COLUMN taken_over;
ALTER TABLE clerk_sync DROP COLUMN seen_clerk_updated_at;
ALTER TABLE users DROP COLUMN clerk_from_push;
DROP INDEX webhook_events_received_idx;
DROP INDEX clerk_sync_claimed_by_idx;
ALTER TABLE clerk_sync DROP COLUMN claimed_by;
