ALTER TABLE clerk_sync DROP COLUMN claimed_until;
