-- A PostgreSQL database as a busy deployment leaves it, for
-- loadgen/bench-admin-reads.sh: :rows users (default a million), one
-- clerk_sync row each (1 in 1,000 due, 1 in 2,000 failing, the rest
-- settled), and :rows webhook_events over the last 30 days (30% user.created,
-- 65% user.updated, 4% user.deleted, 1% another type; outcomes from common
-- to rare: applied, unchanged, stale, duplicate, conflict, ...).
--   psql -v rows=1000000 -f loadgen/bench-admin-reads.sql <database>
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO users (id, email, first_name, last_name, role, clerk_updated_at, clerk_role, created_at, updated_at)
SELECT 'user_b' || n, 'user_b' || n || '@example.com', 'Seeded', 'User ' || n,
       CASE WHEN n % 500 = 0 THEN 'ADMIN' WHEN n % 10 = 0 THEN 'INSTRUCTOR' ELSE 'STUDENT' END, 0,
       CASE WHEN n % 500 = 0 THEN 'ADMIN' WHEN n % 10 = 0 THEN 'INSTRUCTOR' ELSE 'STUDENT' END,
       (now() AT TIME ZONE 'UTC') - interval '60 days' + n * interval '1 millisecond',
       (now() AT TIME ZONE 'UTC') - interval '60 days' + n * interval '1 millisecond'
FROM generate_series(1, :rows) AS n;
UPDATE role_counts SET count = count +
    (SELECT count(*) FROM generate_series(1, :rows) AS n
     WHERE CASE WHEN n % 500 = 0 THEN 'ADMIN' WHEN n % 10 = 0 THEN 'INSTRUCTOR' ELSE 'STUDENT' END = role_counts.role)
WHERE shard = 0;
INSERT INTO clerk_sync (user_id, desired_role, version, attempts, next_attempt_at, last_error, queued_at)
SELECT 'user_b' || n, 'STUDENT', 1,
       CASE WHEN n % 1000 = 0 OR n % 2000 = 1 THEN 3 ELSE 0 END,
       CASE WHEN n % 1000 = 0 THEN (now() AT TIME ZONE 'UTC') + interval '1 hour' END,
       CASE WHEN n % 2000 = 1 THEN 'Clerk answered 404' END,
       (now() AT TIME ZONE 'UTC') - interval '30 days' + n * interval '2 milliseconds'
FROM generate_series(1, :rows) AS n;
INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at, clerk_updated_at)
SELECT 'msg_b' || n,
       CASE WHEN n % 100 < 30 THEN 'user.created' WHEN n % 100 < 95 THEN 'user.updated'
            WHEN n % 100 < 99 THEN 'user.deleted' ELSE 'session.created' END,
       CASE WHEN n % 100 < 99 THEN 'user_b' || (1 + (n::bigint * 7919) % :rows) END,
       CASE WHEN n % 100 >= 99 THEN 'ignored' WHEN n % 100 >= 95 THEN 'deleted'
            WHEN n % 1000 = 7 THEN 'conflict' WHEN n % 50 = 3 THEN 'duplicate'
            WHEN n % 10 = 1 THEN 'stale' WHEN n % 3 = 0 THEN 'unchanged' ELSE 'applied' END,
       (now() AT TIME ZONE 'UTC') - interval '30 days' + n * (interval '30 days' / :rows),
       n
FROM generate_series(1, :rows) AS n;
COMMIT;
ANALYZE users;
ANALYZE clerk_sync;
ANALYZE webhook_events;
