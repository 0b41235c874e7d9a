-- A claim is held only while its push is being sent, by one named replica
-- (REPLICA_ID). The lease is short and renewed while the owner lives, so a
-- replica that dies strands nothing for long, and one that restarts takes
-- its own old claims back at once.
ALTER TABLE clerk_sync ADD COLUMN claimed_by TEXT;
CREATE INDEX clerk_sync_claimed_by_idx ON clerk_sync (claimed_by) WHERE claimed_by IS NOT NULL;

-- Processed Svix messages are pruned by age (WEBHOOK_EVENTS_RETENTION_DAYS).
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

-- Whether the newest Clerk state seen came from our own push's answer: a
-- webhook carrying exactly that state is its echo, and cancels nothing.
ALTER TABLE users ADD COLUMN clerk_from_push BOOLEAN NOT NULL DEFAULT FALSE;

-- The newest Clerk state (its `updated_at`) known when the role now in the
-- outbox was committed: a Clerk state the admin had already seen is not a
-- newer intent, and cannot cancel their change.
ALTER TABLE clerk_sync ADD COLUMN seen_clerk_updated_at BIGINT;

-- The current claim took the row over from an owner whose lease had
-- expired (a replica that died): counted in /metrics.
ALTER TABLE clerk_sync ADD COLUMN taken_over BOOLEAN NOT NULL DEFAULT FALSE;
