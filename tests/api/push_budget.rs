//! The Clerk budget is the deployment's: three `serve` processes on one
//! PostgreSQL database, each given the same `CLERK_PUSH_RATE`, send no more
//! than that many requests per second together, so a Clerk that allows a
//! little more never answers 429, even while one replica is killed and
//! started again. (Clerk's limit here counts 2 s windows, so that a send
//! delayed by a busy machine and the next one on time do not look like a
//! burst; three replicas pacing themselves each would send three times the
//! budget.)
//!
//! Within one replica: a push holding a slot learns of a pause another
//! process made and waits it out, and a push waiting for its slot when the
//! service stops is handed back unsent.

use std::time::{Duration, Instant};

use clerk_role_sync::jobs::ClerkBudget;
use serde_json::json;
use testkit::clerk_emulator::ClerkEmulator;
use testkit::instances::start_replicas;

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDb, metric, spawn_synced_app, wait_until};
use crate::replicas::replica_env;

both_backends!(
    a_pause_another_process_makes_holds_a_push_that_has_its_slot,
    a_push_held_by_a_pause_is_not_in_flight_and_a_newer_edit_cancels_it,
    a_push_waiting_for_its_slot_at_stop_is_handed_back_unsent,
);

/// The budget every replica is given, and what Clerk allows per window.
const BUDGET: usize = 20;
const CLERK_LIMIT: usize = 50;
const CLERK_WINDOW: Duration = Duration::from_secs(2);
const USERS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_change_across_replicas_keeps_to_one_budget_and_draws_no_429() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let clerk = ClerkEmulator::start().await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    let budget = BUDGET.to_string();
    let env = replica_env(&test_db, &clerk, &[("CLERK_PUSH_RATE", budget.as_str())]);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let mut replicas = start_replicas(binary, 3, &env, log_dir.path(), &client, &clerk).await;
    clerk.add_user("user_admin", Some("ADMIN"));
    let users: Vec<String> = (0..USERS).map(|i| format!("user_b{i:03}")).collect();
    for user in &users {
        clerk.add_user(user, None);
    }
    clerk.wait_for_deliveries().await;

    clerk.enforce_rate_limit(CLERK_LIMIT, CLERK_WINDOW);
    let first_request = clerk.requests().len();
    let changes: Vec<_> = users
        .iter()
        .map(|user| json!({ "userId": user, "role": "INSTRUCTOR" }))
        .collect();
    let answer = client
        .post(replicas[2].url("/api/admin/users/roles"))
        .bearer_auth(clerk.mint_token("user_admin"))
        .json(&json!({ "changes": changes }))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    let answered = Instant::now();

    // A replica dies a third of the way in, with pushes in its hands, and
    // comes back a little later.
    wait_until("a third of the roles landed", || async {
        let landed = users
            .iter()
            .filter(|user| clerk.role(user).as_deref() == Some("INSTRUCTOR"))
            .count();
        landed >= USERS / 3
    })
    .await;
    replicas[0].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[0].start(&client).await;
    wait_until("every role landed", || async {
        users
            .iter()
            .all(|user| clerk.role(user).as_deref() == Some("INSTRUCTOR"))
    })
    .await;
    let took = answered.elapsed();

    let requests = &clerk.requests()[first_request..];
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 429).collect();
    assert!(refused.is_empty(), "{} answers 429", refused.len());
    // The deployment's pace, all replicas together: the budget's.
    let to_users: Vec<Instant> = requests
        .iter()
        .filter(|r| r.path.starts_with("/v1/users"))
        .map(|r| r.at)
        .collect();
    let (first, last) = (to_users[0], to_users[to_users.len() - 1]);
    let pace = (to_users.len() - 1) as f64 / (last - first).as_secs_f64();
    assert!(
        pace <= BUDGET as f64 * 1.1,
        "{pace:.1} requests per second for a budget of {BUDGET}"
    );
    // The budget's pace, with room for the restart and a loaded machine.
    let at_budget = Duration::from_secs_f64(USERS as f64 / BUDGET as f64);
    assert!(
        took < at_budget * 3,
        "took {took:?}; the budget allows {at_budget:?}"
    );
    for replica in &mut replicas {
        replica.stop().await;
    }
}

/// Who holds user `id`'s push, if anyone.
async fn claimed_by(app: &TestApp, id: &str) -> Option<String> {
    use clerk_role_sync::db::{DbError, Queries as _};
    use clerk_role_sync::with_conn;
    let row: Result<_, DbError> = with_conn!(app.db, conn => {
        Ok(conn.find_outbox_row(&crate::helpers::user_id(id)).await?)
    });
    row.expect("read the outbox").and_then(|row| row.claimed_by)
}

/// An admin's change of `user_held` to INSTRUCTOR whose push is claimed,
/// its slot two seconds ahead: other processes hold the budget until then.
async fn claimed_behind_other_slots(backend: Backend) -> (TestApp, ClerkEmulator, String) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_held", None)],
    )
    .await;
    // Other processes hold the next two seconds of the budget: the push's
    // slot comes after them.
    let others = ClerkBudget::for_pushes(app.db.clone(), 1.0);
    others.take().await;
    others.take().await;
    let token = clerk.mint_token("user_admin");
    let answer = app.patch_role(&token, "user_held", "INSTRUCTOR").await;
    assert_eq!(answer.status(), 200);
    wait_until("the push is claimed", || async {
        claimed_by(&app, "user_held").await.is_some()
    })
    .await;
    (app, clerk, token)
}

/// A push whose slot was taken before another process (a walk, another
/// replica) drew a 429 and paused the budget: it learns of the pause (from
/// the note before sending, or the slot) and goes out after it.
async fn a_pause_another_process_makes_holds_a_push_that_has_its_slot(backend: Backend) {
    const PAUSE: Duration = Duration::from_secs(3);
    let (app, clerk, _token) = claimed_behind_other_slots(backend).await;
    let paused_at = Instant::now();
    ClerkBudget::for_walks(app.db.clone(), 1.0, 1.0)
        .pause(PAUSE)
        .await;
    wait_until("the role landed in Clerk", || async {
        clerk.role("user_held").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    let sent = clerk.metadata_patches("user_held");
    assert_eq!(sent.len(), 1, "sent once");
    assert!(
        sent[0].at >= paused_at + PAUSE,
        "sent {:?} after the pause began, within its {PAUSE:?}",
        sent[0].at - paused_at
    );
}

/// A push claimed while its slot was ahead, then held by a pause, has not
/// been sent: it is not in flight, so a dashboard edit made meanwhile is
/// the newer intent and cancels it. Clerk never receives the stale role.
async fn a_push_held_by_a_pause_is_not_in_flight_and_a_newer_edit_cancels_it(backend: Backend) {
    let (app, clerk, token) = claimed_behind_other_slots(backend).await;
    ClerkBudget::for_walks(app.db.clone(), 1.0, 1.0)
        .pause(Duration::from_secs(4))
        .await;
    // Made after the admin's change, while the push waits: the newer intent
    // (within the clock-skew allowance of the commit, the lower role wins).
    clerk.edit_metadata("user_held", json!({"role": "STUDENT"}));
    clerk.wait_for_deliveries().await;
    wait_until("the edit took the role and cancelled the push", || async {
        app.api_user(&token, "user_held").await["role"] == "STUDENT"
    })
    .await;
    let user = app.api_user(&token, "user_held").await;
    assert_eq!(user["sync"]["state"], "synced", "{user}");
    // Past the pause, the held push finds itself cancelled when it would
    // note the send, and sends nothing.
    assert_eq!(claimed_by(&app, "user_held").await, None);
    wait_until("the worker found the push cancelled", || async {
        let page = app.get("/metrics").await.text().await.expect("metrics");
        metric(
            &page,
            r#"clerk_role_sync_push_attempts_total{result="cancelled"}"#,
        ) >= 1.0
    })
    .await;
    assert!(clerk.metadata_patches("user_held").is_empty());
    assert_eq!(clerk.role("user_held").as_deref(), Some("STUDENT"));
}

/// A push claimed, waiting for a slot a minute away (other processes hold
/// the budget until then), when the service stops: the stop does not wait
/// for the slot, and the push goes back to the other replicas unsent.
async fn a_push_waiting_for_its_slot_at_stop_is_handed_back_unsent(backend: Backend) {
    let (mut app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_waiting", None)],
    )
    .await;
    ClerkBudget::for_pushes(app.db.clone(), 1.0 / 60.0)
        .take()
        .await;
    let token = clerk.mint_token("user_admin");
    let answer = app.patch_role(&token, "user_waiting", "INSTRUCTOR").await;
    assert_eq!(answer.status(), 200);
    wait_until("the push is claimed", || async {
        claimed_by(&app, "user_waiting").await.is_some()
    })
    .await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "the stop waited {:?}, as for the slot",
        stopping.elapsed()
    );
    assert_eq!(claimed_by(&app, "user_waiting").await, None, "handed back");
    assert!(
        clerk.metadata_patches("user_waiting").is_empty(),
        "never sent"
    );
    assert_eq!(
        app.user("user_waiting").await.expect("here").role.as_str(),
        "INSTRUCTOR",
        "the admin's change stands, its push pending"
    );
}
