//! Self-healing: webhooks Svix gave up on (the emulator drops them) leave
//! drift that one drift audit repairs, with audit rows that say so; runs
//! resume after a restart, two replicas never audit at once, and a
//! backfill never walks beside an audit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clerk_role_sync::db::rows::DriftAuditRow;
use clerk_role_sync::db::schema::drift_audits;
use clerk_role_sync::db::{Db, DbError};
use clerk_role_sync::domain::RoleSource;
use clerk_role_sync::jobs::clerk_instance::InstanceGate;
use clerk_role_sync::jobs::drift_audit::{AuditSettings, DriftAudit, RunEnd};
use clerk_role_sync::jobs::walk_lease::WalkLease;
use clerk_role_sync::metrics::Metrics;
use clerk_role_sync::startup::{audit_settings, clerk_client};
use clerk_role_sync::with_conn;
use serde_json::json;

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, assert_counters_match_a_recount, metric, spawn_app_with, spawn_synced_app,
    test_config, wait_until,
};
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::instances::Instance;
use testkit::svix;
use testkit::test_db::TestDb;

both_backends!(
    one_audit_heals_what_lost_webhooks_left,
    an_audit_leaves_users_with_a_pending_push_to_the_push,
    an_audit_writes_and_locks_no_user_it_finds_in_sync,
    a_walk_started_over_forgets_what_it_found,
    users_missing_past_what_the_sketch_names_wait_for_reconcile,
    two_missing_users_the_sketch_cannot_tell_apart_are_still_found,
);

/// Every run, oldest first.
async fn runs(db: &Db) -> Vec<DriftAuditRow> {
    use diesel::{QueryDsl as _, SelectableHelper as _};
    use diesel_async::RunQueryDsl as _;
    let runs: Result<_, DbError> = with_conn!(db, conn => {
        Ok(drift_audits::table
            .order(drift_audits::id)
            .select(DriftAuditRow::as_select())
            .load(conn)
            .await?)
    });
    runs.expect("query drift_audits")
}

async fn finished(audit: RunEnd) -> DriftAuditRow {
    match audit {
        RunEnd::Finished(run) => run,
        RunEnd::Busy(held) => panic!("the walk lease was held: {held}"),
    }
}

/// Each user has one role on both sides (STUDENT when Clerk has none).
async fn assert_in_sync(app: &TestApp, clerk: &ClerkEmulator, ids: &[&str]) {
    for id in ids {
        let row = app.user(id).await.unwrap_or_else(|| panic!("{id} is here"));
        let clerk_role = clerk.role(id).unwrap_or_else(|| "STUDENT".into());
        assert_eq!(
            row.role.as_str(),
            clerk_role,
            "{id}: one role on both sides"
        );
        assert!(row.deleted_at.is_none(), "{id} is live");
    }
}

async fn one_audit_heals_what_lost_webhooks_left(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_promoted", None),
            ("user_demoted", Some("INSTRUCTOR")),
            ("user_leaving", Some("INSTRUCTOR")),
            ("user_profile", Some("INSTRUCTOR")),
            ("user_quiet", Some("INSTRUCTOR")),
        ],
    )
    .await;
    let before = app.stats().await;

    // Svix gives up on every message from here on.
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    clerk.add_user("user_signed_up", None);
    clerk.add_user("user_invited", Some("INSTRUCTOR"));
    clerk.edit_metadata("user_promoted", json!({ "role": "ADMIN" }));
    clerk.edit_metadata("user_demoted", json!({ "role": "STUDENT" }));
    clerk.delete_user("user_leaving");
    clerk.edit_metadata("user_profile", json!({ "plan": "pro" }));
    assert_eq!(clerk.dropped_webhooks().len(), 6);

    // Nothing arrived: the two sides disagree.
    assert!(app.user("user_signed_up").await.is_none());
    assert_eq!(
        app.user("user_promoted").await.expect("here").role.as_str(),
        "STUDENT"
    );
    assert_eq!(app.stats().await, before, "nothing moved the counts");

    let requests_before = clerk.requests().len();
    let (audit, metrics) = app.drift_audit("replica-a");
    let run = finished(audit.run_once().await.expect("the audit runs")).await;
    // Its cost: one page of the list, and two lookups of the user Clerk
    // deleted (the second confirms the 404 before the deletion is made).
    let asked: Vec<String> = clerk.requests()[requests_before..]
        .iter()
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    assert_eq!(
        asked,
        [
            "GET /v1/users",
            "GET /v1/users/user_leaving",
            "GET /v1/users/user_leaving"
        ]
    );
    assert_eq!(
        (
            run.found_missing_here,
            run.found_role_differs,
            run.found_outdated,
            run.found_missing_in_clerk,
            run.repaired,
        ),
        (2, 2, 1, 1, 6),
        "{run:?}"
    );
    // Clerk's 7 users from its list, and the one it no longer has looked up.
    assert_eq!(run.checked, 8, "{run:?}");
    assert!(run.finished_at.is_some() && run.error.is_none(), "{run:?}");

    let live = [
        "user_admin",
        "user_promoted",
        "user_demoted",
        "user_profile",
        "user_quiet",
        "user_signed_up",
        "user_invited",
    ];
    assert_in_sync(&app, &clerk, &live).await;
    let leaving = app.user("user_leaving").await.expect("kept as a tombstone");
    assert!(leaving.deleted_at.is_some(), "deleted here as in Clerk");
    assert!(
        !leaving.deletion_final,
        "undone if Clerk shows the user again"
    );
    let profile = app.user("user_profile").await.expect("here");
    let in_clerk = clerk.user("user_profile").expect("in Clerk");
    assert_eq!(
        profile.clerk_updated_at,
        in_clerk["updated_at"].as_i64(),
        "the newer profile is applied"
    );

    // Role changes are audited as the audit's, naming its run.
    let actor = format!("drift-audit/{}", run.id);
    for (id, trail) in [
        ("user_promoted", vec!["none->STUDENT", "STUDENT->ADMIN"]),
        (
            "user_demoted",
            vec!["none->INSTRUCTOR", "INSTRUCTOR->STUDENT"],
        ),
        ("user_invited", vec!["none->INSTRUCTOR"]),
        ("user_leaving", vec!["none->INSTRUCTOR", "INSTRUCTOR->none"]),
    ] {
        assert_eq!(app.audit_trail(id).await, trail, "{id}");
        let newest = &app.history(id).await[0];
        assert_eq!(newest.source, RoleSource::Reconcile, "{id}");
        assert_eq!(newest.actor.as_deref(), Some(actor.as_str()), "{id}");
    }
    assert_eq!(app.audit_trail("user_quiet").await, ["none->INSTRUCTOR"]);
    assert_counters_match_a_recount(&app.db).await;

    let page = metrics.render();
    for (kind, count) in [
        ("missing_here", 2.0),
        ("role_differs", 2.0),
        ("outdated", 1.0),
        ("missing_in_clerk", 1.0),
    ] {
        for family in ["found", "repaired"] {
            let name = format!("clerk_role_sync_drift_{family}_total{{kind=\"{kind}\"}}");
            assert_eq!(metric(&page, &name), count, "{name}");
        }
    }
    assert_eq!(
        metric(&page, "clerk_role_sync_drift_audit_users_checked_total"),
        8.0
    );
    assert_eq!(
        metric(
            &page,
            "clerk_role_sync_drift_audit_runs_total{result=\"finished\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &page,
            "clerk_role_sync_drift_audit_last_finished_timestamp_seconds"
        ) > 0.0
    );

    // A second run finds nothing left, and writes nothing.
    let trail = app.audit_trail("user_promoted").await;
    let (audit, _) = app.drift_audit("replica-a");
    let again = finished(audit.run_once().await.expect("the audit runs")).await;
    assert_eq!(again.repaired, 0, "{again:?}");
    assert_eq!(
        again.found_missing_here
            + again.found_role_differs
            + again.found_outdated
            + again.found_missing_in_clerk,
        0,
        "{again:?}"
    );
    assert_eq!(app.audit_trail("user_promoted").await, trail);
}

/// Notes the id of every row written to `users` (inserted, updated or
/// deleted) in `user_writes`, by a trigger.
async fn note_user_writes(db: &Db, backend: Backend) {
    use diesel_async::SimpleAsyncConnection as _;
    let sql = match backend {
        Backend::Postgres => {
            "CREATE TABLE user_writes (id TEXT NOT NULL);
             CREATE FUNCTION note_user_write() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO user_writes VALUES (COALESCE(NEW.id, OLD.id)); RETURN NULL; END $$;
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON users
             FOR EACH ROW EXECUTE FUNCTION note_user_write();"
        }
        Backend::Sqlite => {
            "CREATE TABLE user_writes (id TEXT NOT NULL);
             CREATE TRIGGER noted_insert AFTER INSERT ON users
             BEGIN INSERT INTO user_writes VALUES (NEW.id); END;
             CREATE TRIGGER noted_update AFTER UPDATE ON users
             BEGIN INSERT INTO user_writes VALUES (NEW.id); END;
             CREATE TRIGGER noted_delete AFTER DELETE ON users
             BEGIN INSERT INTO user_writes VALUES (OLD.id); END;"
        }
    };
    let installed: Result<(), DbError> = with_conn!(db, conn => Ok(conn.batch_execute(sql).await?));
    installed.expect("the noting trigger");
}

/// The users written since [`note_user_writes`], and on PostgreSQL each
/// row's version and lock word (`xmin`, `xmax`: a row locked `FOR UPDATE`
/// changes its `xmax`).
async fn user_writes(db: &Db, backend: Backend) -> (Vec<String>, Vec<(String, String, String)>) {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Written {
        #[diesel(sql_type = Text)]
        id: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        xmin: String,
        #[diesel(sql_type = Text)]
        xmax: String,
    }
    let read: Result<_, DbError> = with_conn!(db, conn => {
        let written: Vec<Written> =
            diesel::sql_query("SELECT DISTINCT id FROM user_writes ORDER BY id")
                .load(conn)
                .await?;
        let versions: Vec<Version> = match backend {
            Backend::Postgres => {
                diesel::sql_query(
                    "SELECT id, xmin::text AS xmin, xmax::text AS xmax FROM users ORDER BY id",
                )
                .load(conn)
                .await?
            }
            Backend::Sqlite => Vec::new(),
        };
        Ok((written, versions))
    });
    let (written, versions) = read.expect("read the writes to users");
    (
        written.into_iter().map(|row| row.id).collect(),
        versions
            .into_iter()
            .map(|row| (row.id, row.xmin, row.xmax))
            .collect(),
    )
}

/// The daily case: an audit of users in sync writes its progress, never a
/// user row (no mark per user found, no lock on PostgreSQL); and it finds
/// the users Clerk deleted among three pages' worth without a lookup of
/// any other.
async fn an_audit_writes_and_locks_no_user_it_finds_in_sync(backend: Backend) {
    const USERS: usize = 1_200;
    let (app, clerk) = spawn_synced_app(backend).await;
    // Svix gives up on every message: the first audit brings the users in.
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    for i in 0..USERS {
        clerk.add_user(
            &format!("user_{i:05}"),
            (i % 7 == 0).then_some("INSTRUCTOR"),
        );
    }
    let (audit, _) = app.drift_audit("replica-a");
    let first = finished(audit.run_once().await.expect("the audit runs")).await;
    assert_eq!(first.found_missing_here, USERS as i64, "{first:?}");
    note_user_writes(&app.db, backend).await;
    let (_, versions) = user_writes(&app.db, backend).await;

    let requests_before = clerk.requests().len();
    let (audit, _) = app.drift_audit("replica-a");
    let in_sync = finished(audit.run_once().await.expect("the audit runs")).await;
    assert_eq!(in_sync.checked, USERS as i64, "{in_sync:?}");
    assert_eq!(in_sync.repaired, 0, "{in_sync:?}");
    assert_eq!(
        user_writes(&app.db, backend).await,
        (Vec::new(), versions),
        "no user row written or locked"
    );
    assert_eq!(
        clerk.requests().len() - requests_before,
        USERS / 500 + 1,
        "the list's pages and no lookup"
    );

    let deleted = ["user_00017", "user_00617", "user_01117"];
    for id in deleted {
        clerk.delete_user(id);
    }
    let requests_before = clerk.requests().len();
    let (audit, _) = app.drift_audit("replica-a");
    let run = finished(audit.run_once().await.expect("the audit runs")).await;
    let lookups: Vec<String> = clerk.requests()[requests_before..]
        .iter()
        .filter(|request| request.path != "/v1/users")
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    let looked_up: Vec<String> = deleted
        .iter()
        .map(|id| format!("GET /v1/users/{id}"))
        .collect();
    assert_eq!(
        lookups,
        [looked_up.clone(), looked_up].concat(),
        "each looked up, then confirmed before its deletion"
    );
    assert_eq!(
        (run.found_missing_in_clerk, run.repaired),
        (3, 3),
        "{run:?}"
    );
    assert_eq!(
        user_writes(&app.db, backend).await.0,
        deleted,
        "the tombstones alone"
    );
    for id in deleted {
        let gone = app.user(id).await.expect("kept as a tombstone");
        assert!(gone.deleted_at.is_some(), "{id}");
    }
}

/// A walk that starts over (Clerk refused its cursor) forgets the users it
/// had found, stored sketch included: a user found before the restart and
/// deleted in Clerk before the walk reached it again is looked up. A walk
/// not begun reads no stored sketch.
async fn a_walk_started_over_forgets_what_it_found(backend: Backend) {
    use clerk_role_sync::app::drift_audit::{self, IdSketch, Rules, RunMode};
    use clerk_role_sync::clerk::ClerkUser;
    use clerk_role_sync::db::Queries as _;
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_stays", None), ("user_leaves", Some("INSTRUCTOR"))],
    )
    .await;
    // Svix gives up on the deletion below.
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    let as_listed = |id: &str| -> ClerkUser {
        serde_json::from_value(clerk.user(id).expect("in Clerk")).expect("a Clerk user")
    };
    let rules = Rules {
        mode: RunMode::Audit,
        allowance_ms: 2_000,
    };
    let done: Result<_, DbError> = with_conn!(app.db, conn => {
        let now = conn.clock().await?;
        let run = drift_audit::start(conn, "replica-a", now, RunMode::Audit).await?;
        let first = [as_listed("user_stays"), as_listed("user_leaves")];
        clerk.delete_user("user_leaves");
        let empty = IdSketch::default();
        let (run, found, _) = drift_audit::apply_page(conn, &run, &empty, &first, false, rules).await?;
        assert_eq!(drift_audit::listed(conn, &run).await?, Some(found.clone()));
        let run = drift_audit::restart_walk(conn, &run).await?;
        assert_eq!(conn.drift_audit_sketch(run.id).await?, None, "forgotten");
        // A process that resumes the run now starts from nothing, even if
        // a sketch were left behind.
        conn.save_drift_audit_sketch(run.id, &found.to_bytes()).await?;
        assert_eq!(drift_audit::listed(conn, &run).await?, Some(IdSketch::default()));
        let again = [as_listed("user_stays")];
        let (run, listed, _) = drift_audit::apply_page(conn, &run, &empty, &again, true, rules).await?;
        let unfound = drift_audit::unfound(conn, &listed).await?;
        drift_audit::unfound_users(conn, &run, &unfound, 50).await
    });
    let unfound: Vec<String> = done
        .expect("the walk and its restart")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(unfound, ["user_leaves"]);
}

/// Two users whose ids fall in the same three cells of the sketch never
/// peel apart; the sketch still cannot rule them out (nor almost any other
/// id in), so both are looked up and deleted, and the run does not wait.
async fn two_missing_users_the_sketch_cannot_tell_apart_are_still_found(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    let pair = ["user_gone_017431", "user_gone_021282"];
    for i in 0..100 {
        clerk.add_user(&format!("user_{i:05}"), None);
    }
    for id in pair {
        clerk.add_user(id, None);
    }
    let (audit, _) = app.drift_audit("replica-a");
    finished(audit.run_once().await.expect("the audit runs")).await;
    for id in pair {
        clerk.delete_user(id);
    }
    let run = finished(audit.run_once().await.expect("the audit runs")).await;
    assert_eq!(run.waiting, None, "{run:?}");
    assert_eq!(
        (run.found_missing_in_clerk, run.repaired),
        (2, 2),
        "{run:?}"
    );
    for id in pair {
        let row = app.user(id).await.expect("a tombstone");
        assert!(row.deleted_at.is_some(), "{id} deleted");
    }
}

/// More users missing from Clerk's list than the sketch names one by one:
/// the audit inside `serve` looks none of them up (it would look up nearly
/// every user) and waits for an operator; `reconcile --fix` looks up every
/// user that may be one, and finds them all.
async fn users_missing_past_what_the_sketch_names_wait_for_reconcile(backend: Backend) {
    use clerk_role_sync::app::backfill::Prefer;
    use clerk_role_sync::app::drift_audit::{DECODES_UP_TO, RunMode};
    const USERS: usize = 4_000;
    let (app, clerk) = spawn_synced_app(backend).await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    for i in 0..USERS {
        clerk.add_user(&format!("user_{i:05}"), None);
    }
    let (audit, _) = app.drift_audit("replica-a");
    finished(audit.run_once().await.expect("the audit runs")).await;
    let gone: Vec<String> = (0..USERS)
        .step_by(2)
        .take(DECODES_UP_TO * 3 / 2)
        .map(|i| format!("user_{i:05}"))
        .collect();
    for id in &gone {
        clerk.delete_user(id);
    }

    let requests_before = clerk.requests().len();
    let run = finished(audit.run_once().await.expect("the audit runs")).await;
    let waiting = run.waiting.as_deref().unwrap_or_default();
    let estimate = format!("about {} live users here are missing", gone.len());
    assert!(waiting.contains(&estimate), "{run:?}");
    let lookups = clerk.requests()[requests_before..]
        .iter()
        .filter(|request| request.path != "/v1/users")
        .count();
    assert_eq!(lookups, 0, "nobody looked up");
    assert!(app.user(&gone[0]).await.expect("here").deleted_at.is_none());

    let (reconcile, _) = app.drift_audit("reconcile@test");
    let fixed = reconcile
        .run_fresh(RunMode::Fix(Prefer::Clerk), USERS as i64)
        .await
        .expect("reconcile --fix");
    assert_eq!(fixed.waiting, None, "{fixed:?}");
    assert_eq!(fixed.found_missing_in_clerk, gone.len() as i64, "{fixed:?}");
    for id in &gone {
        let row = app.user(id).await.expect("a tombstone");
        assert!(row.deleted_at.is_some(), "{id} deleted");
    }
    assert_counters_match_a_recount(&app.db).await;
}

/// A role that differs while an admin's push is pending is the push's to
/// settle: the audit neither repairs it nor counts it.
async fn an_audit_leaves_users_with_a_pending_push_to_the_push(backend: Backend) {
    // No CLERK_SECRET_KEY: pushes wait, and the admin's stays pending.
    let clerk = ClerkEmulator::start().await;
    let api_url = clerk.url();
    let app = spawn_app_with(
        backend,
        &[
            ("CLERK_API_URL", api_url.as_str()),
            ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
            ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ],
    )
    .await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_waiting", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    assert_eq!(
        app.patch_role(&token, "user_waiting", "INSTRUCTOR")
            .await
            .status(),
        200
    );
    let with_key = test_config(
        &app.test_db,
        &[
            ("CLERK_API_URL", api_url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ],
    );
    let client = clerk_client(&with_key)
        .expect("a client")
        .expect("a secret key");
    let settings = AuditSettings {
        rate_per_sec: 1_000.0,
        budget_per_sec: 1_000.0,
        ..audit_settings(&with_key, Duration::from_secs(3_600), 2_000)
    };
    let audit = DriftAudit::new(
        app.db.clone(),
        client.clone(),
        "replica-a".into(),
        settings,
        Arc::new(Metrics::new()),
        InstanceGate::confirm(&app.db, &client)
            .await
            .expect("the Clerk instance is confirmed"),
    );
    let run = finished(audit.run_once().await.expect("the audit runs")).await;
    assert_eq!(run.checked, 2, "{run:?}");
    assert_eq!(run.repaired, 0, "{run:?}");
    assert_eq!(run.found_role_differs, 0, "{run:?}");
    assert_eq!(
        app.user("user_waiting").await.expect("here").role.as_str(),
        "INSTRUCTOR",
        "the admin's change stands"
    );
    assert_eq!(clerk.role("user_waiting"), None, "nothing was pushed");
}

/// Two replicas on one PostgreSQL database, each auditing every second:
/// their runs never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_audit_at_once() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    for i in 0..600 {
        clerk.add_user(&format!("user_{i:04}"), None);
    }
    // Each page takes a while, so that runs last long enough to collide.
    clerk.set_answer_delay(Duration::from_millis(150));
    let log_dir = tempfile::tempdir().expect("a log directory");
    let env = replica_env(&test_db, &clerk, "1s");
    let binary = Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let mut replicas: Vec<Instance> = ["replica-a", "replica-b"]
        .iter()
        .map(|name| Instance::new(binary, name, &env, log_dir.path()))
        .collect();
    for replica in &mut replicas {
        replica.start(&client).await;
    }
    let db = Db::connect(
        &clerk_role_sync::config::DatabaseUrl::parse(&test_db.url).expect("a URL"),
        2,
    )
    .await
    .expect("a pool");

    let deadline = Instant::now() + Duration::from_secs(60);
    let finished_runs = loop {
        let finished: Vec<DriftAuditRow> = runs(&db)
            .await
            .into_iter()
            .filter(|run| run.finished_at.is_some())
            .collect();
        if finished.len() >= 4 {
            break finished;
        }
        assert!(
            Instant::now() < deadline,
            "four runs did not finish in time: {:?}\n{}\n{}",
            runs(&db).await,
            replicas[0].log_tail(),
            replicas[1].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for pair in finished_runs.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            earlier.finished_at.expect("finished") <= later.started_at,
            "two runs overlapped: {earlier:?} and {later:?}"
        );
    }
    for run in &finished_runs {
        assert_eq!(run.checked, 600, "{run:?}");
    }
    // Both replicas wanted to: the one that found the lease held waited.
    for replica in &replicas {
        let page = client
            .get(replica.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert_eq!(
            metric(
                &page,
                "clerk_role_sync_drift_audit_runs_total{result=\"stopped\"}"
            ),
            0.0,
            "{}: no run was stopped",
            replica.name
        );
    }
}

fn replica_env(test_db: &TestDb, clerk: &ClerkEmulator, interval: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_API_URL", clerk.url().as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RATE", "200"),
        ("RECONCILE_INTERVAL", interval),
        ("RECONCILE_RATE_SHARE", "1"),
        ("DATABASE_MAX_CONNECTIONS", "4"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

both_backends!(a_replica_killed_mid_audit_resumes_where_it_stopped);

/// `kill -9` in the middle of a run: the restarted replica goes on from
/// the last page it applied, not from the start, and the run ends with
/// every user checked once.
async fn a_replica_killed_mid_audit_resumes_where_it_stopped(backend: Backend) {
    const USERS: usize = 1_600;
    let test_db = TestDb::new(backend).await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    for i in 0..USERS {
        clerk.add_user(
            &format!("user_{i:04}"),
            (i % 3 == 0).then_some("INSTRUCTOR"),
        );
    }
    clerk.set_answer_delay(Duration::from_millis(300));
    let log_dir = tempfile::tempdir().expect("a log directory");
    let env = replica_env(&test_db, &clerk, "1h");
    let binary = Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let mut replica = Instance::new(binary, "replica-a", &env, log_dir.path());
    replica.start(&client).await;
    let db = Db::connect(
        &clerk_role_sync::config::DatabaseUrl::parse(&test_db.url).expect("a URL"),
        1,
    )
    .await
    .expect("a pool");

    wait_until("the audit applied its first page", || async {
        runs(&db)
            .await
            .into_iter()
            .next()
            .is_some_and(|run| run.after_user_id.is_some())
    })
    .await;
    replica.kill();
    let stopped = runs(&db).await;
    assert_eq!(stopped.len(), 1);
    assert!(stopped[0].finished_at.is_none(), "{stopped:?}");
    let cursor = stopped[0].after_user_id.clone().expect("a cursor");
    let requests_before = clerk.requests().len();

    replica.start(&client).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let all = runs(&db).await;
        if let [run] = all.as_slice()
            && run.finished_at.is_some()
        {
            break run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {all:?}\n{}",
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.id, stopped[0].id, "the same run went on");
    assert_eq!(
        run.checked, USERS as i64,
        "every user checked once: {run:?}"
    );
    assert_eq!(run.found_missing_here, USERS as i64, "{run:?}");
    assert_eq!(run.repaired, USERS as i64, "{run:?}");
    let lists: Vec<String> = clerk.requests()[requests_before..]
        .iter()
        .filter(|request| request.path == "/v1/users")
        .map(|request| request.query.clone())
        .collect();
    assert!(
        lists
            .first()
            .is_some_and(|query| query.contains(&format!("starting_after={cursor}"))),
        "resumed after {cursor}: {lists:?}"
    );
    let missing: Result<i64, DbError> = with_conn!(db, conn => {
        use clerk_role_sync::db::schema::users;
        use diesel::QueryDsl as _;
        use diesel_async::RunQueryDsl as _;
        Ok(users::table.count().get_result(conn).await?)
    });
    assert_eq!(missing.expect("count"), USERS as i64);
    assert_counters_match_a_recount(&db).await;
}

/// A backfill refuses to walk while an audit (any holder of the walk
/// lease) does, and says who holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_does_not_run_beside_an_audit() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    clerk.add_user("user_one", None);
    let url = clerk_role_sync::config::DatabaseUrl::parse(&test_db.url).expect("a URL");
    let db = Db::connect(&url, 1).await.expect("a pool");
    db.migrate().await.expect("migrations");
    let lease = WalkLease::take(&db, "replica-a")
        .await
        .expect("the database answers")
        .expect("the lease is free");

    let api_url = clerk.url();
    let env = [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_API_URL", api_url.as_str()),
    ];
    let backfill = |env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clerk-role-sync"))
            .arg("backfill")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("the command runs")
    };
    let refused = backfill(&env);
    crate::helpers::assert_backfill_refused_by_walk(&refused, "replica-a", &clerk);

    lease.release().await;
    let done = backfill(&env);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // It gave the lease back.
    let lease = WalkLease::take(&db, "replica-a")
        .await
        .expect("the database answers");
    assert!(lease.is_ok(), "the backfill released the walk lease");
}
