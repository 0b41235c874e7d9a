//! What operators see of synchronisation: `GET /api/admin/webhook-events`
//! (the service's side of each Svix message) and `GET
//! /api/admin/sync/status` (pushes, the last webhook, the drift audit).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, problem, spawn_synced_app, wait_until};
use testkit::clerk_emulator::ClerkEmulator;
use testkit::clerk_payloads::{deleted_event, user_event};

both_backends!(
    webhook_events_list_what_each_message_did,
    webhook_events_page_with_a_cursor_and_filter,
    webhook_event_queries_that_make_no_sense_are_refused,
    sync_status_shows_failing_pushes_the_last_webhook_and_audits,
);

async fn events(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_json(token, &format!("/api/admin/webhook-events{query}"))
        .await
}

fn svix_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|event| event["svixId"].as_str().expect("svixId").to_owned())
        .collect()
}

/// An app with an admin (and Clerk, which checks its token), and a story of messages about `user_story`:
/// created, promoted, a stale replay, a duplicate, another type, deleted.
async fn app_with_story(backend: Backend) -> (TestApp, ClerkEmulator, String) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let token = clerk.mint_token("user_admin");
    for (svix_id, body) in [
        (
            "msg_1_created",
            user_event("user.created", "user_story", 1_000, Some("STUDENT")),
        ),
        (
            "msg_2_promoted",
            user_event("user.updated", "user_story", 3_000, Some("INSTRUCTOR")),
        ),
        (
            "msg_3_stale",
            user_event("user.updated", "user_story", 2_000, Some("ADMIN")),
        ),
        (
            "msg_1_created",
            user_event("user.created", "user_story", 1_000, Some("STUDENT")),
        ),
        (
            "msg_4_session",
            json!({ "type": "session.created", "object": "event", "data": { "id": "sess_1" } }),
        ),
        ("msg_5_deleted", deleted_event("user_story")),
    ] {
        assert_eq!(app.post_webhook_as(svix_id, &body).await.status(), 200);
    }
    (app, clerk, token)
}

async fn webhook_events_list_what_each_message_did(backend: Backend) {
    let (app, _clerk, token) = app_with_story(backend).await;
    let page = events(&app, &token, "?userId=user_story").await;
    assert_eq!(
        svix_ids(&page),
        [
            "msg_5_deleted",
            "msg_3_stale",
            "msg_2_promoted",
            "msg_1_created"
        ],
        "newest first, each message once: {page}"
    );
    let data = page["data"].as_array().expect("data");
    let outcomes: Vec<&str> = data
        .iter()
        .map(|e| e["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["deleted", "stale", "applied", "applied"]);
    let promoted = &data[2];
    assert_eq!(promoted["type"], "user.updated");
    assert_eq!(promoted["userId"], "user_story");
    assert_eq!(promoted["clerkUpdatedAt"], "1970-01-01T00:00:03Z");
    assert!(
        promoted["receivedAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert_eq!(
        data[0]["clerkUpdatedAt"],
        Value::Null,
        "a deletion carries no state"
    );
    // The record, never the body.
    let fields: BTreeSet<&str> = promoted
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "svixId",
            "type",
            "userId",
            "clerkUpdatedAt",
            "receivedAt",
            "outcome"
        ])
    );
    assert_eq!(page["nextCursor"], Value::Null);

    // Filters: by outcome, by type (a message about no user we keep).
    let stale = events(&app, &token, "?outcome=stale").await;
    assert_eq!(svix_ids(&stale), ["msg_3_stale"]);
    let session = events(&app, &token, "?type=session.created").await;
    assert_eq!(svix_ids(&session), ["msg_4_session"]);
    assert_eq!(session["data"][0]["userId"], Value::Null);
    assert_eq!(session["data"][0]["outcome"], "ignored");

    // A time range: received at or after `since`, before `until`.
    let promoted_at = promoted["receivedAt"].as_str().expect("a time").to_owned();
    let stale_at = data[1]["receivedAt"].as_str().expect("a time").to_owned();
    let range = events(
        &app,
        &token,
        &format!(
            "?userId=user_story&since={}&until={}",
            urlencode(&promoted_at),
            urlencode(&stale_at)
        ),
    )
    .await;
    assert_eq!(svix_ids(&range), ["msg_2_promoted"], "{range}");
}

async fn webhook_events_page_with_a_cursor_and_filter(backend: Backend) {
    let (app, _clerk, token) = app_with_story(backend).await;
    let everything = svix_ids(&events(&app, &token, "?limit=200").await);
    assert!(everything.len() >= 6, "{everything:?}");
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = events(&app, &token, &format!("?limit=2&cursor={cursor}")).await;
        let ids = svix_ids(&page);
        assert!(ids.len() <= 2);
        walked.extend(ids);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(walked, everything, "pages add up to the list, in order");

    // A cursor goes on with the filters it is given.
    let first = events(&app, &token, "?userId=user_story&limit=1").await;
    let next = first["nextCursor"].as_str().expect("more pages");
    let second = events(
        &app,
        &token,
        &format!("?userId=user_story&limit=3&cursor={next}"),
    )
    .await;
    assert_eq!(
        svix_ids(&second),
        ["msg_3_stale", "msg_2_promoted", "msg_1_created"]
    );
    assert_eq!(second["nextCursor"], Value::Null);
}

async fn webhook_event_queries_that_make_no_sense_are_refused(backend: Backend) {
    let (app, _clerk, token) = app_with_story(backend).await;
    let before = svix_ids(&events(&app, &token, "?limit=200").await);
    let get = |query: &'static str| {
        let request = app.authed(
            Method::GET,
            &format!("/api/admin/webhook-events{query}"),
            &token,
        );
        async move { request.send().await.expect("sent") }
    };
    for query in [
        "?userId=not%20an%20id",
        "?outcome=exploded",
        "?limit=0",
        "?limit=201",
        "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "?type=%00",
        "?since=1900-01-01T00:00:00Z",
    ] {
        problem(get(query).await, 422).await;
    }
    let unknown = problem(get("?outcome=exploded").await, 422).await;
    assert_eq!(unknown["type"], "/problems/invalid-parameter");
    let detail = unknown["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("applied") && detail.contains("stale"),
        "{unknown}"
    );
    for query in [
        "?since=yesterday",
        "?limit=ten",
        "?cursor=%%%",
        // base64 of "w:abc:msg_1" (not a time), "w:1:" (no id), "h:5"
        // (another list's cursor).
        "?cursor=dzphYmM6bXNnXzE",
        "?cursor=dzoxOg",
        "?cursor=aDo1",
    ] {
        problem(get(query).await, 400).await;
    }
    let anonymous = app
        .client
        .get(app.url("/api/admin/webhook-events"))
        .send()
        .await
        .expect("sent");
    problem(anonymous, 401).await;
    assert_eq!(
        svix_ids(&events(&app, &token, "?limit=200").await),
        before,
        "refusals change nothing"
    );
}

async fn sync_status_shows_failing_pushes_the_last_webhook_and_audits(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_refused", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["inSync"], true, "{status}");
    assert_eq!(status["outbox"]["pending"], 0);
    assert_eq!(status["unsettledPushes"], json!([]));
    // Two sign-ups came at once: either is the last.
    let last_user = status["lastWebhook"]["userId"].clone();
    assert!(
        last_user == "user_refused" || last_user == "user_admin",
        "{status}"
    );
    assert_eq!(status["lastWebhook"]["type"], "user.created");
    assert_eq!(
        status["driftAudit"]["enabled"], false,
        "RECONCILE_INTERVAL=0"
    );
    assert_eq!(status["driftAudit"]["last"], Value::Null);

    // Clerk refuses the push for good.
    clerk.fail_next(1, 422);
    assert_eq!(
        app.patch_role(&token, "user_refused", "INSTRUCTOR")
            .await
            .status(),
        200
    );
    wait_until("the refused push shows as failing", || async {
        app.get_json(&token, "/api/admin/sync/status").await["outbox"]["failing"] == 1
    })
    .await;
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["inSync"], false, "{status}");
    let push = &status["unsettledPushes"][0];
    assert_eq!(push["userId"], "user_refused", "{status}");
    assert_eq!(push["desiredRole"], "INSTRUCTOR");
    assert_eq!(push["state"], "failing");
    assert!(
        push["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("422")),
        "{push}"
    );

    // An audit leaves the failing push alone and shows in the status.
    let (audit, _) = app.drift_audit("replica-a");
    audit.run_once().await.expect("the audit runs");
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    let last = &status["driftAudit"]["last"];
    assert_eq!(last["owner"], "replica-a", "{status}");
    assert_eq!(last["checked"], 2, "{status}");
    assert_eq!(
        last["found"]["roleDiffers"], 0,
        "the push's to settle: {status}"
    );
    assert_eq!(last["repaired"], 0);
    assert!(last["finishedAt"].is_string(), "{status}");
    assert_eq!(status["driftAudit"]["running"], Value::Null);
    assert_eq!(status["driftAudit"]["walking"], Value::Null);
    assert_eq!(
        app.user("user_refused").await.expect("here").role.as_str(),
        "INSTRUCTOR"
    );

    let anonymous = app
        .client
        .get(app.url("/api/admin/sync/status"))
        .send()
        .await
        .expect("sent");
    problem(anonymous, 401).await;
    // A signed-in user who is not an admin sees neither view.
    let instructor = clerk.mint_token("user_refused");
    for path in ["/api/admin/sync/status", "/api/admin/webhook-events"] {
        let response = app
            .authed(Method::GET, path, &instructor)
            .send()
            .await
            .expect("sent");
        problem(response, 403).await;
    }
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}
