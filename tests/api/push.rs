//! DB → Clerk: the push worker against a failing, slow and rate-limiting Clerk.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, spawn_app_with, spawn_synced_app, spawn_synced_app_with, wait_until,
};
use testkit::clerk_emulator::{self, ClerkEmulator};

async fn setup(backend: crate::helpers::Backend) -> (TestApp, ClerkEmulator, String) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    (app, clerk, token)
}

async fn sync_state(app: &TestApp, token: &str, id: &str) -> Value {
    app.api_user(token, id).await["sync"].clone()
}

both_backends!(
    server_errors_are_retried_until_the_push_lands,
    a_failing_push_is_visible_while_it_retries,
    rate_limits_are_honoured,
    refusals_stop_retrying_and_show_as_failing,
    a_slow_clerk_does_not_slow_the_admin,
    other_metadata_survives_the_push,
    the_push_rate_is_capped,
    without_a_secret_key_pushes_wait_visibly
);

async fn server_errors_are_retried_until_the_push_lands(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.fail_next(3, 500);

    assert_eq!(
        app.patch_role(&token, "user_ada", "INSTRUCTOR")
            .await
            .status(),
        200
    );

    wait_until("the push lands", || async {
        sync_state(&app, &token, "user_ada").await["state"] == "synced"
    })
    .await;
    let sync = sync_state(&app, &token, "user_ada").await;
    assert_eq!(sync["attempts"], 4, "{sync}");
    assert_eq!(sync["lastError"], Value::Null);
    assert_eq!(clerk.role("user_ada").as_deref(), Some("INSTRUCTOR"));
    // Each retry reads the user from Clerk first (a failed read is a
    // failed attempt), then sends.
    let calls: Vec<_> = clerk
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/users/user_ada"))
        .collect();
    let seen: Vec<(&str, u16)> = calls
        .iter()
        .map(|r| (r.method.as_str(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("PATCH", 500),
            ("GET", 500),
            ("GET", 500),
            ("GET", 200),
            ("PATCH", 200)
        ]
    );
    // Backoff: each retry waits longer than the one before (base 50 ms, jitter ≥ ½).
    let gaps: Vec<Duration> = calls
        .windows(2)
        .take(3)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(gaps[0] >= Duration::from_millis(25), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(100), "{gaps:?}");
}

async fn a_failing_push_is_visible_while_it_retries(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.fail_next(1_000, 503);

    app.patch_role(&token, "user_ada", "ADMIN").await;

    wait_until("the failure shows", || async {
        let sync = sync_state(&app, &token, "user_ada").await;
        sync["state"] == "failing" && sync["attempts"].as_i64() >= Some(2)
    })
    .await;
    let sync = sync_state(&app, &token, "user_ada").await;
    let last_error = sync["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("503"), "{sync}");
    // What Clerk's support asks for: the long message and the trace id.
    assert!(
        last_error.contains("The Clerk emulator was told to answer 503."),
        "{sync}"
    );
    assert!(last_error.contains("clerk_trace_id "), "{sync}");
    assert!(sync["nextAttemptAt"].is_string(), "still retrying: {sync}");
    assert_eq!(
        app.api_user(&token, "user_ada").await["role"],
        "ADMIN",
        "the intent holds"
    );
    assert_eq!(clerk.role("user_ada"), None);
}

async fn rate_limits_are_honoured(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.rate_limit_next(1, 2);

    app.patch_role(&token, "user_ada", "INSTRUCTOR").await;

    wait_until("the push lands", || async {
        clerk.role("user_ada").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    let patches = clerk.metadata_patches("user_ada");
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].status, 429);
    let waited = patches[1].at - patches[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, not after Retry-After: 2"
    );
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains(r#"clerk_role_sync_push_attempts_total{result="rate_limited"} 1"#),
        "{metrics}"
    );
}

async fn refusals_stop_retrying_and_show_as_failing(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    // A user we know, but Clerk does not (deleted there while its webhook was lost).
    let ghost = testkit::clerk_payloads::user_event("user.created", "user_ghost", 1, None);
    assert_eq!(app.post_webhook(&ghost).await.status(), 200);

    app.patch_role(&token, "user_ghost", "INSTRUCTOR").await;

    wait_until("the refusal shows", || async {
        sync_state(&app, &token, "user_ghost").await["state"] == "failing"
    })
    .await;
    let sync = sync_state(&app, &token, "user_ghost").await;
    assert_eq!(sync["nextAttemptAt"], Value::Null, "no retry: {sync}");
    assert_eq!(sync["attempts"], 1);
    assert!(
        sync["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{sync}"
    );
    assert_eq!(clerk.metadata_patches("user_ghost").len(), 1);
}

async fn a_slow_clerk_does_not_slow_the_admin(backend: Backend) {
    let (app, clerk, token) = setup(backend).await;
    clerk.set_delay(Duration::from_secs(5));

    let response = app.patch_role(&token, "user_ada", "INSTRUCTOR").await;

    // The answer came while Clerk was still working on the push.
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["role"], "INSTRUCTOR");
    assert_eq!(user["sync"]["state"], "pending");
    assert_eq!(clerk.role("user_ada"), None, "Clerk has not answered yet");
    clerk.set_delay(Duration::ZERO);
    wait_until("the slow push lands", || async {
        clerk.role("user_ada").as_deref() == Some("INSTRUCTOR")
    })
    .await;
}

async fn other_metadata_survives_the_push(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    clerk.add_user_with_metadata("user_rich", json!({"plan": "pro", "tags": {"cohort": 7}}));
    clerk.wait_for_deliveries().await;
    let token = clerk.mint_token("user_admin");

    app.patch_role(&token, "user_rich", "INSTRUCTOR").await;

    wait_until("the push lands", || async {
        clerk.role("user_rich").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    let user = clerk.user("user_rich").expect("in Clerk");
    assert_eq!(
        user["public_metadata"],
        json!({"plan": "pro", "tags": {"cohort": 7}, "role": "INSTRUCTOR"})
    );
    let patch = &clerk.metadata_patches("user_rich")[0];
    assert_eq!(
        patch.authorization.as_deref(),
        Some("Bearer sk_test_emulator")
    );
    assert_eq!(patch.api_version.as_deref(), Some("2026-05-12"));
}

async fn the_push_rate_is_capped(backend: Backend) {
    let (app, clerk) = spawn_synced_app_with(backend, &[("CLERK_PUSH_RATE", "20")]).await;
    let ids: Vec<String> = (0..10).map(|i| format!("user_r{i}")).collect();
    let mut users: Vec<(&str, Option<&str>)> = ids.iter().map(|id| (id.as_str(), None)).collect();
    users.push(("user_admin", Some("ADMIN")));
    seed(&app, &clerk, &users).await;
    let token = clerk.mint_token("user_admin");
    let changes: Vec<Value> = ids
        .iter()
        .map(|id| json!({"userId": id, "role": "INSTRUCTOR"}))
        .collect();

    let response = app.post_role_changes(&token, Value::from(changes)).await;
    assert_eq!(response.status(), 200);

    wait_until("all pushed", || async {
        ids.iter()
            .all(|id| clerk.role(id).as_deref() == Some("INSTRUCTOR"))
    })
    .await;
    let mut times: Vec<_> = ids
        .iter()
        .map(|id| clerk.metadata_patches(id)[0].at)
        .collect();
    times.sort();
    let span = times[9] - times[0];
    // 10 pushes at 20/s: at least 9 intervals of 50 ms.
    assert!(
        span >= Duration::from_millis(440),
        "10 pushes within {span:?}"
    );
}

async fn without_a_secret_key_pushes_wait_visibly(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("CLERK_JWT_KEY", clerk_emulator::primary_public_pem())],
    )
    .await;
    let clerk = ClerkEmulator::start().await;
    for (id, role) in [("user_admin", Some("ADMIN")), ("user_ada", None)] {
        let body = testkit::clerk_payloads::user_event("user.created", id, 1, role);
        assert_eq!(app.post_webhook(&body).await.status(), 200);
    }
    let token = clerk.mint_token("user_admin");

    let user: Value = app
        .patch_role(&token, "user_ada", "INSTRUCTOR")
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(user["sync"]["state"], "pending");
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["clerkPush"], "waiting_for_secret_key");
}

both_backends!(
    a_retry_after_beyond_the_clock_neither_kills_nor_freezes_the_worker,
    every_accepted_clerk_timeout_works,
    a_rate_limit_slows_every_push_not_just_one
);

async fn a_retry_after_beyond_the_clock_neither_kills_nor_freezes_the_worker(backend: Backend) {
    let (app, clerk) = spawn_synced_app_with(backend, &[("CLERK_PUSH_RETRY_MAX_SECS", "1")]).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_ada", None),
            ("user_bob", None),
        ],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    // u64::MAX seconds: once, adding it to a clock panicked the worker.
    clerk.rate_limit_next_with(1, "18446744073709551615");

    app.patch_role(&token, "user_ada", "INSTRUCTOR").await;

    wait_until("the push lands after the clamped wait", || async {
        clerk.role("user_ada").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    let patches = clerk.metadata_patches("user_ada");
    assert_eq!(
        patches.iter().map(|p| p.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = patches[1].at - patches[0].at;
    assert!(
        waited < Duration::from_secs(5),
        "waited {waited:?}, not CLERK_PUSH_RETRY_MAX_SECS"
    );
    // A hundred years (and an HTTP date as far out): the other pushes go on.
    clerk.rate_limit_next_with(1, "3153600000");
    app.patch_role(&token, "user_bob", "INSTRUCTOR").await;
    clerk.rate_limit_next_with(1, "Fri, 31 Dec 9999 23:59:59 GMT");
    app.patch_role(&token, "user_ada", "ADMIN").await;
    wait_until("both land", || async {
        clerk.role("user_bob").as_deref() == Some("INSTRUCTOR")
            && clerk.role("user_ada").as_deref() == Some("ADMIN")
    })
    .await;
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["clerkPush"], "running");
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("clerk_role_sync_push_worker_restarts_total 0"),
        "the worker never died"
    );
}

async fn every_accepted_clerk_timeout_works(backend: Backend) {
    // 115 s and more once left no room in the claim's lease: no push was
    // ever sent and the worker spun.
    for timeout in ["115", "300"] {
        let (app, clerk) = spawn_synced_app_with(backend, &[("CLERK_TIMEOUT_SECS", timeout)]).await;
        seed(
            &app,
            &clerk,
            &[("user_admin", Some("ADMIN")), ("user_ada", None)],
        )
        .await;
        let token = clerk.mint_token("user_admin");

        app.patch_role(&token, "user_ada", "INSTRUCTOR").await;

        wait_until("the push lands", || async {
            sync_state(&app, &token, "user_ada").await["state"] == "synced"
        })
        .await;
        assert_eq!(
            clerk.metadata_patches("user_ada").len(),
            1,
            "CLERK_TIMEOUT_SECS={timeout}"
        );
        assert_eq!(
            sync_state(&app, &token, "user_ada").await["attempts"],
            1,
            "no spinning"
        );
    }
}

async fn a_rate_limit_slows_every_push_not_just_one(backend: Backend) {
    // Slots half a second apart: the 429 is surely back before the next slot.
    let (app, clerk) = spawn_synced_app_with(backend, &[("CLERK_PUSH_RATE", "2")]).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_a", None),
            ("user_b", None),
        ],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    clerk.rate_limit_next(1, 2);

    let response = app
        .post_role_changes(
            &token,
            json!([
                {"userId": "user_a", "role": "INSTRUCTOR"},
                {"userId": "user_b", "role": "INSTRUCTOR"},
            ]),
        )
        .await;
    assert_eq!(response.status(), 200);

    wait_until("both pushed", || async {
        clerk.role("user_a").as_deref() == Some("INSTRUCTOR")
            && clerk.role("user_b").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    let mut patches: Vec<_> = clerk.metadata_patches("user_a");
    patches.extend(clerk.metadata_patches("user_b"));
    patches.sort_by_key(|p| p.at);
    assert_eq!(patches.len(), 3, "one 429 and two successes");
    assert_eq!(patches[0].status, 429);
    for later in &patches[1..] {
        let waited = later.at - patches[0].at;
        assert!(
            waited >= Duration::from_secs(2),
            "a push went out {waited:?} after the 429"
        );
    }
}
