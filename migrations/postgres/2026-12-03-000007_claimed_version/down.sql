ALTER TABLE clerk_sync DROP COLUMN claimed_version;
