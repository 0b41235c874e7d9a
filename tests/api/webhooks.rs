//! Clerk → DB through HTTP: verification, ordering, exactly-once, refusals.

use clerk_role_sync::app::change_roles::{self, RoleUpdateError};
use clerk_role_sync::domain::{ClerkUserId, Role, RoleSource};
use clerk_role_sync::with_conn;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, outcome, problem, spawn_app, spawn_app_with};
use testkit::clerk_payloads::{deleted_event, fixture_bodies, user_event};
use testkit::svix::{self, OTHER_SECRET, TEST_SECRET};

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    let stats = app.stats().await;
    (stats.students, stats.instructors, stats.admins)
}

/// Headers for `body` signed now with `secret`, under `id`.
fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("svix-id", id.to_owned()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", svix::sign(secret, id, timestamp, body)),
    ]
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializable")
}

both_backends!(
    a_user_lifecycle_is_applied_in_order_and_exactly_once,
    nul_characters_in_a_profile_are_dropped_not_fatal,
    a_deletion_that_overtakes_the_creation_still_wins,
    unknown_roles_keep_the_current_role_and_are_recorded,
    other_events_are_acknowledged_and_recorded,
    every_fixture_shape_is_accepted,
    concurrent_copies_of_one_message_apply_once,
    concurrent_messages_for_one_new_user_all_land,
    a_pending_push_holds_the_admins_intent,
    a_database_failure_is_503_and_the_message_can_be_retried
);

async fn a_user_lifecycle_is_applied_in_order_and_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = "user_2lifecycle";

    // Created without a role: a STUDENT.
    assert_eq!(
        outcome(
            app.post_webhook(&user_event("user.created", id, 1_000, None))
                .await
        )
        .await,
        "applied"
    );
    let user = app.user(id).await.expect("created");
    assert_eq!(user.role, Role::Student);
    assert_eq!(user.email.as_deref(), Some("user_2lifecycle@example.com"));
    assert_eq!(user.first_name.as_deref(), Some("Anakin"));
    assert_eq!(app.audit_trail(id).await, ["none->STUDENT"]);
    assert_eq!(counts(&app).await, (1, 0, 0));

    // Promoted in the dashboard (with surrounding space and lower case).
    let promoted = user_event("user.updated", id, 2_000, Some(" admin "));
    assert_eq!(
        outcome(app.post_webhook_as("msg_promote", &promoted).await).await,
        "applied"
    );
    assert_eq!(app.user(id).await.expect("user").role, Role::Admin);
    assert_eq!(
        app.audit_trail(id).await,
        ["none->STUDENT", "STUDENT->ADMIN"]
    );
    let history = app.history(id).await;
    assert_eq!(history[0].source, RoleSource::ClerkWebhook);
    assert_eq!(history[0].actor.as_deref(), Some("msg_promote"));
    assert_eq!(counts(&app).await, (0, 0, 1));

    // The same message again: acknowledged, nothing changes.
    assert_eq!(
        outcome(app.post_webhook_as("msg_promote", &promoted).await).await,
        "duplicate"
    );
    assert_eq!(app.audit_trail(id).await.len(), 2);

    // An older state arriving late changes nothing.
    let stale = user_event("user.updated", id, 1_500, Some("INSTRUCTOR"));
    assert_eq!(outcome(app.post_webhook(&stale).await).await, "stale");
    assert_eq!(app.user(id).await.expect("user").role, Role::Admin);
    assert_eq!(counts(&app).await, (0, 0, 1));

    // A newer profile change without a role change writes no audit row.
    let mut renamed = user_event("user.updated", id, 2_500, Some("ADMIN"));
    renamed["data"]["first_name"] = json!("Darth");
    assert_eq!(outcome(app.post_webhook(&renamed).await).await, "unchanged");
    assert_eq!(
        app.user(id).await.expect("user").first_name.as_deref(),
        Some("Darth")
    );
    assert_eq!(app.audit_trail(id).await.len(), 2);

    // Deleted: a tombstone, gone from the counts.
    assert_eq!(
        outcome(app.post_webhook(&deleted_event(id)).await).await,
        "deleted"
    );
    let user = app.user(id).await.expect("kept as a tombstone");
    assert!(user.deleted_at.is_some());
    assert_eq!(counts(&app).await, (0, 0, 0));

    // A later update does not bring it back.
    let revived = user_event("user.updated", id, 9_000, Some("STUDENT"));
    assert_eq!(
        outcome(app.post_webhook(&revived).await).await,
        "user_deleted"
    );
    assert!(app.user(id).await.expect("user").deleted_at.is_some());
    assert_eq!(counts(&app).await, (0, 0, 0));
    assert_eq!(
        app.audit_trail(id).await.len(),
        3,
        "created, changed, deleted"
    );
    assert_eq!(
        app.processed_messages().await,
        6,
        "every distinct message is recorded once"
    );
}

async fn nul_characters_in_a_profile_are_dropped_not_fatal(backend: Backend) {
    // PostgreSQL text cannot hold NUL: kept, the event would fail on
    // every retry and the user would never arrive.
    let app = spawn_app(backend).await;
    let mut event = user_event("user.created", "user_nul", 1_000, Some("INSTRUCTOR"));
    event["data"]["first_name"] = json!("An\u{0}akin");
    event["data"]["email_addresses"][0]["email_address"] = json!("user_nul\u{0}@example.com");

    assert_eq!(outcome(app.post_webhook(&event).await).await, "applied");
    let user = app.user("user_nul").await.expect("created");
    assert_eq!(user.first_name.as_deref(), Some("Anakin"));
    assert_eq!(user.email.as_deref(), Some("user_nul@example.com"));
    assert_eq!(user.role, Role::Instructor);
}

async fn a_deletion_that_overtakes_the_creation_still_wins(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_eq!(
        outcome(app.post_webhook(&deleted_event("user_early")).await).await,
        "deleted"
    );
    let late = user_event("user.created", "user_early", 1_000, Some("ADMIN"));
    assert_eq!(outcome(app.post_webhook(&late).await).await, "user_deleted");

    assert!(
        app.user("user_early")
            .await
            .expect("tombstone")
            .deleted_at
            .is_some()
    );
    assert_eq!(counts(&app).await, (0, 0, 0));
    assert!(app.audit_trail("user_early").await.is_empty());
}

async fn unknown_roles_keep_the_current_role_and_are_recorded(backend: Backend) {
    let app = spawn_app(backend).await;

    let new_user = user_event("user.created", "user_odd", 1_000, Some("teacher"));
    assert_eq!(
        outcome(app.post_webhook_as("msg_odd1", &new_user).await).await,
        "unknown_role"
    );
    assert_eq!(
        app.user("user_odd").await.expect("created").role,
        Role::Student
    );
    assert_eq!(
        app.message_outcome("msg_odd1").await.as_deref(),
        Some("unknown_role")
    );

    app.post_webhook(&user_event(
        "user.updated",
        "user_odd",
        2_000,
        Some("INSTRUCTOR"),
    ))
    .await;
    let odd = user_event("user.updated", "user_odd", 3_000, Some("superuser"));
    assert_eq!(outcome(app.post_webhook(&odd).await).await, "unknown_role");
    assert_eq!(
        app.user("user_odd").await.expect("user").role,
        Role::Instructor
    );
    assert_eq!(counts(&app).await, (0, 1, 0));
}

async fn other_events_are_acknowledged_and_recorded(backend: Backend) {
    let app = spawn_app(backend).await;

    let session = json!({"type": "session.created", "object": "event", "data": {"id": "sess_1"}});
    assert_eq!(
        outcome(app.post_webhook_as("msg_session", &session).await).await,
        "ignored"
    );
    assert_eq!(
        app.message_outcome("msg_session").await.as_deref(),
        Some("ignored")
    );

    let no_id = json!({"type": "user.deleted", "data": {"deleted": true, "object": "user"}});
    assert_eq!(
        outcome(app.post_webhook_as("msg_noid", &no_id).await).await,
        "missing_id"
    );
    assert_eq!(
        app.message_outcome("msg_noid").await.as_deref(),
        Some("missing_id")
    );
    assert_eq!(counts(&app).await, (0, 0, 0));
}

async fn every_fixture_shape_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;

    for (name, body) in fixture_bodies() {
        let response = app.post_webhook(&body).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    let documented = app
        .user("user_29w83sxmDNGwOuEthce5gg56FcC")
        .await
        .expect("documented user");
    assert_eq!(documented.email.as_deref(), Some("example@example.org"));
    assert_eq!(documented.role, Role::Student);
}

async fn concurrent_copies_of_one_message_apply_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = user_event("user.created", "user_race", 1_000, Some("INSTRUCTOR"));

    let answers =
        futures_util::future::join_all((0..8).map(|_| app.post_webhook_as("msg_race", &body)))
            .await;

    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(outcome(answer).await);
    }
    outcomes.sort();
    assert_eq!(outcomes[0], "applied");
    assert!(
        outcomes[1..].iter().all(|o| o == "duplicate"),
        "{outcomes:?}"
    );
    assert_eq!(app.audit_trail("user_race").await, ["none->INSTRUCTOR"]);
    assert_eq!(counts(&app).await, (0, 1, 0));
}

async fn concurrent_messages_for_one_new_user_all_land(backend: Backend) {
    let app = spawn_app(backend).await;

    let answers = futures_util::future::join_all((1..=6).map(|i| {
        let role = if i % 2 == 0 { "ADMIN" } else { "INSTRUCTOR" };
        let body = user_event("user.updated", "user_burst", i * 1_000, Some(role));
        let app = &app;
        async move { app.post_webhook(&body).await }
    }))
    .await;

    for answer in answers {
        assert_eq!(answer.status(), 200);
    }
    // Whatever the arrival order, the newest state (6000: ADMIN) wins.
    assert_eq!(
        app.user("user_burst").await.expect("created").role,
        Role::Admin
    );
    assert_eq!(counts(&app).await, (0, 0, 1));
}

async fn a_pending_push_holds_the_admins_intent(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post_webhook(&user_event("user.created", "user_held", 1_000, None))
        .await;
    // They were made an INSTRUCTOR here; the push to Clerk has not landed.
    let id = ClerkUserId::parse("user_held").expect("valid id");
    let changed: Result<_, RoleUpdateError> = with_conn!(app.db, conn => {
        change_roles::set_role(conn, &id, Role::Instructor, RoleSource::AdminApi, Some("user_admin"), false).await
    });
    changed.expect("role set, push queued (no worker runs without CLERK_SECRET_KEY)");

    // A dashboard edit from before the push arrives: remembered, not applied.
    let edit = user_event("user.updated", "user_held", 2_000, Some("ADMIN"));
    assert_eq!(outcome(app.post_webhook(&edit).await).await, "unchanged");

    let user = app.user("user_held").await.expect("user");
    assert_eq!(
        user.role,
        Role::Instructor,
        "the intent holds while the push is pending"
    );
    assert_eq!(
        user.clerk_role,
        Some(Role::Admin),
        "Clerk's newest state is kept"
    );
    assert_eq!(user.clerk_updated_at, Some(2_000));
    assert_eq!(
        app.audit_trail("user_held").await,
        ["none->STUDENT", "STUDENT->INSTRUCTOR"],
        "no audit row for a held Clerk state"
    );
    assert_eq!(counts(&app).await, (0, 1, 0));
}

async fn a_database_failure_is_503_and_the_message_can_be_retried(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = user_event("user.created", "user_retry", 1_000, Some("ADMIN"));
    let fail = match backend {
        Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT ON webhook_events \
             FOR EACH ROW EXECUTE FUNCTION refuse();"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER refuse BEFORE INSERT ON webhook_events \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
        }
    };
    app.execute(fail).await;

    let refused = problem(app.post_webhook_as("msg_retry", &body).await, 503).await;
    assert!(
        !refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disk full")
    );
    assert!(
        app.user("user_retry").await.is_none(),
        "the whole event rolled back"
    );
    assert_eq!(app.processed_messages().await, 0, "not marked as processed");

    app.execute(match backend {
        Backend::Postgres => "DROP TRIGGER refuse ON webhook_events",
        Backend::Sqlite => "DROP TRIGGER refuse",
    })
    .await;
    assert_eq!(
        outcome(app.post_webhook_as("msg_retry", &body).await).await,
        "applied"
    );
    assert_eq!(
        app.user("user_retry").await.expect("applied on retry").role,
        Role::Admin
    );
    assert_eq!(counts(&app).await, (0, 0, 1));
}

/// Sends every kind of refused request; returns nothing, asserts each answer.
async fn assert_all_refused(app: &TestApp) {
    let body = bytes(&user_event(
        "user.created",
        "user_forged",
        1_000,
        Some("ADMIN"),
    ));
    let now = svix::now();
    let good = signed(TEST_SECRET, "msg_forged", now, &body);
    let header = |name: &str| {
        good.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .expect("header")
    };
    let without = |name: &str| -> Vec<(&'static str, String)> {
        good.iter().filter(|(n, _)| *n != name).cloned().collect()
    };
    let with = |name: &'static str, value: String| -> Vec<(&'static str, String)> {
        let mut headers = without(name);
        headers.push((name, value));
        headers
    };

    // 400: headers missing, empty or malformed.
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let refused = problem(
            app.post_raw_webhook(&without(name), body.clone()).await,
            400,
        )
        .await;
        assert_eq!(
            refused["detail"],
            "missing or malformed Svix signature headers"
        );
        problem(
            app.post_raw_webhook(&with(name, String::new()), body.clone())
                .await,
            400,
        )
        .await;
    }
    for timestamp in ["soon", "1.5e9", "-1", "+1700000000"] {
        problem(
            app.post_raw_webhook(&with("svix-timestamp", timestamp.into()), body.clone())
                .await,
            400,
        )
        .await;
    }
    problem(
        app.post_raw_webhook(&with("svix-id", "m".repeat(300)), body.clone())
            .await,
        400,
    )
    .await;

    // 401: signatures that do not match, each with the same fixed message.
    let signature = header("svix-signature");
    let forged_signatures = [
        "v1,".to_owned(),
        signature[..20].to_owned(),
        format!("v2,{}", &signature[3..]),
        format!("v1a,{}", &signature[3..]),
        svix::sign(OTHER_SECRET, "msg_forged", now, &body),
        svix::sign(TEST_SECRET, "msg_other", now, &body),
        svix::sign(TEST_SECRET, "msg_forged", now - 1, &body),
    ];
    for forged in forged_signatures {
        let refused = problem(
            app.post_raw_webhook(&with("svix-signature", forged), body.clone())
                .await,
            401,
        )
        .await;
        assert_eq!(refused["detail"], "the webhook signature does not match");
    }
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    problem(app.post_raw_webhook(&good, tampered).await, 401).await;
    let mut appended = body.clone();
    appended.push(b' ');
    problem(app.post_raw_webhook(&good, appended).await, 401).await;

    // 401: correctly signed, but too old or too far ahead (replays). The
    // clock is read afresh, and 5 s past the window leaves room for a slow
    // machine between signing and checking.
    for skew in [-305, 305, -3_600, 86_400] {
        let refused = problem(
            app.post_raw_webhook(
                &signed(TEST_SECRET, "msg_forged", svix::now() + skew, &body),
                body.clone(),
            )
            .await,
            401,
        )
        .await;
        assert_eq!(
            refused["detail"],
            "the webhook timestamp is outside the allowed window"
        );
    }

    // 413: over 1 MiB, even when "signed".
    let huge = vec![b' '; 1024 * 1024 + 1];
    let huge_headers = signed(TEST_SECRET, "msg_huge", now, &huge);
    problem(app.post_raw_webhook(&huge_headers, huge).await, 413).await;

    // 400: a valid signature over something that is not a Clerk event.
    for junk in [
        b"not json".to_vec(),
        b"{}".to_vec(),
        br#"{"type":"user.created","data":{"id":"user 1"}}"#.to_vec(),
    ] {
        let refused = problem(
            app.post_raw_webhook(&signed(TEST_SECRET, "msg_junk", now, &junk), junk)
                .await,
            400,
        )
        .await;
        assert!(!refused["detail"].as_str().unwrap_or_default().is_empty());
    }
}

both_backends!(
    forged_replayed_and_malformed_webhooks_change_nothing,
    timestamps_just_inside_the_window_and_standard_headers_pass,
    a_body_of_exactly_one_mebibyte_is_accepted,
    either_of_two_configured_secrets_is_accepted,
    without_a_secret_the_webhook_is_503
);

async fn forged_replayed_and_malformed_webhooks_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_all_refused(&app).await;

    assert!(app.user("user_forged").await.is_none());
    assert_eq!(app.processed_messages().await, 0);
    assert_eq!(counts(&app).await, (0, 0, 0));
}

async fn timestamps_just_inside_the_window_and_standard_headers_pass(backend: Backend) {
    let app = spawn_app(backend).await;

    for (i, skew) in [-290_i64, 290].into_iter().enumerate() {
        let id = format!("msg_edge{i}");
        let body = bytes(&user_event(
            "user.created",
            &format!("user_edge{i}"),
            1_000,
            None,
        ));
        let answer = app
            .post_raw_webhook(&signed(TEST_SECRET, &id, svix::now() + skew, &body), body)
            .await;
        assert_eq!(outcome(answer).await, "applied", "skew {skew}");
    }

    let body = bytes(&user_event("user.created", "user_std", 1_000, None));
    let now = svix::now();
    let standard = vec![
        ("webhook-id", "msg_std".to_owned()),
        ("webhook-timestamp", now.to_string()),
        (
            "webhook-signature",
            format!("v1,AAAA {}", svix::sign(TEST_SECRET, "msg_std", now, &body)),
        ),
    ];
    assert_eq!(
        outcome(app.post_raw_webhook(&standard, body).await).await,
        "applied"
    );
}

async fn a_body_of_exactly_one_mebibyte_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut event = user_event("user.created", "user_big", 1_000, None);
    event["data"]["unsafe_metadata"] = json!({ "notes": "" });
    let overhead = bytes(&event).len();
    event["data"]["unsafe_metadata"]["notes"] = json!("x".repeat(1024 * 1024 - overhead));
    let body = bytes(&event);
    assert_eq!(body.len(), 1024 * 1024);

    let answer = app
        .post_raw_webhook(&signed(TEST_SECRET, "msg_big", svix::now(), &body), body)
        .await;

    assert_eq!(outcome(answer).await, "applied");
}

async fn either_of_two_configured_secrets_is_accepted(backend: Backend) {
    let secrets = format!("{TEST_SECRET} {OTHER_SECRET}");
    let app = spawn_app_with(backend, &[("CLERK_WEBHOOK_SECRET", &secrets)]).await;

    for (i, secret) in [TEST_SECRET, OTHER_SECRET].into_iter().enumerate() {
        let body = bytes(&user_event(
            "user.created",
            &format!("user_rot{i}"),
            1_000,
            None,
        ));
        let id = format!("msg_rot{i}");
        let answer = app
            .post_raw_webhook(&signed(secret, &id, svix::now(), &body), body)
            .await;
        assert_eq!(outcome(answer).await, "applied");
    }
}

async fn without_a_secret_the_webhook_is_503(backend: Backend) {
    let app = spawn_app_with(backend, &[("CLERK_WEBHOOK_SECRET", "")]).await;

    let refused = problem(
        app.post_webhook(&user_event("user.created", "user_x", 1, None))
            .await,
        503,
    )
    .await;

    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("CLERK_WEBHOOK_SECRET")
    );
    assert_eq!(app.processed_messages().await, 0);
}
