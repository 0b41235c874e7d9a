//! Existing Clerk users: backfill by policy, resumed after an interruption,
//! through a 429; reconcile finding and fixing planted drift.

use std::collections::BTreeMap;

use clerk_role_sync::app::backfill::{BackfillOptions, Prefer};
use clerk_role_sync::app::change_roles;
use clerk_role_sync::app::drift_audit::RunMode;
use clerk_role_sync::clerk::ClerkClient;
use clerk_role_sync::config::Config;
use clerk_role_sync::db::rows::{DriftAuditRow, Progress, UserFilter};
use clerk_role_sync::db::{Db, DbError, Queries as _};
use clerk_role_sync::domain::{ClerkUserId, Role, RoleSource};
use clerk_role_sync::jobs::{ClerkBudget, backfill};
use clerk_role_sync::with_conn;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, test_config, user_id};
use testkit::clerk_emulator::{self, ClerkEmulator};
use testkit::clerk_payloads::{deleted_event, user_event};

const USERS: usize = 2_000;

fn id(i: usize) -> String {
    format!("user_{i:05}")
}

/// The role Clerk holds for user `i` (None: no role in the metadata).
fn clerk_role(i: usize) -> Option<&'static str> {
    match i % 10 {
        0 | 5 => Some("INSTRUCTOR"),
        1 => Some("teacher"),
        2 if i % 50 == 2 => Some(" admin "),
        _ => None,
    }
}

/// Users 0..20 are already here: as STUDENT (so the INSTRUCTORs among them
/// differ), and user 3 is deleted here.
const ALREADY_HERE: usize = 20;
const DELETED_HERE: usize = 3;

async fn clerk_with_users() -> ClerkEmulator {
    let clerk = ClerkEmulator::start().await;
    for i in 0..USERS {
        clerk.add_user(&id(i), clerk_role(i));
    }
    clerk
}

async fn app_with_history(backend: Backend) -> TestApp {
    let app = spawn_app(backend).await;
    for i in 0..ALREADY_HERE {
        let created = user_event("user.created", &id(i), 1, Some("STUDENT"));
        assert_eq!(app.post_webhook(&created).await.status(), 200);
    }
    assert_eq!(
        app.post_webhook(&deleted_event(&id(DELETED_HERE)))
            .await
            .status(),
        200
    );
    app
}

fn client(clerk: &ClerkEmulator, app: &TestApp) -> ClerkClient {
    let url = clerk.url();
    let config: Config = test_config(
        &app.test_db,
        &[
            ("CLERK_API_URL", url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ],
    );
    ClerkClient::new(config.clerk.connection().expect("a secret key")).expect("a client")
}

/// Everything a backfill may touch, to compare two databases.
async fn snapshot(db: &Db) -> BTreeMap<String, (Role, bool, Option<String>, usize, bool)> {
    let rows: Result<_, DbError> = with_conn!(db, conn => {
        let mut all = BTreeMap::new();
        for i in 0..USERS {
            let user_id = user_id(&id(i));
            if let Some(user) = conn.find_user(&user_id).await? {
                let audit = conn.role_history(&user_id, None, i64::MAX).await?.len();
                let pending = conn.find_outbox_row(&user_id).await?.is_some_and(|s| s.is_pending());
                all.insert(user_id.into(), (user.role, user.deleted_at.is_some(), user.email, audit, pending));
            }
        }
        Ok(all)
    });
    rows.expect("snapshot")
}

async fn backfill(app: &TestApp, clerk: &ClerkEmulator, options: BackfillOptions) -> Progress {
    backfill::run(
        &app.db,
        &client(clerk, app),
        options,
        &budget(&app.db),
        false,
    )
    .await
    .expect("backfill")
}

both_backends!(
    a_user_list_that_does_not_advance_stops_the_backfill,
    created_at_is_when_the_user_signed_up_in_clerk,
    backfill_takes_clerk_roles_in_and_respects_tombstones,
    backfill_can_prefer_our_roles_and_write_defaults,
    a_dry_run_writes_nothing_and_counts_the_same,
    an_interrupted_backfill_resumes_to_the_same_end,
    a_rate_limit_midway_is_waited_out,
    reconcile_reports_exactly_the_planted_drift_and_fixes_it
);

async fn a_user_list_that_does_not_advance_stops_the_backfill(backend: Backend) {
    let clerk = ClerkEmulator::start().await;
    for i in 0..501 {
        clerk.add_user(&format!("user_p{i:03}"), None);
    }
    clerk.set_ignore_cursor(true);
    let app = spawn_app_with(backend, &[]).await;

    let stopped = backfill::run(
        &app.db,
        &client(&clerk, &app),
        BackfillOptions::default(),
        &budget(&app.db),
        false,
    )
    .await;

    let error = stopped
        .expect_err("a repeating page is an error, not a loop")
        .to_string();
    assert!(error.contains("did not advance"), "{error}");
    let lists = clerk
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/users")
        .count();
    assert_eq!(lists, 2, "stopped at the first repeat");
}

async fn created_at_is_when_the_user_signed_up_in_clerk(backend: Backend) {
    let clerk = ClerkEmulator::start().await;
    let ids: Vec<String> = (0..4).map(|i| format!("user_s{i}")).collect();
    for id in &ids {
        clerk.add_user(id, None);
    }
    let app = spawn_app_with(backend, &[]).await;
    // We heard of them in the opposite order (the CLI made them here first).
    for id in ids.iter().rev() {
        let user = ClerkUserId::parse(id.as_str()).expect("an id");
        let made = with_conn!(app.db, conn => {
            change_roles::set_role(conn, &user, Role::Student, RoleSource::Cli, Some("cli"), true).await
        });
        made.expect("created");
    }

    backfill(&app, &clerk, BackfillOptions::default()).await;

    for id in &ids {
        let signed_up = clerk.user(id).expect("in Clerk")["created_at"]
            .as_i64()
            .expect("ms");
        let here = app
            .user(id)
            .await
            .expect("here")
            .created_at
            .and_utc()
            .timestamp_millis();
        assert_eq!(here, signed_up, "{id}");
    }
    let page: Result<_, DbError> = with_conn!(app.db, conn => {
        Ok(conn.list_users(&UserFilter { limit: 10, ..UserFilter::default() }).await?)
    });
    let newest_first: Vec<String> = page
        .expect("a page")
        .into_iter()
        .map(|(user, _)| user.id.into())
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(newest_first, expected, "newest first means sign-up order");
}

async fn backfill_takes_clerk_roles_in_and_respects_tombstones(backend: Backend) {
    let clerk = clerk_with_users().await;
    let app = app_with_history(backend).await;

    let done = backfill(&app, &clerk, BackfillOptions::default()).await;

    assert_eq!(done.seen, USERS as i64);
    assert_eq!(done.pages, 4);
    assert_eq!(done.created, (USERS - ALREADY_HERE) as i64);
    assert_eq!(done.updated, (ALREADY_HERE - 1) as i64);
    assert_eq!(done.skipped, 1, "the user deleted here");
    // Among users 0..20 still here, the INSTRUCTORs in Clerk (0, 5, 10, 15)
    // and the ADMIN (2) changed.
    assert_eq!(done.role_changes, 5);
    assert_eq!(done.unknown_roles, (USERS / 10) as i64);
    assert_eq!(done.defaults_queued, 0);
    let stats = app.stats().await;
    assert_eq!(stats.total(), (USERS - 1) as i64);
    assert_eq!(stats.admins, (USERS / 50) as i64);
    assert_eq!(stats.instructors, (USERS / 5) as i64);
    let snapshot = snapshot(&app.db).await;
    assert_eq!(snapshot[&id(0)].0, Role::Instructor);
    assert_eq!(
        snapshot[&id(0)].3,
        2,
        "creation by webhook + one backfill change"
    );
    assert_eq!(
        snapshot[&id(1)].0,
        Role::Student,
        "an unknown value keeps the current role"
    );
    assert!(snapshot[&id(DELETED_HERE)].1, "still deleted");
    assert_eq!(
        snapshot[&id(1999)].2.as_deref(),
        Some("user_01999@example.com")
    );
    let history = app.history(&id(0)).await;
    assert_eq!(history[0].source, RoleSource::Backfill);
    assert!(
        clerk.metadata_patches(&id(0)).is_empty(),
        "Clerk is only read"
    );
}

async fn backfill_can_prefer_our_roles_and_write_defaults(backend: Backend) {
    let clerk = clerk_with_users().await;
    let app = app_with_history(backend).await;

    let done = backfill(
        &app,
        &clerk,
        BackfillOptions {
            prefer: Prefer::Db,
            write_defaults: true,
            ..BackfillOptions::default()
        },
    )
    .await;

    assert_eq!(done.role_changes, 0, "our roles are kept");
    assert_eq!(done.pushes_queued, 5, "and queued for Clerk");
    // Users without a role in Clerk, less the one deleted here.
    let without_role = (0..USERS).filter(|i| clerk_role(*i).is_none()).count() - 1;
    assert_eq!(done.defaults_queued, without_role as i64);
    let snapshot = snapshot(&app.db).await;
    assert_eq!(snapshot[&id(0)].0, Role::Student);
    assert!(snapshot[&id(0)].4, "a push of STUDENT is pending");
    assert!(snapshot[&id(2)].4, "a default is pending");
    assert!(
        !snapshot[&id(10 * 7 + 1)].4,
        "an unknown value is not overwritten"
    );
}

async fn a_dry_run_writes_nothing_and_counts_the_same(backend: Backend) {
    let clerk = clerk_with_users().await;
    let app = app_with_history(backend).await;
    let before = snapshot(&app.db).await;

    let dry = backfill(
        &app,
        &clerk,
        BackfillOptions {
            dry_run: true,
            ..BackfillOptions::default()
        },
    )
    .await;

    assert_eq!(snapshot(&app.db).await, before);
    let real = backfill(&app, &clerk, BackfillOptions::default()).await;
    assert_eq!(
        (
            dry.created,
            dry.updated,
            dry.role_changes,
            dry.unknown_roles,
            dry.skipped
        ),
        (
            real.created,
            real.updated,
            real.role_changes,
            real.unknown_roles,
            real.skipped
        )
    );
}

async fn an_interrupted_backfill_resumes_to_the_same_end(backend: Backend) {
    let clerk = clerk_with_users().await;
    let whole = app_with_history(backend).await;
    backfill(&whole, &clerk, BackfillOptions::default()).await;
    let interrupted = app_with_history(backend).await;
    let client = client(&clerk, &interrupted);

    // Stop it (as a crash would) once two pages are stored.
    let budget = budget(&interrupted.db);
    let run = backfill::run(
        &interrupted.db,
        &client,
        BackfillOptions::default(),
        &budget,
        false,
    );
    let two_pages = async {
        crate::helpers::wait_until("two pages are stored", || async {
            let progress: Result<_, DbError> =
                with_conn!(interrupted.db, conn => Ok(conn.load_backfill_progress().await?));
            progress.expect("progress").is_some_and(|p| p.pages >= 2)
        })
        .await;
    };
    tokio::select! {
        finished = run => panic!("the backfill finished before it was interrupted: {finished:?}"),
        () = two_pages => {}
    }
    let resumed = backfill(&interrupted, &clerk, BackfillOptions::default()).await;

    assert_eq!(
        resumed.seen, USERS as i64,
        "totals carry over the interruption"
    );
    assert_eq!(snapshot(&interrupted.db).await, snapshot(&whole.db).await);
    assert_eq!(interrupted.stats().await, whole.stats().await);
}

async fn a_rate_limit_midway_is_waited_out(backend: Backend) {
    let clerk = clerk_with_users().await;
    let app = app_with_history(backend).await;
    let client = client(&clerk, &app);

    let budget = budget(&app.db);
    let run = backfill::run(&app.db, &client, BackfillOptions::default(), &budget, false);
    let limit_after_first_page = async {
        crate::helpers::wait_until("a page is stored", || async {
            clerk
                .requests()
                .iter()
                .filter(|r| r.path == "/v1/users")
                .count()
                >= 1
        })
        .await;
        clerk.rate_limit_next(1, 1);
    };
    let (done, ()) = tokio::join!(run, limit_after_first_page);

    assert_eq!(done.expect("survived the 429").seen, USERS as i64);
    let statuses: Vec<u16> = clerk
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/users")
        .map(|r| r.status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let last_429 = clerk
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at)
        .next_back()
        .expect("a 429");
    let next = clerk
        .requests()
        .into_iter()
        .find(|r| r.at > last_429)
        .expect("a retry");
    assert!(
        next.at - last_429 >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
}

async fn reconcile_reports_exactly_the_planted_drift_and_fixes_it(backend: Backend) {
    let clerk = ClerkEmulator::start().await;
    for i in 0..30 {
        clerk.add_user(&id(i), clerk_role(i));
    }
    let url = clerk.url();
    let with_key = [
        ("CLERK_API_URL", url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
    ];
    let app = spawn_app_with(backend, &with_key).await;
    let client = client(&clerk, &app);
    backfill::run(
        &app.db,
        &client,
        BackfillOptions::default(),
        &budget(&app.db),
        false,
    )
    .await
    .expect("backfill");
    let (reconcile, _) = app.drift_audit("reconcile@test");
    let clean = reconcile
        .run_fresh(RunMode::Report, 10)
        .await
        .expect("reconcile");
    assert_eq!((clean.checked, found(&clean)), (30, 0), "{clean:?}");

    // Drift that lost webhooks leave behind.
    clerk.edit_metadata(&id(4), serde_json::json!({"role": "ADMIN"}));
    clerk.add_user("user_newcomer", None);
    let only_here = user_event("user.created", "user_only_here", 1, None);
    assert_eq!(app.post_webhook(&only_here).await.status(), 200);

    let report = reconcile
        .run_fresh(RunMode::Report, 10)
        .await
        .expect("reconcile");
    let kinds = |run: &DriftAuditRow| {
        (
            run.found_role_differs,
            run.found_missing_here,
            run.found_missing_in_clerk,
        )
    };
    assert_eq!(kinds(&report), (1, 1, 1), "{report:?}");
    assert_eq!(report.repaired, 0, "a report repairs nothing");
    assert_eq!(app.user(&id(4)).await.expect("user").role, Role::Student);
    assert!(app.user("user_newcomer").await.is_none());

    let fixed = reconcile
        .run_fresh(RunMode::Fix(Prefer::Clerk), 10)
        .await
        .expect("reconcile --fix");
    assert_eq!((kinds(&fixed), fixed.repaired), ((1, 1, 1), 3), "{fixed:?}");
    let after = reconcile
        .run_fresh(RunMode::Report, 10)
        .await
        .expect("reconcile");
    assert_eq!(found(&after), 0, "{after:?}");
    assert_eq!(app.user(&id(4)).await.expect("user").role, Role::Admin);
    assert!(
        app.user("user_only_here")
            .await
            .expect("tombstone")
            .deleted_at
            .is_some()
    );
    assert_eq!(
        app.audit_trail("user_only_here").await,
        ["none->STUDENT", "STUDENT->none"],
        "the deletion is audited"
    );
}

fn found(run: &DriftAuditRow) -> i64 {
    run.found_missing_here
        + run.found_role_differs
        + run.found_outdated
        + run.found_missing_in_clerk
}

/// The Clerk budget of a backfill from the command line, at 200 requests
/// per second.
fn budget(db: &Db) -> ClerkBudget {
    ClerkBudget::for_walks(db.clone(), 200.0, 200.0)
}
