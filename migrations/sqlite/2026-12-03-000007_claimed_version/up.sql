-- The version a live claim is sending. A newer version queued while an
-- older one is in flight is not in flight itself: a dashboard edit may
-- still cancel it by the race rule. NULL (claims taken before this column)
-- counts as the row's current version.
ALTER TABLE clerk_sync ADD COLUMN claimed_version BIGINT;
