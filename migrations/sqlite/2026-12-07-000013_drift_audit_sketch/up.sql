-- The drift audit no longer marks each user it finds in Clerk's list (a
-- write per user per run). It keeps the live users the list showed in a
-- sketch of fixed size, one row per run, saved with each page (see
-- src/domain/id_sketch.rs), and finds the users the list did not show by
-- subtracting it from the same sketch of the live users here.
ALTER TABLE users DROP COLUMN audited_at;
CREATE TABLE drift_audit_sketches (
    run_id BIGINT NOT NULL PRIMARY KEY REFERENCES drift_audits (id) ON DELETE CASCADE,
    listed BLOB NOT NULL
);
-- A run under way walked with the marks: its walk starts over.
UPDATE drift_audits
SET after_user_id = NULL, walked = FALSE, after_local_id = NULL, checked = 0
WHERE finished_at IS NULL;
