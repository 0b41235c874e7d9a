DROP TABLE drift_audit_sketches;
ALTER TABLE users ADD COLUMN audited_at TIMESTAMP;
