DROP TABLE drift_audits;
DROP TABLE walk_lease;
ALTER TABLE users DROP COLUMN audited_at;
DROP INDEX webhook_events_user_idx;
DROP INDEX webhook_events_received_idx;
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
ALTER TABLE webhook_events DROP COLUMN clerk_updated_at;
CREATE TABLE role_changes_old (
    id         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    old_role   TEXT CHECK (old_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    new_role   TEXT NOT NULL CHECK (new_role IN ('STUDENT', 'INSTRUCTOR', 'ADMIN')),
    source     TEXT NOT NULL CHECK (source IN ('admin_api', 'clerk_webhook', 'backfill', 'cli')),
    actor      TEXT,
    changed_at TIMESTAMP NOT NULL
);
INSERT INTO role_changes_old (id, user_id, old_role, new_role, source, actor, changed_at)
    SELECT id, user_id, old_role, new_role, CASE source WHEN 'reconcile' THEN 'cli' ELSE source END, actor, changed_at
    FROM role_changes;
DROP TABLE role_changes;
ALTER TABLE role_changes_old RENAME TO role_changes;
CREATE INDEX role_changes_user_idx ON role_changes (user_id, id DESC);
