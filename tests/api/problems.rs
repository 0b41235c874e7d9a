//! Problem types: each kind of problem a client may switch on has its own
//! `type`, served by the service as a short description and listed in the
//! document.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, problem, spawn_app, spawn_synced_app};
use clerk_role_sync::error::ProblemType;

both_backends!(
    every_problem_type_is_served_as_a_short_description,
    refusals_name_their_kind,
);

async fn every_problem_type_is_served_as_a_short_description(backend: Backend) {
    let app = spawn_app(backend).await;
    for kind in ProblemType::ALL {
        let response = app.get(&kind.uri()).await;
        assert_eq!(response.status(), 200, "{}", kind.uri());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = response.text().await.expect("a body");
        assert!(
            text.starts_with(&format!("{} {}", kind.status().as_u16(), kind.title())),
            "{text}"
        );
        assert!(text.contains(kind.description()), "{text}");
    }
    let unknown = problem(app.get("/problems/no-such-kind").await, 404).await;
    assert_eq!(unknown["type"], "about:blank");
}

async fn refusals_name_their_kind(backend: Backend) {
    // No key to verify tokens with: every admin call says so.
    let unconfigured = spawn_app(backend).await;
    let body = problem(
        unconfigured
            .authed(Method::GET, "/api/admin/stats", "any.token.here")
            .send()
            .await
            .expect("sent"),
        503,
    )
    .await;
    assert_eq!(body["type"], "/problems/auth-not-configured");
    assert_eq!(body["title"], ProblemType::AuthNotConfigured.title());

    let (app, clerk) = spawn_synced_app(backend).await;
    crate::admin_auth::seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let admin = clerk.mint_token("user_admin");

    // A valid token whose user never reached this database.
    let stranger = clerk.mint_token("user_stranger");
    let body = problem(
        app.authed(Method::GET, "/api/admin/stats", &stranger)
            .send()
            .await
            .expect("sent"),
        401,
    )
    .await;
    assert_eq!(body["type"], "/problems/unknown-caller");
    // An expired or missing token: the status says it all.
    let body = problem(app.get("/api/admin/stats").await, 401).await;
    assert_eq!(body["type"], "about:blank");

    let invalid = problem(app.patch_role(&admin, "user_admin", "OWNER").await, 422).await;
    assert_eq!(invalid["type"], "/problems/invalid-role");
    assert_eq!(
        invalid["allowedValues"],
        json!(["STUDENT", "INSTRUCTOR", "ADMIN"])
    );
    let last = problem(app.patch_role(&admin, "user_admin", "STUDENT").await, 409).await;
    assert_eq!(last["type"], "/problems/last-admin");
    assert!(last.get("allowedValues").is_none(), "{last}");
    let missing = problem(app.patch_role(&admin, "user_nobody", "ADMIN").await, 404).await;
    assert_eq!(missing["type"], "/problems/user-not-found");
    let limit = problem(
        app.authed(Method::GET, "/api/admin/users?limit=0", &admin)
            .send()
            .await
            .expect("sent"),
        422,
    )
    .await;
    assert_eq!(limit["type"], "/problems/invalid-parameter");
    // Every type a refusal carried is one the service describes.
    for body in [&invalid, &last, &missing, &limit] {
        let uri = body["type"].as_str().expect("a type");
        assert_eq!(app.get(uri).await.status(), 200, "{uri}");
    }
    assert_eq!(app.api_user(&admin, "user_admin").await["role"], "ADMIN");
}

#[test]
fn the_document_lists_every_problem_type() {
    let document = serde_json::to_value(clerk_role_sync::openapi::document()).expect("json");
    let listed: Vec<&str> =
        document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
            .as_array()
            .expect("type lists its values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
    for kind in ProblemType::ALL {
        assert!(listed.contains(&kind.uri().as_str()), "{}", kind.uri());
    }
    assert!(listed.contains(&"about:blank"));
    let slugs =
        &document["paths"]["/problems/{problemType}"]["get"]["parameters"][0]["schema"]["enum"];
    assert_eq!(
        slugs.as_array().map(Vec::len),
        Some(ProblemType::ALL.len()),
        "{slugs}"
    );
    let allowed = &document["components"]["schemas"]["Problem"]["properties"]["allowedValues"];
    assert_eq!(
        allowed["items"]["$ref"], "#/components/schemas/Role",
        "{allowed}"
    );
}
