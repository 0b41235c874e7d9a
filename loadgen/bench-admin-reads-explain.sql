-- The plans of the admin reads' queries (the shapes the service sends),
-- for loadgen/bench-admin-reads.sh: none may scan webhook_events or
-- clerk_sync whole.
\set ON_ERROR_STOP on
\set cursor_at '(now() AT TIME ZONE ''UTC'') - interval ''20 days'''
\echo '-- webhook-events, all'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, next page'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events
 WHERE received_at <= :cursor_at AND (received_at < :cursor_at OR (received_at = :cursor_at AND svix_id < 'msg_b5'))
 ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, userId'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE user_id = 'user_b123' ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, type (rare)'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE event_type = 'session.created' ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, type, next page'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE event_type = 'user.deleted'
 AND received_at <= :cursor_at AND (received_at < :cursor_at OR (received_at = :cursor_at AND svix_id < 'msg_b5'))
 ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, outcome (rare)'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE outcome = 'conflict' ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, type and outcome'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE event_type = 'user.created' AND outcome = 'stale' ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, since and until'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events
 WHERE received_at >= (now() AT TIME ZONE 'UTC') - interval '15 days' AND received_at < (now() AT TIME ZONE 'UTC') - interval '14 days'
 ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- webhook-events, outcome since'
EXPLAIN (COSTS OFF) SELECT * FROM webhook_events WHERE outcome = 'duplicate'
 AND received_at >= (now() AT TIME ZONE 'UTC') - interval '15 days'
 ORDER BY received_at DESC, svix_id DESC LIMIT 51;
\echo '-- sync/status: pushes due'
EXPLAIN (COSTS OFF) SELECT count(*), min(queued_at) FROM clerk_sync WHERE next_attempt_at IS NOT NULL;
\echo '-- sync/status: failing'
EXPLAIN (COSTS OFF) SELECT count(*) FROM clerk_sync WHERE last_error IS NOT NULL;
\echo '-- sync/status: unsettled'
EXPLAIN (COSTS OFF) SELECT * FROM clerk_sync WHERE (next_attempt_at IS NOT NULL OR last_error IS NOT NULL)
 ORDER BY queued_at, user_id LIMIT 50;
