//! Safe self-healing: nothing the drift audit does on its own can delete or
//! demote users en masse. Deletions and ADMIN demotions past the budget
//! wait for an operator; a short list of Clerk's stops a run before any
//! lookup; every deletion is audited; a tombstone the audit made is undone
//! when Clerk shows the user again; Clerk's waits are clamped and a
//! refused cursor starts the walk over.

use std::time::Duration;

use clerk_role_sync::app::backfill::Prefer;
use clerk_role_sync::app::drift_audit::RunMode;
use clerk_role_sync::db::rows::DriftAuditRow;
use clerk_role_sync::jobs::drift_audit::{DriftAudit, RunEnd};
use serde_json::json;

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_counters_match_a_recount, metric, spawn_synced_app};
use testkit::clerk_emulator::{ClerkEmulator, Delivery};
use testkit::clerk_payloads::user_event;
use testkit::svix;

both_backends!(
    deletions_past_the_budget_wait_for_an_operator,
    an_admin_demotion_counts_against_the_budget,
    a_short_list_stops_the_run_before_any_lookup,
    a_user_clerk_hides_for_a_while_comes_back_audited,
    a_webhook_deletion_is_audited_and_its_history_kept,
    clerks_waits_are_clamped_and_a_refused_cursor_starts_over,
);

async fn audit_once(audit: &DriftAudit) -> DriftAuditRow {
    match audit.run_once().await.expect("the audit runs") {
        RunEnd::Finished(run) => run,
        RunEnd::Busy(held) => panic!("the walk lease was held: {held}"),
    }
}

/// An app and Clerk in sync with `users` (id, role), then webhooks dropped
/// for good: whatever changes in Clerk from here reaches us only through
/// the audit.
async fn synced_then_deaf(
    backend: Backend,
    users: &[(&str, Option<&str>)],
) -> (TestApp, ClerkEmulator) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, users).await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    (app, clerk)
}

fn student(i: usize) -> String {
    format!("user_student_{i:02}")
}

async fn deletions_past_the_budget_wait_for_an_operator(backend: Backend) {
    let mut users: Vec<(String, Option<&str>)> = vec![("user_admin".into(), Some("ADMIN"))];
    users.extend((0..30).map(|i| (student(i), None)));
    let users: Vec<(&str, Option<&str>)> = users.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    let (app, clerk) = synced_then_deaf(backend, &users).await;
    let before = app.stats().await;
    // Twelve users leave Clerk; their `user.deleted` never arrives.
    for i in 0..12 {
        clerk.delete_user(&student(i));
    }

    let (audit, metrics) = app.drift_audit("replica-a");
    let run = audit_once(&audit).await;
    assert_eq!(run.found_missing_in_clerk, 12, "{run:?}");
    assert_eq!(run.repaired, 0, "{run:?}");
    assert!(
        run.waiting.as_deref().is_some_and(|why| why.contains("12")),
        "{run:?}"
    );
    for i in 0..12 {
        let row = app.user(&student(i)).await.expect("here");
        assert!(row.deleted_at.is_none(), "{} is not deleted", student(i));
    }
    assert_eq!(app.stats().await, before, "the counts did not move");

    // The operator sees it: status, metric, the list of users.
    let token = clerk.mint_token("user_admin");
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["inSync"], false, "{status}");
    let waiting = &status["driftAudit"]["last"]["waitingForConfirmation"];
    assert_eq!(waiting["changes"], 12, "{status}");
    let listed: Vec<&str> = waiting["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| {
            assert_eq!(user["kind"], "missing_in_clerk");
            user["userId"].as_str().expect("an id")
        })
        .collect();
    let expected: Vec<String> = (0..12).map(student).collect();
    assert_eq!(listed, expected);
    let page = metrics.render();
    assert_eq!(
        metric(&page, "clerk_role_sync_drift_audit_awaiting_confirmation"),
        12.0
    );
    assert_eq!(
        metric(
            &page,
            "clerk_role_sync_drift_audit_runs_total{result=\"waiting\"}"
        ),
        1.0
    );

    // The next scheduled run does not resume it: it waits again.
    let again = audit_once(&audit).await;
    assert_ne!(again.id, run.id);
    assert!(again.waiting.is_some(), "{again:?}");

    // A budget that is still too small changes nothing either.
    let (reconcile, _) = app.drift_audit("reconcile@test");
    let short = reconcile
        .run_fresh(RunMode::Fix(Prefer::Clerk), 11)
        .await
        .expect("reconcile --fix --max-deletions 11");
    assert!(short.waiting.is_some(), "{short:?}");
    assert!(
        app.user(&student(0))
            .await
            .expect("here")
            .deleted_at
            .is_none()
    );

    // `reconcile --fix --max-deletions 12` makes them, each audited.
    let fixed = reconcile
        .run_fresh(RunMode::Fix(Prefer::Clerk), 12)
        .await
        .expect("reconcile --fix --max-deletions 12");
    assert_eq!(fixed.waiting, None, "{fixed:?}");
    assert_eq!(fixed.repaired, 12, "{fixed:?}");
    for i in 0..12 {
        let id = student(i);
        let row = app.user(&id).await.expect("a tombstone");
        assert!(row.deleted_at.is_some(), "{id} deleted");
        assert!(!row.deletion_final, "{id}: provisional");
        let history = app
            .get_json(&token, &format!("/api/admin/users/{id}/role-history"))
            .await;
        let newest = &history["data"][0];
        assert_eq!(
            (&newest["oldRole"], &newest["newRole"], &newest["source"]),
            (&json!("STUDENT"), &json!(null), &json!("reconcile")),
            "{history}"
        );
        assert_eq!(
            newest["actor"],
            json!(format!("drift-audit/{}", fixed.id)),
            "{history}"
        );
    }
    for i in 12..30 {
        assert!(
            app.user(&student(i))
                .await
                .expect("here")
                .deleted_at
                .is_none()
        );
    }
    assert_eq!(app.stats().await.students, before.students - 12);
    assert_counters_match_a_recount(&app.db).await;
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["inSync"], true, "{status}");
}

async fn an_admin_demotion_counts_against_the_budget(backend: Backend) {
    let (app, clerk) = synced_then_deaf(
        backend,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_other_admin", Some("ADMIN")),
        ],
    )
    .await;
    clerk.edit_metadata("user_other_admin", json!({ "role": "STUDENT" }));

    let (audit, _) = app.drift_audit("replica-a");
    let none_allowed = audit
        .run_fresh(RunMode::Fix(Prefer::Clerk), 0)
        .await
        .expect("a run");
    assert_eq!(none_allowed.found_role_differs, 1, "{none_allowed:?}");
    assert!(none_allowed.waiting.is_some(), "{none_allowed:?}");
    let row = app.user("user_other_admin").await.expect("here");
    assert_eq!(row.role.as_str(), "ADMIN", "not demoted past the budget");

    // Within the default budget the audit makes it, confirmed by a lookup.
    let run = audit_once(&audit).await;
    assert_eq!((run.repaired, run.waiting.as_deref()), (1, None), "{run:?}");
    assert_eq!(
        app.user("user_other_admin")
            .await
            .expect("here")
            .role
            .as_str(),
        "STUDENT"
    );
    assert_eq!(
        app.audit_trail("user_other_admin").await,
        ["none->ADMIN", "ADMIN->STUDENT"]
    );
}

async fn a_short_list_stops_the_run_before_any_lookup(backend: Backend) {
    let users: Vec<String> = (0..30).map(student).collect();
    let mut seeded: Vec<(&str, Option<&str>)> = vec![("user_admin", Some("ADMIN"))];
    seeded.extend(users.iter().map(|id| (id.as_str(), None)));
    let (app, clerk) = synced_then_deaf(backend, &seeded).await;
    let before = app.stats().await;
    let (audit, _) = app.drift_audit("replica-a");

    for cap in [0, 5] {
        // An empty, then a truncated, answer for the whole list.
        clerk.cap_list(Some(cap));
        let requests_before = clerk.requests().len();
        let run = audit_once(&audit).await;
        let asked: Vec<String> = clerk.requests()[requests_before..]
            .iter()
            .map(|request| format!("{} {}", request.method, request.path))
            .collect();
        assert_eq!(asked, ["GET /v1/users"], "no lookup (cap {cap})");
        assert!(
            run.waiting
                .as_deref()
                .is_some_and(|why| why.contains("under half")),
            "{run:?}"
        );
        assert_eq!(app.stats().await, before, "nobody deleted (cap {cap})");
    }

    // With the whole list back, the next run finds nothing to do.
    clerk.cap_list(None);
    let run = audit_once(&audit).await;
    assert_eq!((run.waiting.as_deref(), run.repaired), (None, 0), "{run:?}");
    assert_eq!(app.stats().await, before);
}

async fn a_user_clerk_hides_for_a_while_comes_back_audited(backend: Backend) {
    let (app, clerk) = synced_then_deaf(
        backend,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_hidden", Some("INSTRUCTOR")),
            ("user_webhook", Some("INSTRUCTOR")),
        ],
    )
    .await;
    clerk.hide_user("user_hidden");
    clerk.hide_user("user_webhook");
    let (audit, _) = app.drift_audit("replica-a");
    let run = audit_once(&audit).await;
    assert_eq!(run.repaired, 2, "within the budget: {run:?}");
    for id in ["user_hidden", "user_webhook"] {
        let row = app.user(id).await.expect("a tombstone");
        assert!(row.deleted_at.is_some() && !row.deletion_final, "{row:?}");
    }

    // Clerk shows them again, one with a new role meanwhile.
    clerk.show_user("user_hidden");
    clerk.show_user("user_webhook");
    clerk.edit_metadata("user_hidden", json!({ "role": "ADMIN" }));

    // A list page brings the first back, with Clerk's role now.
    let run = audit_once(&audit).await;
    assert_eq!(run.found_missing_here, 2, "{run:?}");
    let back = app.user("user_hidden").await.expect("here");
    assert_eq!((back.deleted_at, back.role.as_str()), (None, "ADMIN"));
    assert_eq!(
        app.audit_trail("user_hidden").await,
        ["none->INSTRUCTOR", "INSTRUCTOR->none", "none->ADMIN"]
    );
    assert_counters_match_a_recount(&app.db).await;

    // A webhook for a provisionally deleted user is confirmed by a lookup.
    clerk.hide_user("user_webhook");
    let run = audit_once(&audit).await;
    assert_eq!(run.repaired, 1, "{run:?}");
    clerk.show_user("user_webhook");
    let state = clerk.user("user_webhook").expect("in Clerk");
    let event = json!({
        "type": "user.updated", "object": "event", "data": state,
    });
    let response = app.post_webhook(&event).await;
    assert_eq!(response.status(), 200);
    let back = app.user("user_webhook").await.expect("here");
    assert_eq!((back.deleted_at, back.role.as_str()), (None, "INSTRUCTOR"));
    let newest = &app.history("user_webhook").await[0];
    assert_eq!(newest.old_role, None);
    assert_eq!(newest.source.as_str(), "clerk_webhook");
    assert_counters_match_a_recount(&app.db).await;
}

async fn a_webhook_deletion_is_audited_and_its_history_kept(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_gone", Some("INSTRUCTOR")),
        ],
    )
    .await;
    clerk.delete_user("user_gone");
    clerk.wait_for_deliveries().await;
    let row = app.user("user_gone").await.expect("a tombstone");
    assert!(row.deleted_at.is_some() && row.deletion_final, "{row:?}");
    assert_eq!(
        app.audit_trail("user_gone").await,
        ["none->INSTRUCTOR", "INSTRUCTOR->none"]
    );
    let token = clerk.mint_token("user_admin");
    let user = app
        .client
        .get(app.url("/api/admin/users/user_gone"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(user.status(), 404, "the user itself is gone");
    let history = app
        .get_json(&token, "/api/admin/users/user_gone/role-history")
        .await;
    assert_eq!(history["data"][0]["newRole"], json!(null), "{history}");
    assert_eq!(history["data"][0]["source"], "clerk_webhook", "{history}");

    // A late event for it is re-read and leaves it deleted: only Clerk's
    // `user.deleted` is final.
    let late = user_event("user.updated", "user_gone", 1, Some("ADMIN"));
    assert_eq!(app.post_webhook(&late).await.status(), 200);
    assert!(
        app.user("user_gone")
            .await
            .expect("tombstone")
            .deleted_at
            .is_some()
    );
    // An audit leaves a final tombstone alone.
    let (audit, _) = app.drift_audit("replica-a");
    let run = audit_once(&audit).await;
    assert_eq!(
        run.found_missing_here + run.found_missing_in_clerk,
        0,
        "{run:?}"
    );
}

async fn clerks_waits_are_clamped_and_a_refused_cursor_starts_over(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Dropped,
    );
    // Two pages of Clerk's list (500 a page).
    for i in 0..520 {
        clerk.add_user(&format!("user_many_{i:04}"), None);
    }
    // A day's Retry-After, and a cursor refused mid-walk.
    clerk.rate_limit_next(1, 86_400);
    clerk.refuse_next_cursor();
    let (audit, _) = app.drift_audit_with("replica-a", |settings| {
        settings.max_wait = Duration::from_secs(1);
    });
    let run = tokio::time::timeout(Duration::from_secs(60), audit_once(&audit))
        .await
        .expect("the 429 waited at most CLERK_PUSH_RETRY_MAX_SECS");
    assert_eq!(run.error, None, "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
    assert_eq!(run.found_missing_here, 520, "{run:?}");
    assert_eq!(
        run.checked, 521,
        "the walk started over and counted once: {run:?}"
    );
    let refused = clerk
        .requests()
        .iter()
        .filter(|request| request.path == "/v1/users" && request.status == 422)
        .count();
    assert_eq!(refused, 1);
    assert_eq!(app.stats().await.students, 520);
}
