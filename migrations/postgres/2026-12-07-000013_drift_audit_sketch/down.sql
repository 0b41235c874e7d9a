DROP TABLE drift_audit_sketches;
ALTER TABLE users ADD COLUMN audited_at TIMESTAMP;
-- A run under way walked without the marks the build before reads: its
-- walk starts over.
UPDATE drift_audits
SET after_user_id = NULL, walked = FALSE, after_local_id = NULL, checked = 0
WHERE finished_at IS NULL;
