DROP TABLE backfill_progress;
ALTER TABLE clerk_sync DROP COLUMN queued_at;
