-- Users as Clerk knows them, with the role our admins and Clerk agree on.
-- Timestamps are UTC `TIMESTAMP` (text) columns: the same diesel type on both backends.
CREATE TABLE users (
    id               TEXT PRIMARY KEY NOT NULL,
    email            TEXT,
    first_name       TEXT,
    last_name        TEXT,
    image_url        TEXT,
    role             TEXT NOT NULL CHECK (role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    -- The newest Clerk state seen (from webhooks and push responses):
    -- Clerk's `updated_at` in milliseconds and the role Clerk held then.
    clerk_updated_at BIGINT,
    clerk_role       TEXT CHECK (clerk_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    deleted_at       TIMESTAMP
);

-- Keyset pagination of live users, newest first, optionally by role.
CREATE INDEX users_live_created_idx ON users (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX users_live_role_created_idx ON users (role, created_at DESC, id DESC) WHERE deleted_at IS NULL;

-- Append-only audit of every role change.
CREATE TABLE role_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    old_role   TEXT CHECK (old_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    new_role   TEXT NOT NULL CHECK (new_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    source     TEXT NOT NULL CHECK (source IN ('admin_api', 'clerk_webhook', 'backfill', 'cli')),
    actor      TEXT,
    changed_at TIMESTAMP NOT NULL
);
CREATE INDEX role_changes_user_idx ON role_changes (user_id, id DESC);

-- Each processed Svix message once: the primary key is the idempotency guard.
CREATE TABLE webhook_events (
    svix_id     TEXT PRIMARY KEY NOT NULL,
    event_type  TEXT NOT NULL,
    user_id     TEXT,
    outcome     TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL
);

-- The outbox of roles to push to Clerk: one row per user, newest intent wins.
CREATE TABLE clerk_sync (
    user_id         TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    desired_role    TEXT NOT NULL CHECK (desired_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    version         BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- NULL once retrying has stopped (a 4xx from Clerk): the row shows as failing.
    next_attempt_at TIMESTAMP,
    last_error      TEXT
);
CREATE INDEX clerk_sync_due_idx ON clerk_sync (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Live users per role, kept in the same transaction as every role change so
-- the dashboard's counts cost the same at a thousand users as at a million.
-- (Sharded like the PostgreSQL table so one query serves both backends.)
CREATE TABLE role_counts (
    role  TEXT NOT NULL CHECK (role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    shard SMALLINT NOT NULL,
    count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (role, shard)
);
WITH RECURSIVE shards (shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM shards WHERE shard < 15)
INSERT INTO role_counts (role, shard, count)
SELECT r.role, s.shard, 0
FROM (SELECT 'STUDENT' AS role UNION ALL SELECT 'INSTRUCTOR' UNION ALL SELECT 'ADMIN') AS r
CROSS JOIN shards AS s;
