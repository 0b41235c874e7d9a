-- When the role now waiting in the outbox was queued (for the age of the
-- oldest pending push in /metrics).
ALTER TABLE clerk_sync ADD COLUMN queued_at TIMESTAMP;

-- The backfill in progress: where to resume after an interruption, and what
-- it has done so far. One row at most; removed when a run completes.
CREATE TABLE backfill_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_user_id    TEXT,
    pages           BIGINT NOT NULL DEFAULT 0,
    seen            BIGINT NOT NULL DEFAULT 0,
    created         BIGINT NOT NULL DEFAULT 0,
    updated         BIGINT NOT NULL DEFAULT 0,
    role_changes    BIGINT NOT NULL DEFAULT 0,
    defaults_queued BIGINT NOT NULL DEFAULT 0,
    pushes_queued   BIGINT NOT NULL DEFAULT 0,
    unknown_roles   BIGINT NOT NULL DEFAULT 0,
    skipped         BIGINT NOT NULL DEFAULT 0,
    started_at      TIMESTAMP NOT NULL
);
