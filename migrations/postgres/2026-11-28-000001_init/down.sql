DROP TABLE role_counts;
DROP TABLE clerk_sync;
DROP TABLE webhook_events;
DROP TABLE role_changes;
DROP TABLE users;
