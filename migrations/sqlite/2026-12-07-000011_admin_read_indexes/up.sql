-- Every filter of GET /api/admin/webhook-events reads an index in the
-- page's order (newest first, svix id breaking ties) and stops at the page
-- size: all events and since/until use webhook_events_received_idx, one
-- user's events webhook_events_user_idx (migration 000008); type, outcome,
-- and both together use these.
CREATE INDEX webhook_events_type_idx ON webhook_events (event_type, received_at DESC, svix_id DESC);
CREATE INDEX webhook_events_outcome_idx ON webhook_events (outcome, received_at DESC, svix_id DESC);
CREATE INDEX webhook_events_type_outcome_idx ON webhook_events (event_type, outcome, received_at DESC, svix_id DESC);

-- GET /api/admin/sync/status: failing pushes are counted, and unsettled
-- ones (due or failing) listed oldest first, from indexes that hold only
-- those rows, not from a scan of one row per user.
CREATE INDEX clerk_sync_failing_idx ON clerk_sync (user_id) WHERE last_error IS NOT NULL;
CREATE INDEX clerk_sync_unsettled_idx ON clerk_sync (queued_at, user_id)
    WHERE next_attempt_at IS NOT NULL OR last_error IS NOT NULL;
