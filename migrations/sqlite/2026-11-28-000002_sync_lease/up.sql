-- A worker holds a row while its push is in flight (without a database lock
-- held during the HTTP call). A newer role written meanwhile waits for that
-- push to finish, so two pushes for one user never race each other in Clerk.
-- A lease left by a crashed worker expires and the row is taken up again.
ALTER TABLE clerk_sync ADD COLUMN claimed_until TIMESTAMP;
