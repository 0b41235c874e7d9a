//! Both directions at once: echoes of our own pushes, dashboard edits racing
//! admin changes, webhooks late and out of order, and several workers.

use std::time::Duration;

use clerk_role_sync::app::change_roles::{self, RoleUpdateError};
use clerk_role_sync::config::Config;
use clerk_role_sync::domain::{ClerkUserId, Role, RoleSource};
use clerk_role_sync::startup::Application;
use clerk_role_sync::with_conn;
use serde_json::json;

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, TestDb, outcome, spawn_synced_app_with, test_config, user_id, wait_until,
};
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::clerk_payloads::user_event;
use testkit::svix;

async fn setup(backend: Backend) -> (TestApp, ClerkEmulator, String) {
    setup_with(backend, &[]).await
}

async fn audit(app: &TestApp, token: &str, id: &str) -> Vec<String> {
    let history = app
        .get_json(token, &format!("/api/admin/users/{id}/role-history"))
        .await;
    let mut rows: Vec<String> = history["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            format!(
                "{}:{}",
                row["source"].as_str().unwrap_or("?"),
                row["newRole"].as_str().unwrap_or("?")
            )
        })
        .collect();
    rows.reverse();
    rows
}

async fn settled(app: &TestApp, clerk: &ClerkEmulator, token: &str, id: &str, role: &str) {
    wait_until(&format!("{id} is {role} on both sides"), || async {
        let user = app.api_user(token, id).await;
        user["role"] == role
            && user["sync"]["state"] == "synced"
            && clerk.role(id).as_deref() == Some(role)
    })
    .await;
}

both_backends!(
    quick_changes_with_late_reordered_echoes_end_at_the_last_intent,
    a_dashboard_edit_after_the_push_wins_in_any_arrival_order,
    a_dashboard_demotion_during_a_rate_limited_push_wins,
    a_retry_reads_clerk_first_so_a_late_webhook_cannot_lose,
    within_the_allowance_a_racing_promotion_never_undoes_a_demotion,
    a_demotion_cancels_a_change_queued_behind_a_push_in_flight,
    a_demotion_to_the_role_of_a_push_that_fails_still_cancels_a_newer_change,
    a_push_in_flight_that_lands_after_the_demotion_is_clerks_newest_state,
    beyond_the_allowance_the_later_edit_wins_even_a_promotion
);

async fn quick_changes_with_late_reordered_echoes_end_at_the_last_intent(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;

    assert_eq!(
        app.patch_role(&token, "user_ada", "ADMIN").await.status(),
        200
    );
    assert_eq!(
        app.patch_role(&token, "user_ada", "INSTRUCTOR")
            .await
            .status(),
        200
    );
    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    let pushes = clerk.metadata_patches("user_ada").len();
    assert!(
        (1..=2).contains(&pushes),
        "{pushes} pushes (coalesced or not)"
    );

    // The echoes of our own pushes arrive late, newest first, one twice.
    let held = clerk.held_webhooks();
    assert_eq!(held.len(), pushes);
    let statuses = clerk.release_all_webhooks(true).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(clerk.redeliver(&held[0].svix_id).await, 200);

    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:ADMIN",
            "admin_api:INSTRUCTOR"
        ],
        "echoes write nothing"
    );
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        pushes,
        "no ping-pong"
    );
    assert!(clerk.held_webhooks().is_empty(), "no new change in Clerk");
}

async fn a_dashboard_edit_after_the_push_wins_in_any_arrival_order(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    app.patch_role(&token, "user_ada", "ADMIN").await;
    settled(&app, &clerk, &token, "user_ada", "ADMIN").await;

    clerk.edit_metadata("user_ada", json!({"role": "INSTRUCTOR"}));
    // The edit's webhook first, our push's echo (older) after it.
    let held = clerk.held_webhooks();
    assert_eq!(held.len(), 2);
    assert_eq!(clerk.release_webhook(&held[1].svix_id).await, 200);
    assert_eq!(clerk.release_webhook(&held[0].svix_id).await, 200);

    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:ADMIN",
            "clerk_webhook:INSTRUCTOR"
        ]
    );
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        1,
        "the edit is not pushed back"
    );
}

async fn a_dashboard_demotion_during_a_rate_limited_push_wins(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.rate_limit_next(1, 4);

    app.patch_role(&token, "user_ada", "ADMIN").await;
    refused_and_recorded(&app, &clerk, &token, "user_ada").await;
    clerk.edit_metadata("user_ada", json!({"role": "STUDENT"}));
    let edit = only_held(&clerk).await;
    assert_eq!(clerk.release_webhook(&edit).await, 200);

    assert_eq!(app.message_outcome(&edit).await.as_deref(), Some("applied"));
    let user = app.api_user(&token, "user_ada").await;
    assert_eq!(user["role"], "STUDENT", "no admin access left");
    assert_eq!(
        user["sync"]["state"], "synced",
        "the stale push is cancelled: {user}"
    );
    assert_eq!(
        user["sync"]["nextAttemptAt"],
        serde_json::Value::Null,
        "and never retried"
    );
    assert_eq!(clerk.role("user_ada").as_deref(), Some("STUDENT"));
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:ADMIN",
            "clerk_webhook:STUDENT"
        ]
    );
    assert_eq!(app.stats().await.admins, 1);
}

async fn a_retry_reads_clerk_first_so_a_late_webhook_cannot_lose(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.rate_limit_next(1, 1);

    app.patch_role(&token, "user_ada", "ADMIN").await;
    refused_and_recorded(&app, &clerk, &token, "user_ada").await;
    // The demotion's webhook is late: it is still held when the retry is due.
    clerk.edit_metadata("user_ada", json!({"role": "INSTRUCTOR"}));

    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        1,
        "the stale retry was never sent"
    );
    assert!(
        clerk
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/users/user_ada")
    );
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:ADMIN",
            "clerk_webhook:INSTRUCTOR"
        ]
    );
    let late = only_held(&clerk).await;
    assert_eq!(clerk.release_webhook(&late).await, 200);
    assert_eq!(
        app.message_outcome(&late).await.as_deref(),
        Some("unchanged")
    );
    assert_eq!(audit(&app, &token, "user_ada").await.len(), 3);
}

async fn within_the_allowance_a_racing_promotion_never_undoes_a_demotion(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    make_admin(&app, &clerk, &token, "user_ada").await;
    clerk.rate_limit_next(1, 1);

    app.patch_role(&token, "user_ada", "STUDENT").await;
    refused_and_recorded(&app, &clerk, &token, "user_ada").await;
    clerk.edit_metadata("user_ada", json!({"role": "INSTRUCTOR"}));
    let edit = only_held(&clerk).await;
    assert_eq!(clerk.release_webhook(&edit).await, 200);
    assert_eq!(
        app.message_outcome(&edit).await.as_deref(),
        Some("unchanged")
    );
    assert_eq!(app.api_user(&token, "user_ada").await["role"], "STUDENT");

    settled(&app, &clerk, &token, "user_ada", "STUDENT").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        3,
        "the demotion was pushed"
    );
}

async fn a_demotion_cancels_a_change_queued_behind_a_push_in_flight(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    // The push in flight fails.
    clerk.fail_next(1, 503);
    let edit = demoted_behind_a_push_in_flight(&app, &clerk, &token, "STUDENT").await;
    assert_eq!(app.message_outcome(&edit).await.as_deref(), Some("applied"));

    unclaimed(&app, "user_ada").await;
    assert_eq!(clerk.metadata_patches("user_ada")[0].status, 503);
    settled(&app, &clerk, &token, "user_ada", "STUDENT").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        1,
        "the cancelled promotion was never sent"
    );
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:INSTRUCTOR",
            "admin_api:ADMIN",
            "clerk_webhook:STUDENT"
        ]
    );
    assert_eq!(app.stats().await.admins, 1);
}

async fn a_demotion_to_the_role_of_a_push_that_fails_still_cancels_a_newer_change(
    backend: Backend,
) {
    let (app, clerk, token) = setup(backend).await;
    clerk.fail_next(1, 503);
    let edit = demoted_behind_a_push_in_flight(&app, &clerk, &token, "INSTRUCTOR").await;
    // While the push is in flight, the edit may be its echo.
    assert_eq!(
        app.message_outcome(&edit).await.as_deref(),
        Some("unchanged")
    );

    // Clerk's 503 says the push wrote nothing: the edit is the newer intent.
    unclaimed(&app, "user_ada").await;
    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        1,
        "the cancelled promotion was never sent"
    );
    assert_eq!(
        audit(&app, &token, "user_ada").await,
        [
            "clerk_webhook:STUDENT",
            "admin_api:INSTRUCTOR",
            "admin_api:ADMIN",
            "clerk_webhook:INSTRUCTOR"
        ]
    );
    assert_eq!(app.stats().await.admins, 1);
}

async fn a_push_in_flight_that_lands_after_the_demotion_is_clerks_newest_state(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    demoted_behind_a_push_in_flight(&app, &clerk, &token, "STUDENT").await;

    // The push in flight lands after the edit: Clerk's order settles it,
    // and nothing newer is left to send.
    unclaimed(&app, "user_ada").await;
    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        1,
        "the cancelled promotion was never sent"
    );
    assert_eq!(app.stats().await.admins, 1);
}

async fn beyond_the_allowance_the_later_edit_wins_even_a_promotion(backend: Backend) {
    let (app, clerk, token) = setup_with(backend, &[("CLOCK_SKEW_ALLOWANCE_MS", "0")]).await;
    make_admin(&app, &clerk, &token, "user_ada").await;
    clerk.rate_limit_next(1, 1);

    app.patch_role(&token, "user_ada", "STUDENT").await;
    refused_and_recorded(&app, &clerk, &token, "user_ada").await;
    clerk.edit_metadata("user_ada", json!({"role": "INSTRUCTOR"}));
    let edit = only_held(&clerk).await;
    assert_eq!(clerk.release_webhook(&edit).await, 200);

    assert_eq!(app.message_outcome(&edit).await.as_deref(), Some("applied"));
    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert_eq!(
        clerk.metadata_patches("user_ada").len(),
        2,
        "the older demotion was never sent"
    );
}

/// Waits until Clerk answered the last push for `id` with 429 and the
/// service has recorded that (so the push is no longer in flight).
async fn refused_and_recorded(app: &TestApp, clerk: &ClerkEmulator, token: &str, id: &str) {
    wait_until("the push was refused, and the refusal recorded", || async {
        let refused = clerk
            .metadata_patches(id)
            .last()
            .is_some_and(|patch| patch.status == 429);
        let sync = &app.api_user(token, id).await["sync"];
        refused
            && sync["state"] == "failing"
            && sync["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("429"))
    })
    .await;
}

/// `user_ada` made an INSTRUCTOR, a push Clerk holds for 1.5 s; meanwhile
/// made an ADMIN (queued behind the push in flight), then demoted to `role`
/// in the dashboard, within the allowance: the lower role wins over the
/// promotion, which is not in flight. Returns the edit's message id.
async fn demoted_behind_a_push_in_flight(
    app: &TestApp,
    clerk: &ClerkEmulator,
    token: &str,
    role: &str,
) -> String {
    clerk.set_delay(Duration::from_millis(1_500));
    app.patch_role(token, "user_ada", "INSTRUCTOR").await;
    wait_until("a push is in flight", || async {
        clerk
            .metadata_patches("user_ada")
            .last()
            .is_some_and(|patch| patch.answered.is_none())
    })
    .await;
    clerk.set_delay(Duration::ZERO);
    app.patch_role(token, "user_ada", "ADMIN").await;
    clerk.edit_metadata("user_ada", json!({ "role": role }));
    let edit = only_held(clerk).await;
    assert_eq!(clerk.release_webhook(&edit).await, 200);
    edit
}

/// Waits until no worker holds a claim on `id`'s push row.
async fn unclaimed(app: &TestApp, id: &str) {
    use clerk_role_sync::db::Queries as _;
    wait_until("the push row is unclaimed", || async {
        let row: Result<_, clerk_role_sync::db::DbError> =
            with_conn!(app.db, conn => Ok(conn.find_outbox_row(&user_id(id)).await?));
        row.expect("query")
            .is_some_and(|row| row.claimed_by.is_none())
    })
    .await;
}

/// The one webhook Clerk holds, once our push's answer is in (so its echo,
/// if any, would be held too).
async fn only_held(clerk: &ClerkEmulator) -> String {
    let held = clerk.held_webhooks();
    assert_eq!(held.len(), 1, "{held:?}");
    held[0].svix_id.clone()
}

/// Makes `id` an admin on both sides, with every webhook delivered.
async fn make_admin(app: &TestApp, clerk: &ClerkEmulator, token: &str, id: &str) {
    app.patch_role(token, id, "ADMIN").await;
    wait_until("the promotion landed", || async {
        clerk.role(id).as_deref() == Some("ADMIN")
    })
    .await;
    clerk.release_all_webhooks(false).await;
    settled(app, clerk, token, id, "ADMIN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_key_a_dashboard_demotion_still_wins() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = crate::helpers::spawn_app_with(
            backend,
            &[("CLERK_JWT_KEY", clerk_emulator::primary_public_pem())],
        )
        .await;
        let clerk = ClerkEmulator::start().await;
        let now = chrono::Utc::now().timestamp_millis();
        for (id, role) in [("user_admin", Some("ADMIN")), ("user_u", None)] {
            let created = user_event("user.created", id, now - 120_000, role);
            assert_eq!(app.post_webhook(&created).await.status(), 200);
        }
        let token = clerk.mint_token("user_admin");
        assert_eq!(
            app.patch_role(&token, "user_u", "ADMIN").await.status(),
            200
        );

        // Only the newest Clerk state may cancel: an older one is stale.
        let older = user_event("user.updated", "user_u", now - 130_000, None);
        assert_eq!(outcome(app.post_webhook(&older).await).await, "stale");
        assert_eq!(app.user("user_u").await.expect("user").role, Role::Admin);

        // The push never leaves; the operator's demotion in Clerk still wins.
        let demotion = user_event(
            "user.updated",
            "user_u",
            chrono::Utc::now().timestamp_millis(),
            Some("STUDENT"),
        );
        assert_eq!(
            outcome(app.post_webhook(&demotion).await).await,
            "applied",
            "{backend:?}"
        );
        let user = app.api_user(&token, "user_u").await;
        assert_eq!(user["role"], "STUDENT");
        assert_eq!(user["sync"]["state"], "synced", "{user}");
        assert_eq!(app.stats().await.admins, 1);
    }
}

async fn setup_with(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, ClerkEmulator, String) {
    let (app, clerk) = spawn_synced_app_with(backend, extra).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Held,
    );
    let token = clerk.mint_token("user_admin");
    (app, clerk, token)
}

async fn seed_pending(config: &Config, ids: &[String]) {
    let db = clerk_role_sync::db::Db::connect(&config.database, 4)
        .await
        .expect("db");
    db.migrate().await.expect("migrations");
    for id in ids {
        let id = ClerkUserId::parse(id.as_str()).expect("valid");
        let done: Result<_, RoleUpdateError> = with_conn!(db, conn => {
            change_roles::set_role(conn, &id, Role::Instructor, RoleSource::Cli, Some("cli"), true).await
        });
        done.expect("seeded with a queued push");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgres_push_every_row_once() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let clerk = ClerkEmulator::start().await;
    let ids: Vec<String> = (0..200).map(|i| format!("user_w{i:03}")).collect();
    for id in &ids {
        clerk.add_user(id, None);
    }
    let url = clerk.url();
    let config = test_config(
        &test_db,
        &[
            ("CLERK_API_URL", url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
            ("CLERK_PUSH_RATE", "1000"),
        ],
    );
    seed_pending(&config, &ids).await;

    let mut handles = Vec::new();
    for replica in 0..2 {
        let mut config = config.clone();
        config.replica_id = format!("replica-{replica}");
        let app = Application::build(config).await.expect("a replica starts");
        handles.push(app.handle());
        tokio::spawn(app.run_until_stopped());
    }

    wait_until("every role is in Clerk", || async {
        ids.iter()
            .all(|id| clerk.role(id).as_deref() == Some("INSTRUCTOR"))
    })
    .await;
    for id in &ids {
        let pushes = clerk.metadata_patches(id);
        assert_eq!(pushes.len(), 1, "{id} pushed {} times", pushes.len());
    }
    for handle in handles {
        handle.stop(true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_push_in_flight_finish() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    let clerk = ClerkEmulator::start().await;
    clerk.add_user("user_slow", None);
    clerk.set_delay(Duration::from_millis(800));
    let url = clerk.url();
    let config = test_config(
        &test_db,
        &[
            ("CLERK_API_URL", url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ],
    );

    let app = Application::build(config.clone()).await.expect("starts");
    let port = app.port();
    let handle = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    // The HTTP side talks to Clerk first (the JWKS, for a token) and leaves
    // a connection to it behind; the push must not ride on that one.
    let token = clerk.mint_token("user_nobody");
    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/admin/stats"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    assert!(refused.status().is_client_error());
    assert_eq!(
        clerk.jwks_requests(),
        1,
        "the JWKS came through the HTTP side"
    );
    seed_pending(&config, &["user_slow".to_owned()]).await;
    wait_until("the push is in flight", || async {
        clerk
            .metadata_patches("user_slow")
            .iter()
            .any(|p| p.status == 0)
    })
    .await;
    handle.stop(true).await;
    running.await.expect("joined").expect("served");

    assert_eq!(clerk.role("user_slow").as_deref(), Some("INSTRUCTOR"));
    let db = clerk_role_sync::db::Db::connect(&config.database, 1)
        .await
        .expect("db");
    let row: Result<_, clerk_role_sync::db::DbError> = with_conn!(db, conn => {
        use clerk_role_sync::db::Queries as _;
        Ok(conn.find_outbox_row(&user_id("user_slow")).await?)
    });
    let row = row.expect("query").expect("a sync row");
    assert!(
        !row.is_pending(),
        "recorded as landed before the worker stopped: {row:?}"
    );
    assert_eq!(
        row.claimed_by, None,
        "no claim outlives a graceful shutdown"
    );
}

/// Sets the claim on `id`'s queued push, as a replica that died would
/// have left it.
async fn leave_claim(app: &TestApp, id: &str, owner: &str, lease: chrono::TimeDelta) {
    use clerk_role_sync::db::schema::clerk_sync;
    use diesel::{ExpressionMethods as _, QueryDsl as _};
    use diesel_async::RunQueryDsl as _;
    let until = chrono::Utc::now().naive_utc() + lease;
    let claimed: Result<usize, clerk_role_sync::db::DbError> = with_conn!(app.db, conn => {
        Ok(diesel::update(clerk_sync::table.find(id))
            .set((
                clerk_sync::claimed_by.eq(Some(owner)),
                clerk_sync::claimed_until.eq(Some(until)),
                clerk_sync::attempts.eq(1),
            ))
            .execute(conn)
            .await?)
    });
    assert_eq!(claimed.expect("claim left"), 1);
}

/// `name value` of one sample of `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Stops the service and queues an admin's change of `user_ada` to
/// INSTRUCTOR while it is down, as another replica would.
async fn queue_while_stopped(app: &mut TestApp, clerk: &ClerkEmulator) {
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );
    app.stop().await;
    let change = change_roles::RoleChange {
        user_id: user_id("user_ada"),
        role: Role::Instructor,
    };
    let admin = user_id("user_admin");
    let changed =
        with_conn!(app.db, conn => change_roles::change_roles(conn, &[change], &admin).await);
    changed.expect("changed");
}

both_backends!(
    a_restarted_replica_takes_its_old_claims_back_at_once,
    another_replicas_claim_is_taken_over_when_its_lease_expires,
    a_newer_change_waits_only_for_the_push_in_flight
);

async fn a_restarted_replica_takes_its_old_claims_back_at_once(backend: Backend) {
    let (mut app, clerk, token) = setup_with(backend, &[("REPLICA_ID", "replica-a")]).await;
    queue_while_stopped(&mut app, &clerk).await;
    // Claimed by the replica just before it died (`kill -9`): an hour of
    // lease left.
    leave_claim(&app, "user_ada", "replica-a", chrono::TimeDelta::hours(1)).await;

    let restarted = std::time::Instant::now();
    app.start().await;

    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "taken back after {:?}",
        restarted.elapsed()
    );
    assert_eq!(clerk.metadata_patches("user_ada").len(), 1);
    assert_eq!(
        metric(&app, "clerk_role_sync_push_claims_taken_back_total").await,
        1.0
    );
    assert_eq!(
        metric(&app, "clerk_role_sync_push_leases_expired_total").await,
        0.0
    );
}

async fn another_replicas_claim_is_taken_over_when_its_lease_expires(backend: Backend) {
    let (mut app, clerk, token) = setup_with(backend, &[("REPLICA_ID", "replica-a")]).await;
    queue_while_stopped(&mut app, &clerk).await;
    // replica-b died holding the claim with 2 s of lease left.
    let lease = chrono::TimeDelta::seconds(2);
    let expires = std::time::Instant::now() + Duration::from_secs(2);
    leave_claim(&app, "user_ada", "replica-b", lease).await;

    app.start().await;

    settled(&app, &clerk, &token, "user_ada", "INSTRUCTOR").await;
    let push = &clerk.metadata_patches("user_ada")[0];
    assert!(
        push.at + Duration::from_millis(100) >= expires,
        "a live claim of another replica was taken"
    );
    assert!(
        push.at < expires + Duration::from_secs(3),
        "taken over late"
    );
    assert_eq!(
        metric(&app, "clerk_role_sync_push_leases_expired_total").await,
        1.0
    );
}

async fn a_newer_change_waits_only_for_the_push_in_flight(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.set_delay(Duration::from_millis(600));

    app.patch_role(&token, "user_ada", "INSTRUCTOR").await;
    wait_until("the first push is in flight", || async {
        clerk
            .metadata_patches("user_ada")
            .iter()
            .any(|p| p.status == 0)
    })
    .await;
    app.patch_role(&token, "user_ada", "ADMIN").await;
    wait_until("the newer role reaches Clerk", || async {
        clerk.role("user_ada").as_deref() == Some("ADMIN")
    })
    .await;

    let pushes = clerk.metadata_patches("user_ada");
    assert_eq!(pushes.len(), 2);
    let first_answered = pushes[0].answered.expect("answered");
    let waited = pushes[1].at.saturating_duration_since(first_answered);
    assert!(
        waited < Duration::from_millis(500),
        "the newer push waited {waited:?} after the one in flight"
    );
    clerk.set_delay(Duration::ZERO);
    clerk.release_all_webhooks(false).await;
    settled(&app, &clerk, &token, "user_ada", "ADMIN").await;
}

both_backends!(two_roles_for_one_instant_are_settled_by_asking_clerk);

async fn two_roles_for_one_instant_are_settled_by_asking_clerk(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    let in_clerk = clerk.add_user("user_c", Some("INSTRUCTOR"));
    let at = in_clerk["updated_at"].as_i64().expect("updated_at");
    // We were told, wrongly, that at that instant the user had no role…
    let wrong = testkit::clerk_payloads::user_event("user.created", "user_c", at, None);
    assert_eq!(
        crate::helpers::outcome(app.post_webhook(&wrong).await).await,
        "applied"
    );
    assert_eq!(app.api_user(&token, "user_c").await["role"], "STUDENT");

    // …and now that it was an INSTRUCTOR: one of the two is wrong.
    let right =
        testkit::clerk_payloads::user_event("user.updated", "user_c", at, Some("INSTRUCTOR"));
    assert_eq!(
        crate::helpers::outcome(app.post_webhook(&right).await).await,
        "conflict"
    );

    assert_eq!(
        app.api_user(&token, "user_c").await["role"],
        "INSTRUCTOR",
        "Clerk's answer settles it"
    );
    assert!(
        clerk
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/users/user_c")
    );
}
