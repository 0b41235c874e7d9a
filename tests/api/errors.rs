//! Every error, whoever produces it, is a problem+json document.

use crate::both_backends;
use crate::helpers::{Backend, problem, spawn_app, spawn_app_with};

both_backends!(unknown_routes_are_404_problems);

async fn unknown_routes_are_404_problems(backend: Backend) {
    let app = spawn_app(backend).await;

    for path in ["/nope", "/api/admin", "/healthz/extra"] {
        let body = problem(app.get(path).await, 404).await;
        assert_eq!(body["title"], "Not Found");
        assert_eq!(body["type"], "about:blank");
    }
}

both_backends!(other_methods_on_known_paths_are_405_problems_with_allow);

async fn other_methods_on_known_paths_are_405_problems_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;

    for (method, path, allow) in [
        ("TRACE", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("DELETE", "/api/admin/users/user_1", "GET, HEAD, PATCH"),
        ("PUT", "/api/admin/users/roles", "POST"),
        ("GET", "/api/webhooks/clerk", "POST"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("sent");
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = problem(response, 405).await;
        assert_eq!(allowed, allow, "{method} {path}");
        assert_eq!(body["title"], "Method Not Allowed");
    }
}

both_backends!(cors_lets_only_the_configured_frontend_in);

async fn cors_lets_only_the_configured_frontend_in(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("CORS_ALLOWED_ORIGINS", "https://admin.example.com")],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/admin/users/user_1"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };

    let allowed = preflight("https://admin.example.com").await.expect("sent");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("PATCH"), "{methods}");

    let refused = preflight("https://evil.example.com").await.expect("sent");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let simple = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .expect("sent");
    assert!(
        simple
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
