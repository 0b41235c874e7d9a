-- The budget of requests to Clerk that every replica and command of this
-- database shares (CLERK_PUSH_RATE), as one rate limiter row (GCRA): each
-- request takes the next slot, when `next_slot_us` says, and moves it on
-- by one interval. Nobody holds a share, so a replica that dies holds
-- nothing. A 429 pauses every request until `paused_until_us`. Both are
-- the database's clock in microseconds since the Unix epoch.
CREATE TABLE clerk_budget (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    next_slot_us    BIGINT NOT NULL,
    paused_until_us BIGINT NOT NULL
);
INSERT INTO clerk_budget (id, next_slot_us, paused_until_us) VALUES (1, 0, 0);
