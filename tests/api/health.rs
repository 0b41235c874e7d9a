use crate::both_backends;
use crate::helpers::{Backend, TestApp, metric, problem, spawn_app, wait_until};

both_backends!(
    healthz_answers_ok,
    readyz_names_the_backend_when_the_database_answers,
    readyz_is_503_when_the_database_is_gone,
    swagger_ui_is_served_from_the_service_itself,
    openapi_document_is_served_as_json
);

async fn healthz_answers_ok(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
}

async fn readyz_names_the_backend_when_the_database_answers(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    let expected = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(body["database"], expected);
}

async fn readyz_is_503_when_the_database_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    // A scrape works readiness out as /readyz does, before any probe.
    wait_until("a scrape says ready", || async {
        ready_gauge(&app).await == 1.0
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    match backend {
        Backend::Postgres => app.test_db.drop_database(),
        Backend::Sqlite => {
            let path = app.test_db.sqlite_path().expect("sqlite path");
            std::fs::remove_file(&path).expect("remove the database file");
        }
    }
    // The scrape still answers, and says what /readyz is about to say.
    wait_until("a scrape says not ready", || async {
        ready_gauge(&app).await == 0.0
    })
    .await;

    let body = problem(app.get("/readyz").await, 503).await;
    assert!(
        !body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("crs_test"),
        "no internals in the detail: {body}"
    );
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// `clerk_role_sync_ready` as a scrape reads it.
async fn ready_gauge(app: &TestApp) -> f64 {
    let page = app.get("/metrics").await.text().await.expect("text");
    assert!(page.contains("\nclerk_role_sync_ready "), "{page}");
    metric(&page, "clerk_role_sync_ready")
}

async fn swagger_ui_is_served_from_the_service_itself(backend: Backend) {
    let app = spawn_app(backend).await;

    let redirect = app.get("/swagger-ui").await;
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/swagger-ui/");

    let page = app.get("/swagger-ui/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");

    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let response = app.get(&format!("/swagger-ui/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.bytes().await.expect("body").len() > 100, "{asset}");
    }
    let initializer = app
        .get("/swagger-ui/swagger-initializer.js")
        .await
        .text()
        .await
        .expect("js");
    assert!(
        initializer.contains("/api-docs/openapi.json"),
        "{initializer}"
    );
}

async fn openapi_document_is_served_as_json(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/api-docs/openapi.json").await;

    assert_eq!(response.status(), 200);
    let document: serde_json::Value = response.json().await.expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1")
    );
    assert!(document["paths"]["/healthz"].is_object());
    assert!(document["paths"]["/readyz"].is_object());
}
