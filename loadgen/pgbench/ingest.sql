-- The database's own limit for webhook ingest: what the service writes for
-- one new user's `user.created` event (the message record, the user, its
-- creation audit row and the role counter), as one statement.
--   pgbench -n -M prepared -c 32 -j 2 -T 20 -f loadgen/pgbench/ingest.sql <database>
\set n random(1, 2000000000)
WITH event AS (
    INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at)
    VALUES ('msg_pgbench' || :n, 'user.created', 'user_pgbench' || :n, 'applied', now() AT TIME ZONE 'UTC')
    ON CONFLICT DO NOTHING
    RETURNING user_id
), created AS (
    INSERT INTO users (id, email, first_name, last_name, image_url, role, clerk_updated_at, clerk_role, created_at, updated_at)
    SELECT user_id, user_id || '@example.com', 'Ada', 'Lovelace', 'https://img.clerk.com/avatar.png',
           'STUDENT', :n, 'STUDENT', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
    FROM event
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), audited AS (
    INSERT INTO role_changes (user_id, old_role, new_role, source, actor, changed_at)
    SELECT id, NULL, 'STUDENT', 'clerk_webhook', 'msg_pgbench' || :n, now() AT TIME ZONE 'UTC'
    FROM created
)
UPDATE role_counts SET count = count + 1
WHERE role = 'STUDENT' AND shard = :n % 16 AND EXISTS (SELECT 1 FROM created);
