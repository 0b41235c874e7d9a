-- Role changes made by `reconcile --fix` and by the drift audit are
-- recorded as such.
ALTER TABLE role_changes DROP CONSTRAINT role_changes_source_check;
ALTER TABLE role_changes ADD CONSTRAINT role_changes_source_check
    CHECK (source IN ('admin_api', 'clerk_webhook', 'backfill', 'cli', 'reconcile'));

-- Clerk's `updated_at` of the state a message carried, for operators
-- reading what the webhooks did; NULL for messages about no user state.
ALTER TABLE webhook_events ADD COLUMN clerk_updated_at BIGINT;
-- What the webhooks did, newest first: all of them, and one user's.
DROP INDEX webhook_events_received_idx;
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at DESC, svix_id DESC);
CREATE INDEX webhook_events_user_idx ON webhook_events (user_id, received_at DESC, svix_id DESC);

-- When a drift audit last found the user in Clerk's list (the start of that
-- run): live users the run did not find are looked up one by one.
ALTER TABLE users ADD COLUMN audited_at TIMESTAMP;

-- Walks over Clerk's user list (the drift audit, a backfill) take turns:
-- the one holding this lease walks, renewing it as it goes; another takes
-- it over only once it has expired.
CREATE TABLE walk_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    owner       TEXT,
    lease_until TIMESTAMP
);
INSERT INTO walk_lease (id) VALUES (1);

-- Drift audit runs: where the run in progress stands (a restarted replica
-- resumes it), and what each run found, by kind, and repaired.
CREATE TABLE drift_audits (
    id                        BIGSERIAL PRIMARY KEY,
    started_at                TIMESTAMP NOT NULL,
    finished_at               TIMESTAMP,
    -- The replica that last worked on it.
    owner                     TEXT NOT NULL,
    -- The walk of Clerk's list: the last user of the last page done.
    after_user_id             TEXT,
    -- The walk is done; then live users it did not find are looked up,
    -- in id order after this one.
    walked                    BOOLEAN NOT NULL DEFAULT FALSE,
    after_local_id            TEXT,
    checked                   BIGINT NOT NULL DEFAULT 0,
    found_missing_here        BIGINT NOT NULL DEFAULT 0,
    found_role_differs        BIGINT NOT NULL DEFAULT 0,
    found_outdated            BIGINT NOT NULL DEFAULT 0,
    found_missing_in_clerk    BIGINT NOT NULL DEFAULT 0,
    -- Of what was found, what was repaired (a role that differs may be
    -- kept by the race rule: a push pending by then, an older state).
    repaired                  BIGINT NOT NULL DEFAULT 0,
    -- Why the last attempt at it stopped, when it did.
    error                     TEXT
);
CREATE INDEX drift_audits_started_idx ON drift_audits (started_at DESC);
