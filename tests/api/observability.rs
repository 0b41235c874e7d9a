//! What operators see: `/metrics` moving with webhooks and pushes, and a
//! request id on every answer.

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_synced_app, wait_until};
use testkit::clerk_payloads::user_event;

/// The value of one sample line (`name{labels} value`), 0 when absent.
async fn sample(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

both_backends!(
    metrics_follow_webhooks_pushes_and_requests,
    every_answer_carries_a_request_id
);

async fn metrics_follow_webhooks_pushes_and_requests(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    let applied = r#"clerk_role_sync_webhooks_total{outcome="applied",type="user.created"}"#;
    let duplicate = r#"clerk_role_sync_webhooks_total{outcome="duplicate",type="user.created"}"#;
    let forged = r#"clerk_role_sync_webhook_refusals_total{reason="bad_signature"}"#;
    let landed = r#"clerk_role_sync_push_attempts_total{result="landed"}"#;
    assert_eq!(sample(&app, applied).await, 0.0);

    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    assert_eq!(sample(&app, applied).await, 2.0);

    let event = user_event("user.created", "user_x", 1, None);
    app.post_webhook_as("msg_twice", &event).await;
    app.post_webhook_as("msg_twice", &event).await;
    assert_eq!(sample(&app, duplicate).await, 1.0);
    let body = serde_json::to_vec(&event).expect("json");
    app.post_raw_webhook(
        &[
            ("svix-id", "msg_forged".into()),
            ("svix-timestamp", chrono::Utc::now().timestamp().to_string()),
            (
                "svix-signature",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            ),
        ],
        body,
    )
    .await;
    assert_eq!(sample(&app, forged).await, 1.0);

    let token = clerk.mint_token("user_admin");
    clerk.fail_next(1, 503);
    app.patch_role(&token, "user_ada", "INSTRUCTOR").await;
    wait_until("the push landed", || async {
        sample(&app, landed).await == 1.0
    })
    .await;
    assert_eq!(
        sample(
            &app,
            r#"clerk_role_sync_push_attempts_total{result="retry"}"#
        )
        .await,
        1.0
    );
    assert_eq!(sample(&app, "clerk_role_sync_outbox_pending").await, 0.0);

    // Two seeded users, one webhook sent twice, and the echo of the push,
    // which Clerk sends on its own time after answering the push.
    let webhook_requests = r#"clerk_role_sync_http_request_duration_seconds_count{method="POST",route="/api/webhooks/clerk",status="200"}"#;
    wait_until("five webhooks were answered 200", || async {
        sample(&app, webhook_requests).await == 5.0
    })
    .await;
}

async fn every_answer_carries_a_request_id(backend: Backend) {
    let (app, _clerk) = spawn_synced_app(backend).await;

    let generated = app.get("/healthz").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32);

    let given = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(given.status(), 404);
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let unsafe_id = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .expect("sent");
    assert_ne!(unsafe_id.headers()["x-request-id"], "a b\"c");
}
