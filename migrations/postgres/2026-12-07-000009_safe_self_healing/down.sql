DROP TABLE drift_audit_holds;
ALTER TABLE drift_audits
    DROP COLUMN mode,
    DROP COLUMN waiting;
ALTER TABLE users DROP COLUMN deletion_final;
DELETE FROM role_changes WHERE new_role IS NULL;
ALTER TABLE role_changes ALTER COLUMN new_role SET NOT NULL;
