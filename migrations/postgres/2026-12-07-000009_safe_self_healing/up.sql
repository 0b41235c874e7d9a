-- A deletion is audited (old role -> NULL), and so is a return from a
-- provisional tombstone (NULL -> role).
ALTER TABLE role_changes ALTER COLUMN new_role DROP NOT NULL;

-- Only Clerk's own `user.deleted` makes a tombstone final; one made by the
-- drift audit or `reconcile` is undone when Clerk shows the user again.
-- Tombstones from before this column count as final only where their
-- `user.deleted` is still on record.
ALTER TABLE users ADD COLUMN deletion_final BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET deletion_final = TRUE
    WHERE deleted_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM webhook_events AS e
                  WHERE e.user_id = users.id AND e.event_type = 'user.deleted');

-- A run's kind (the audit inside `serve`, or `reconcile` from the command
-- line, reporting or fixing), and why it waits for an operator's
-- confirmation, if it does.
ALTER TABLE drift_audits
    ADD COLUMN mode TEXT NOT NULL DEFAULT 'audit' CHECK (mode IN ('audit', 'report', 'fix')),
    ADD COLUMN waiting TEXT;

-- Changes a run holds back until its end: deletions and demotions of an
-- ADMIN. Within the budget they are made (each confirmed by a fresh
-- lookup); past it, none is, and they wait for an operator.
CREATE TABLE drift_audit_holds (
    run_id  BIGINT NOT NULL REFERENCES drift_audits (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('role_differs', 'missing_in_clerk')),
    PRIMARY KEY (run_id, user_id)
);
