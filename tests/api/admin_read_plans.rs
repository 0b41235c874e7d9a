//! The operators' reads have an index for each of their filters: the plans
//! of `GET /api/admin/webhook-events` (each filter, and a later page) and
//! of `GET /api/admin/sync/status` read neither `webhook_events` nor
//! `clerk_sync` whole, and need no sort. The statements below have the
//! shapes the service sends. On PostgreSQL sequential scans and sorts are
//! priced out (`enable_seqscan`, `enable_sort` off), so that on the test's
//! empty tables the plan shows what the planner could use: with no index to
//! serve a filter in the page's order, it still scans or sorts.

use clerk_role_sync::db::DbError;
use clerk_role_sync::with_conn;
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};

use crate::both_backends;
use crate::helpers::{Backend, spawn_app};

/// Each read, its statement (`{t}` for a timestamp literal), and the index
/// that serves it (or `|` between those that may).
const READS: [(&str, &str, &str); 11] = [
    (
        "all events",
        "SELECT * FROM webhook_events ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_received_idx",
    ),
    (
        "a later page",
        "SELECT * FROM webhook_events WHERE received_at <= {t} \
         AND (received_at < {t} OR (received_at = {t} AND svix_id < 'msg_1')) \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_received_idx",
    ),
    (
        "userId",
        "SELECT * FROM webhook_events WHERE user_id = 'user_1' \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_user_idx",
    ),
    (
        "type",
        "SELECT * FROM webhook_events WHERE event_type = 'user.deleted' \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_type_idx",
    ),
    (
        "outcome",
        "SELECT * FROM webhook_events WHERE outcome = 'conflict' \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_outcome_idx",
    ),
    (
        "type and outcome",
        "SELECT * FROM webhook_events WHERE event_type = 'user.created' AND outcome = 'stale' \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_type_outcome_idx",
    ),
    (
        "outcome, a later page",
        "SELECT * FROM webhook_events WHERE outcome = 'conflict' AND received_at <= {t} \
         AND (received_at < {t} OR (received_at = {t} AND svix_id < 'msg_1')) \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_outcome_idx",
    ),
    (
        "since and until",
        "SELECT * FROM webhook_events WHERE received_at >= {t} AND received_at < {t} \
         ORDER BY received_at DESC, svix_id DESC LIMIT 51",
        "webhook_events_received_idx",
    ),
    (
        "sync/status: due pushes",
        "SELECT count(*), min(queued_at) FROM clerk_sync WHERE next_attempt_at IS NOT NULL",
        "clerk_sync_due_idx",
    ),
    (
        "sync/status: failing pushes",
        "SELECT count(*) FROM clerk_sync WHERE last_error IS NOT NULL",
        // Either holds only the unsettled rows (SQLite takes the second).
        "clerk_sync_failing_idx|clerk_sync_unsettled_idx",
    ),
    (
        "sync/status: unsettled pushes",
        "SELECT * FROM clerk_sync WHERE (next_attempt_at IS NOT NULL OR last_error IS NOT NULL) \
         ORDER BY queued_at, user_id LIMIT 50",
        "clerk_sync_unsettled_idx",
    ),
];

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    line: String,
}

both_backends!(admin_reads_use_an_index_for_every_filter);

async fn admin_reads_use_an_index_for_every_filter(backend: Backend) {
    let app = spawn_app(backend).await;
    let timestamp = match backend {
        Backend::Postgres => "TIMESTAMP '2026-12-01 12:00:00'",
        Backend::Sqlite => "'2026-12-01 12:00:00'",
    };

    for (read, statement, index) in READS {
        let statement = statement.replace("{t}", timestamp);
        let plan = plan(&app.db, backend, &statement)
            .await
            .unwrap_or_else(|e| panic!("{read}: {e}"));

        let whole_table = match backend {
            Backend::Postgres => plan.contains("Seq Scan"),
            Backend::Sqlite => plan
                .lines()
                .any(|line| line.starts_with("SCAN ") && !line.contains(" USING ")),
        };
        assert!(!whole_table, "{read} scans a table:\n{plan}");
        let sorted = match backend {
            Backend::Postgres => plan.contains("Sort"),
            Backend::Sqlite => plan.contains("TEMP B-TREE"),
        };
        assert!(!sorted, "{read} sorts:\n{plan}");
        assert!(
            index.split('|').any(|index| plan.contains(index)),
            "{read} does not use {index}:\n{plan}"
        );
    }
}

/// The plan of `statement`, one node per line.
async fn plan(
    db: &clerk_role_sync::db::Db,
    backend: Backend,
    statement: &str,
) -> Result<String, DbError> {
    let lines: Vec<PlanLine> = match backend {
        Backend::Postgres => with_conn!(db, conn => {
            conn.batch_execute(
                "SET enable_seqscan = off; SET enable_sort = off; \
                 CREATE OR REPLACE FUNCTION pg_temp.plan_of(statement text) RETURNS SETOF text \
                 LANGUAGE plpgsql AS $$ DECLARE line text; BEGIN \
                 FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP RETURN NEXT line; END LOOP; \
                 END $$;",
            )
            .await?;
            let lines = diesel::sql_query("SELECT pg_temp.plan_of($1) AS line")
                .bind::<Text, _>(statement)
                .load(conn)
                .await;
            conn.batch_execute("RESET enable_seqscan; RESET enable_sort").await?;
            Ok::<_, DbError>(lines?)
        })?,
        Backend::Sqlite => with_conn!(db, conn => {
            Ok::<_, DbError>(
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {statement}"))
                    .load::<SqlitePlanRow>(conn)
                    .await?
                    .into_iter()
                    .map(|row| PlanLine { line: row.detail })
                    .collect(),
            )
        })?,
    };
    Ok(lines
        .into_iter()
        .map(|line| line.line)
        .collect::<Vec<_>>()
        .join("\n"))
}

#[derive(QueryableByName)]
struct SqlitePlanRow {
    #[diesel(sql_type = Text)]
    detail: String,
}
