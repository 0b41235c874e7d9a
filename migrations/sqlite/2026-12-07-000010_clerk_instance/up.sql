-- The Clerk instance this database belongs to: recorded at first contact
-- (`GET /v1/instance`), and changed only by `clerk-role-sync
-- rebind-instance`. A secret key of another instance is refused.
CREATE TABLE clerk_instance (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id      TEXT NOT NULL,
    -- `development` or `production`, as Clerk names it.
    environment_type TEXT NOT NULL,
    bound_at         TIMESTAMP NOT NULL
);
