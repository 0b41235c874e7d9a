-- The latest time (ms since the epoch, our clock) at which Clerk could have
-- applied a push noted in `unrecorded_roles`: the end of its request's
-- timeout while it is in flight, the moment it failed without an answer.
-- A Clerk state later than that (beyond the clock-skew allowance) cannot be
-- such a push's echo.
ALTER TABLE clerk_sync ADD COLUMN unrecorded_until BIGINT;
