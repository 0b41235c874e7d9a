//! Swagger UI as a developer meets it: in a real browser (headless
//! Chromium driven by `tests/frontend/swagger-ui.mjs`), against the service
//! on a random port, Authorize, Try it out and Execute a PATCH. The
//! document's `servers` is relative, so the call goes to the service the
//! page came from, wherever it runs.
//!
//! Needs Node.js, `npm ci --prefix tests/frontend` and Chromium
//! (`/usr/bin/chromium`, or `CHROMIUM`): README's set-up installs them.

use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::admin_auth::seed;
use crate::helpers::{Backend, spawn_synced_app, wait_until};

fn frontend_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/frontend")
}

/// What Swagger UI showed after Execute: the status and the body.
async fn execute_patch_in_swagger_ui(origin: &str, token: &str, user: &str, role: &str) -> Value {
    let dir = frontend_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser test needs its Node packages: run `npm ci --prefix tests/frontend`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium}: `apt-get install chromium`, or set CHROMIUM"
    );
    // `timeout` ends a browser that hangs; the script's own steps time out
    // after 20 s each.
    let script = dir.join("swagger-ui.mjs");
    let args = [origin, token, user, role].map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("120")
            .arg("node")
            .arg(script)
            .args(args)
            .env("CHROMIUM", chromium)
            .output()
    })
    .await
    .expect("the browser run was not cancelled")
    .expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("the script prints one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_changes_a_role_for_an_admin_and_refuses_a_student() {
    let (app, clerk) = spawn_synced_app(Backend::Sqlite).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_ada", None),
            ("user_stu", None),
        ],
    )
    .await;
    let admin = clerk.mint_token("user_admin");

    let shown = execute_patch_in_swagger_ui(&app.address, &admin, "user_ada", "INSTRUCTOR").await;
    assert_eq!(shown["status"], 200, "{shown}");
    let body: Value = serde_json::from_str(shown["body"].as_str().unwrap_or_default())
        .expect("Swagger UI shows the JSON answer");
    assert_eq!(body["id"], "user_ada");
    assert_eq!(body["role"], "INSTRUCTOR");
    assert_eq!(app.api_user(&admin, "user_ada").await["role"], "INSTRUCTOR");
    wait_until("Clerk has the role set in Swagger UI", || async {
        clerk.role("user_ada").as_deref() == Some("INSTRUCTOR")
    })
    .await;

    // A student's token: 403 shown, and nothing changes on either side.
    let patches_before = clerk.metadata_patches("user_ada").len();
    let student = clerk.mint_token("user_stu");
    let shown = execute_patch_in_swagger_ui(&app.address, &student, "user_ada", "ADMIN").await;
    assert_eq!(shown["status"], 403, "{shown}");
    let body: Value = serde_json::from_str(shown["body"].as_str().unwrap_or_default())
        .expect("Swagger UI shows the problem");
    assert_eq!(body["status"], 403);
    assert_eq!(app.api_user(&admin, "user_ada").await["role"], "INSTRUCTOR");
    assert_eq!(clerk.role("user_ada").as_deref(), Some("INSTRUCTOR"));
    assert_eq!(clerk.metadata_patches("user_ada").len(), patches_before);
}
