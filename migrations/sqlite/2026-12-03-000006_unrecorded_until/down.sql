ALTER TABLE clerk_sync DROP COLUMN unrecorded_until;
