//! The admin API: role changes (single and bulk), lists, history and stats,
//! and every refusal leaving everything as it was.

use clerk_role_sync::domain::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, problem, spawn_synced_app, wait_until};
use testkit::clerk_emulator::ClerkEmulator;

async fn sources(app: &TestApp, token: &str, id: &str) -> Vec<String> {
    let history = app
        .get_json(token, &format!("/api/admin/users/{id}/role-history"))
        .await;
    history["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            format!(
                "{}:{}->{}",
                row["source"].as_str().unwrap_or("?"),
                row["oldRole"].as_str().unwrap_or("none"),
                row["newRole"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

async fn stats(app: &TestApp, token: &str) -> Value {
    app.get_json(token, "/api/admin/stats").await
}

async fn admin_setup(backend: crate::helpers::Backend) -> (TestApp, ClerkEmulator, String) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_ada", None),
            ("user_bob", Some("INSTRUCTOR")),
        ],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    (app, clerk, token)
}

both_backends!(
    concurrent_changes_and_demotions_all_succeed,
    an_admin_changes_a_role_and_clerk_follows,
    setting_the_current_role_is_a_no_op,
    bad_requests_change_nothing,
    bulk_changes_are_all_or_nothing,
    lists_page_filter_and_search_literally,
    deleted_users_leave_lists_counts_and_lookups,
    ids_clerk_never_issues_name_no_user_on_any_user_path
);

async fn concurrent_changes_and_demotions_all_succeed(backend: Backend) {
    // Rounds of single and bulk changes at once, every third one demoting
    // many admins together, each round while the last one's pushes and
    // their echoes are still arriving. Counter rows are always taken in
    // one order, so no change may fail on a deadlock; and an echo never
    // moves a role while the admin's newer intent waits to be pushed.
    let (app, clerk) = spawn_synced_app(backend).await;
    let ids: Vec<String> = (0..40).map(|i| format!("user_many{i:02}")).collect();
    let mut users: Vec<(&str, Option<&str>)> = vec![("user_admin", Some("ADMIN"))];
    users.extend(ids.iter().map(|id| (id.as_str(), None)));
    seed(&app, &clerk, &users).await;
    let token = clerk.mint_token("user_admin");
    let (singles, bulk) = ids.split_at(24);

    let roles = ["INSTRUCTOR", "ADMIN", "STUDENT"];
    for (round, role) in roles.into_iter().cycle().take(12).enumerate() {
        let patches = singles.iter().map(|id| app.patch_role(&token, id, role));
        let changes: Vec<Value> = bulk
            .iter()
            .map(|id| json!({"userId": id, "role": role}))
            .collect();
        let bulk_change = app
            .authed(Method::POST, "/api/admin/users/roles", &token)
            .json(&json!({ "changes": changes }))
            .send();
        let (answers, bulk_answer) =
            tokio::join!(futures_util::future::join_all(patches), bulk_change);
        for answer in answers {
            assert_eq!(answer.status(), 200, "round {round}");
        }
        assert_eq!(bulk_answer.expect("sent").status(), 200, "round {round}");
        let counts = stats(&app, &token).await;
        let expected = |r: &str| if r == role { 40 } else { 0 };
        assert_eq!(
            counts["studentCount"],
            expected("STUDENT"),
            "round {round}: {counts}"
        );
        assert_eq!(
            counts["instructorCount"],
            expected("INSTRUCTOR"),
            "round {round}: {counts}"
        );
        assert_eq!(
            counts["adminCount"],
            1 + expected("ADMIN"),
            "round {round}: {counts}"
        );
    }
    for id in &ids {
        let history = sources(&app, &token, id).await;
        assert_eq!(history.len(), 13, "{id}: {history:?}");
        assert!(
            history[..12].iter().all(|h| h.starts_with("admin_api:")),
            "{id}: {history:?}"
        );
    }
}

async fn an_admin_changes_a_role_and_clerk_follows(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;

    let response = app.patch_role(&token, "user_ada", "INSTRUCTOR").await;

    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["id"], "user_ada");
    assert_eq!(user["role"], "INSTRUCTOR");
    assert_eq!(user["email"], "user_ada@example.com");
    assert!(
        user["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{user}"
    );
    wait_until("Clerk has the role", || async {
        clerk.role("user_ada").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    wait_until("the push is recorded as synced", || async {
        app.api_user(&token, "user_ada").await["sync"]["state"] == "synced"
    })
    .await;
    clerk.wait_for_deliveries().await;
    let after = app.api_user(&token, "user_ada").await;
    assert_eq!(after["role"], "INSTRUCTOR", "the echo changed nothing");
    assert_eq!(after["sync"]["attempts"], 1);
    assert_eq!(
        sources(&app, &token, "user_ada").await,
        [
            "admin_api:STUDENT->INSTRUCTOR",
            "clerk_webhook:none->STUDENT"
        ]
    );
    let history = app
        .get_json(&token, "/api/admin/users/user_ada/role-history")
        .await;
    assert_eq!(history["data"][0]["actor"], "user_admin");
    assert_eq!(
        stats(&app, &token).await,
        json!({"totalUsers": 3, "adminCount": 1, "instructorCount": 2, "studentCount": 0})
    );
    let patches = clerk.metadata_patches("user_ada");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].api_version.as_deref(), Some("2026-05-12"));
    assert_eq!(
        patches[0].body,
        json!({"public_metadata": {"role": "INSTRUCTOR"}})
    );
}

async fn setting_the_current_role_is_a_no_op(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;

    let response = app.patch_role(&token, "user_bob", "INSTRUCTOR").await;

    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["sync"]["state"], "synced");
    assert_eq!(
        sources(&app, &token, "user_bob").await.len(),
        1,
        "no audit row"
    );
    assert!(clerk.metadata_patches("user_bob").is_empty(), "no push");
}

async fn bad_requests_change_nothing(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;
    let before = stats(&app, &token).await;

    let invalid = problem(app.patch_role(&token, "user_ada", "SUPERUSER").await, 422).await;
    assert_eq!(
        invalid["allowedValues"],
        json!(["STUDENT", "INSTRUCTOR", "ADMIN"])
    );
    problem(app.patch_role(&token, "user_ada", "admin").await, 422).await;
    problem(app.patch_role(&token, "user_nobody", "ADMIN").await, 404).await;
    problem(app.patch_role(&token, "not a user id", "ADMIN").await, 404).await;

    let patch = |body: Vec<u8>, content_type: &'static str| {
        app.authed(Method::PATCH, "/api/admin/users/user_ada", &token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    problem(
        patch(b"{\"role\":".to_vec(), "application/json")
            .await
            .expect("sent"),
        400,
    )
    .await;
    problem(
        patch(b"{\"rol\":\"ADMIN\"}".to_vec(), "application/json")
            .await
            .expect("sent"),
        400,
    )
    .await;
    problem(
        patch(b"{\"role\":\"ADMIN\"}".to_vec(), "text/plain")
            .await
            .expect("sent"),
        400,
    )
    .await;
    let huge = format!(
        "{{\"role\":\"ADMIN\",\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    problem(
        patch(huge.into_bytes(), "application/json")
            .await
            .expect("sent"),
        413,
    )
    .await;

    // The only admin demoting themselves would leave no admin.
    let last = problem(app.patch_role(&token, "user_admin", "STUDENT").await, 409).await;
    assert!(
        last["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no admin")
    );

    assert_eq!(stats(&app, &token).await, before);
    assert_eq!(app.api_user(&token, "user_ada").await["role"], "STUDENT");
    assert_eq!(app.api_user(&token, "user_admin").await["role"], "ADMIN");
    assert!(clerk.metadata_patches("user_ada").is_empty());
    assert!(clerk.metadata_patches("user_admin").is_empty());
}

async fn bulk_changes_are_all_or_nothing(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;
    let bulk = |changes: Value| {
        app.authed(Method::POST, "/api/admin/users/roles", &token)
            .json(&json!({ "changes": changes }))
            .send()
    };

    let bad_role = bulk(json!([
        {"userId": "user_ada", "role": "ADMIN"},
        {"userId": "user_bob", "role": "OWNER"},
    ]))
    .await
    .expect("sent");
    let body = problem(bad_role, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("changes[1]"),
        "{body}"
    );
    assert_eq!(body["type"], "/problems/invalid-role");
    assert_eq!(
        body["allowedValues"],
        json!(["STUDENT", "INSTRUCTOR", "ADMIN"])
    );
    // Each cause has its own type, for a client to switch on.
    for (changes, status, kind) in [
        (
            json!([{"userId": "user_ada", "role": "ADMIN"}, {"userId": "user_nobody", "role": "ADMIN"}]),
            404,
            "/problems/user-not-found",
        ),
        (
            json!([{"userId": "user_ada", "role": "ADMIN"}, {"userId": "user_ada", "role": "STUDENT"}]),
            422,
            "/problems/duplicate-user",
        ),
        (
            json!([{"userId": "not an id", "role": "ADMIN"}]),
            422,
            "/problems/invalid-user-id",
        ),
        (json!([]), 422, "/problems/change-count"),
        (
            json!([{"userId": "user_admin", "role": "STUDENT"}, {"userId": "user_ada", "role": "INSTRUCTOR"}]),
            409,
            "/problems/last-admin",
        ),
    ] {
        let body = problem(bulk(changes.clone()).await.expect("sent"), status).await;
        assert_eq!(body["type"], kind, "{changes}: {body}");
        assert!(body.get("allowedValues").is_none(), "{body}");
    }
    assert_eq!(app.api_user(&token, "user_ada").await["role"], "STUDENT");
    assert!(clerk.metadata_patches("user_ada").is_empty());

    // Handing over: the old admin steps down as the new one steps up.
    let applied = bulk(json!([
        {"userId": "user_admin", "role": "INSTRUCTOR"},
        {"userId": "user_ada", "role": "ADMIN"},
    ]))
    .await
    .expect("sent");
    assert_eq!(applied.status(), 200);
    let body: Value = applied.json().await.expect("json");
    assert_eq!(body["data"][0]["role"], "INSTRUCTOR");
    assert_eq!(body["data"][1]["role"], "ADMIN");
    wait_until("Clerk has both roles", || async {
        clerk.role("user_admin").as_deref() == Some("INSTRUCTOR")
            && clerk.role("user_ada").as_deref() == Some("ADMIN")
    })
    .await;
    let new_admin = clerk.mint_token("user_ada");
    assert_eq!(stats(&app, &new_admin).await["adminCount"], 1);
    problem(
        app.authed(Method::GET, "/api/admin/stats", &token)
            .send()
            .await
            .expect("sent"),
        403,
    )
    .await;
}

async fn lists_page_filter_and_search_literally(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;
    let mut more: Vec<(String, Option<&str>)> =
        (0..23).map(|i| (format!("user_p{i:02}"), None)).collect();
    more.push(("user_pct".into(), Some("INSTRUCTOR")));
    let refs: Vec<(&str, Option<&str>)> =
        more.iter().map(|(id, role)| (id.as_str(), *role)).collect();
    seed(&app, &clerk, &refs).await;
    // One user with a name (the emulator's users have none).
    let named = testkit::clerk_payloads::user_event("user.created", "user_sky", 1, None);
    assert_eq!(app.post_webhook(&named).await.status(), 200);

    // Every live user exactly once, newest first, over pages of 10.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/admin/users?limit=10&cursor={cursor}"),
            None => "/api/admin/users?limit=10".into(),
        };
        let page = app.get_json(&token, &path).await;
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 10);
        seen.extend(
            data.iter()
                .map(|u| u["id"].as_str().unwrap_or_default().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 28);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 28);
    // Newest sign-up in Clerk first: user_sky's payload says it signed
    // up in 2024, before everyone the emulator made today.
    let first_three = ["user_admin", "user_ada", "user_bob"];
    assert!(
        seen[24..27]
            .iter()
            .all(|id| first_three.contains(&id.as_str())),
        "oldest last: {seen:?}"
    );
    assert_eq!(seen[27], "user_sky", "oldest last: {seen:?}");

    let instructors = app
        .get_json(&token, "/api/admin/users?role=INSTRUCTOR&limit=100")
        .await;
    let ids: Vec<&str> = instructors["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"user_bob") && ids.contains(&"user_pct"));

    let found = app
        .get_json(&token, "/api/admin/users?search=USER_P07%40EXAMPLE")
        .await;
    assert_eq!(found["data"].as_array().expect("data").len(), 1);
    assert_eq!(found["data"][0]["id"], "user_p07");
    // `_` and `%` are literal: "user_p0_" matches nothing, "%" matches nothing.
    for literal in ["user_p0_%40", "%25", "anakin%25sky"] {
        let none = app
            .get_json(&token, &format!("/api/admin/users?search={literal}"))
            .await;
        assert_eq!(none["data"].as_array().expect("data").len(), 0, "{literal}");
    }
    let by_name = app
        .get_json(&token, "/api/admin/users?search=anakin%20SKY")
        .await;
    assert_eq!(
        by_name["data"].as_array().expect("data").len(),
        1,
        "full name search"
    );
    assert_eq!(by_name["data"][0]["id"], "user_sky");

    // PostgreSQL text cannot hold NUL: such a search is refused on both backends.
    for query in ["limit=0", "limit=101", "role=OWNER", "search=a%00b"] {
        problem(
            app.authed(Method::GET, &format!("/api/admin/users?{query}"), &token)
                .send()
                .await
                .expect("sent"),
            422,
        )
        .await;
    }
    for query in ["limit=ten", "cursor=%21%21"] {
        problem(
            app.authed(Method::GET, &format!("/api/admin/users?{query}"), &token)
                .send()
                .await
                .expect("sent"),
            400,
        )
        .await;
    }
}

async fn deleted_users_leave_lists_counts_and_lookups(backend: Backend) {
    let (app, clerk, token) = admin_setup(backend).await;

    clerk.delete_user("user_bob");
    clerk.wait_for_deliveries().await;

    problem(
        app.authed(Method::GET, "/api/admin/users/user_bob", &token)
            .send()
            .await
            .expect("sent"),
        404,
    )
    .await;
    // The audit outlives the user: its history ends with the deletion.
    let history = app
        .get_json(&token, "/api/admin/users/user_bob/role-history")
        .await;
    assert_eq!(history["data"][0]["newRole"], json!(null), "{history}");
    problem(app.patch_role(&token, "user_bob", "ADMIN").await, 404).await;
    let page = app.get_json(&token, "/api/admin/users").await;
    assert!(
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|u| u["id"] != "user_bob")
    );
    assert_eq!(stats(&app, &token).await["totalUsers"], 2);
}

both_backends!(head_answers_wherever_get_does_without_a_body);

async fn head_answers_wherever_get_does_without_a_body(backend: Backend) {
    let (app, _clerk, token) = admin_setup(backend).await;

    for (path, authed) in [
        ("/healthz", false),
        ("/readyz", false),
        ("/api-docs/openapi.json", false),
        ("/api/admin/users?limit=2", true),
        ("/api/admin/stats", true),
        ("/api/admin/users/user_ada", true),
    ] {
        let request = |method: Method| match authed {
            true => app.authed(method, path, &token),
            false => app.client.request(method, app.url(path)),
        };
        let get = request(Method::GET).send().await.expect("sent");
        let get_status = get.status();
        let get_type = get.headers().get("content-type").cloned();
        let get_body = get.bytes().await.expect("body");
        let head = request(Method::HEAD).send().await.expect("sent");
        assert_eq!(head.status(), get_status, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type").cloned(),
            get_type,
            "HEAD {path}"
        );
        let length = head
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(
            length,
            Some(get_body.len()),
            "HEAD {path}: the GET's length"
        );
        assert!(
            head.bytes().await.expect("body").is_empty(),
            "HEAD {path}: no body"
        );
    }

    // HEAD is refused where GET is: without a token, and where only POST works.
    problem_head(
        app.client
            .head(app.url("/api/admin/stats"))
            .send()
            .await
            .expect("sent"),
        401,
    );
    let webhook = app
        .client
        .head(app.url("/api/webhooks/clerk"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        webhook.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    problem_head(webhook, 405);
}

/// A refused HEAD: the status and the problem's content type, no body.
fn problem_head(response: reqwest::Response, status: u16) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}

async fn ids_clerk_never_issues_name_no_user_on_any_user_path(backend: Backend) {
    let (app, _clerk, token) = admin_setup(backend).await;
    let before = app.stats().await;
    let too_long = "u".repeat(129);
    // Percent-encoded as a frontend would send them: a space, a slash that
    // decodes inside the segment, a character outside ASCII, one too many.
    for id in [
        "user%20ada",
        "user%2Fada",
        "user_%E7%94%A8",
        too_long.as_str(),
    ] {
        for path in [
            format!("/api/admin/users/{id}"),
            format!("/api/admin/users/{id}/role-history"),
        ] {
            let response = app
                .authed(Method::GET, &path, &token)
                .send()
                .await
                .expect("sent");
            let body = problem(response, 404).await;
            assert_eq!(body["detail"], "no such user", "{path}");
        }
        problem(app.patch_role(&token, id, "ADMIN").await, 404).await;
    }
    assert_eq!(app.stats().await, before, "nothing changed");
    assert!(
        app.user("user_ada")
            .await
            .is_some_and(|user| user.role == Role::Student)
    );
}
