//! Hostile and careless input: made-up methods, slow bodies, bodies before
//! authorization, arrays for objects, crafted cursors; and the headers,
//! retention and paging that make the service safe to expose.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clerk_role_sync::domain::Role;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, outcome, problem, spawn_app_with, spawn_synced_app, spawn_synced_app_with,
    wait_until,
};
use testkit::clerk_payloads::user_event;
use testkit::svix;

fn socket(app: &TestApp) -> SocketAddr {
    app.address
        .trim_start_matches("http://")
        .parse()
        .expect("the service's address")
}

/// Sends `head` (a request line and headers promising a large body), then
/// one byte every 200 ms, and returns the answer's head once it comes (and
/// whether the connection was closed after it).
async fn trickle(address: SocketAddr, head: String) -> (String, bool) {
    let stream = TcpStream::connect(address).await.expect("connected");
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.expect("head sent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    let closed = loop {
        assert!(
            Instant::now() < deadline,
            "no answer to a slow body: {answer:?}"
        );
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            // The attack itself: a byte now and then, never the whole body.
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                let _ = writer.write_all(b" ").await;
            }
        }
    };
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (answer, closed)
}

/// `count` webhooks trickling their bodies in at once, each its own message.
fn slow_webhooks(
    address: SocketAddr,
    count: usize,
) -> Vec<tokio::task::JoinHandle<(String, bool)>> {
    (0..count)
        .map(|i| {
            tokio::spawn(trickle(
                address,
                slow_webhook_head(&format!("msg_slow_{i}")),
            ))
        })
        .collect()
}

fn slow_webhook_head(id: &str) -> String {
    format!(
        "POST /api/webhooks/clerk HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 1000000\r\nsvix-id: {id}\r\nsvix-timestamp: {}\r\n\
         svix-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n{{",
        svix::now()
    )
}

/// A webhook that is refused after its body is read (a wrong signature):
/// 401 while bodies are being taken, 503 while too many are buffered.
async fn probe_webhook(app: &TestApp) -> reqwest::Response {
    app.post_raw_webhook(
        &[
            ("svix-id", "msg_probe".into()),
            ("svix-timestamp", svix::now().to_string()),
            (
                "svix-signature",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            ),
        ],
        b"{}".to_vec(),
    )
    .await
}

both_backends!(
    made_up_methods_add_no_metric_series,
    metrics_can_live_on_their_own_address,
    metric_families_exist_before_any_event,
    a_body_that_trickles_in_is_cut_off_with_408,
    webhook_bodies_buffered_at_once_are_bounded,
    callers_are_authorized_before_their_body_is_read,
    bodies_must_be_json_objects,
    crafted_and_empty_cursors,
    an_empty_role_in_clerk_is_no_role,
    every_answer_is_marked_nosniff_and_admin_answers_are_not_stored,
    swagger_ui_runs_only_its_own_files_and_is_never_framed,
    old_webhook_records_are_pruned,
    role_history_pages_like_the_user_list
);

async fn made_up_methods_add_no_metric_series(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let before = app.get("/metrics").await.text().await.expect("text");

    for i in 0..300 {
        let method = Method::from_bytes(format!("X{i}{}", "M".repeat(7_000)).as_bytes())
            .expect("a method token");
        let response = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .expect("sent");
        assert!(response.status().is_client_error(), "{}", response.status());
    }

    let after = app.get("/metrics").await.text().await.expect("text");
    assert!(!after.contains("MMMM"), "a made-up method became a label");
    assert!(
        after.len() < before.len() + 8 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    let other = after
        .lines()
        .find(|line| {
            line.starts_with("clerk_role_sync_http_request_duration_seconds_count{method=\"other\"")
        })
        .expect("made-up methods are counted as `other`");
    assert!(other.ends_with(" 300"), "{other}");
}

async fn metrics_can_live_on_their_own_address(backend: Backend) {
    let app = spawn_app_with(backend, &[("METRICS_BIND_ADDR", "127.0.0.1:0")]).await;
    let metrics = app.metrics_address.clone().expect("a metrics listener");

    problem(app.get("/metrics").await, 404).await;
    let scraped = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .expect("text")
            .contains("clerk_role_sync_webhooks_total")
    );
    for path in ["/healthz", "/api/admin/stats", "/swagger-ui/"] {
        let response = app
            .client
            .get(format!("{metrics}{path}"))
            .send()
            .await
            .expect("sent");
        problem(response, 404).await;
    }
}

async fn metric_families_exist_before_any_event(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let text = app.get("/metrics").await.text().await.expect("text");
    for series in [
        r#"clerk_role_sync_webhooks_total{outcome="applied",type="user.updated"} 0"#,
        r#"clerk_role_sync_webhook_refusals_total{reason="bad_signature"} 0"#,
        r#"clerk_role_sync_push_attempts_total{result="landed"} 0"#,
        "clerk_role_sync_push_worker_restarts_total 0",
        r#"clerk_role_sync_http_request_duration_seconds_count{method="PATCH",route="/api/admin/users/{userId}",status="200"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}

async fn a_body_that_trickles_in_is_cut_off_with_408(backend: Backend) {
    let (app, clerk) = spawn_synced_app_with(backend, &[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    let started = Instant::now();

    let address = socket(&app);
    let webhooks = slow_webhooks(address, 3);
    let patch = tokio::spawn(trickle(
        address,
        format!(
            "PATCH /api/admin/users/user_ada HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"role\":"
        ),
    ));

    for connection in webhooks.into_iter().chain([patch]) {
        let (answer, closed) = connection.await.expect("joined");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(closed, "the connection is closed after the 408");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "held for {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.processed_messages().await,
        2,
        "only the seeding webhooks"
    );
    assert_eq!(
        app.user("user_ada").await.expect("user").role,
        Role::Student
    );
}

async fn webhook_bodies_buffered_at_once_are_bounded(backend: Backend) {
    let app = spawn_app_with(backend, &[("HTTP_BODY_TIMEOUT_SECS", "3")]).await;
    assert_eq!(probe_webhook(&app).await.status(), 401);

    let address = socket(&app);
    let slow = slow_webhooks(address, 64);
    wait_until("every buffer is taken", || async {
        probe_webhook(&app).await.status() == 503
    })
    .await;
    let busy = probe_webhook(&app).await;
    assert_eq!(busy.headers()["retry-after"], "1");
    problem(busy, 503).await;

    for connection in slow {
        let (answer, _) = connection.await.expect("joined");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(
        probe_webhook(&app).await.status(),
        401,
        "the buffers are free again"
    );
}

async fn callers_are_authorized_before_their_body_is_read(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_student", None)],
    )
    .await;
    let stranger = clerk.mint_token("user_nobody");
    let student = clerk.mint_token("user_student");
    let send = |token: Option<String>, body: &'static str| {
        let mut request = app
            .client
            .patch(app.url("/api/admin/users/user_student"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    for body in ["not json", "[\"ADMIN\"]", "{\"role\": 5}"] {
        problem(send(None, body).await.expect("sent"), 401).await;
        problem(send(Some(stranger.clone()), body).await.expect("sent"), 401).await;
        problem(send(Some(student.clone()), body).await.expect("sent"), 403).await;
    }
    let bulk = app
        .client
        .post(app.url("/api/admin/users/roles"))
        .bearer_auth(&student)
        .header("content-type", "application/json")
        .body("{{{")
        .send()
        .await
        .expect("sent");
    problem(bulk, 403).await;
}

async fn bodies_must_be_json_objects(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    let send = |method: Method, path: &'static str, body: Value| {
        app.authed(method, path, &token).json(&body).send()
    };

    let array = send(Method::PATCH, "/api/admin/users/user_ada", json!(["ADMIN"]))
        .await
        .expect("sent");
    let body = problem(array, 400).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON object"),
        "{body}"
    );
    for body in [json!("ADMIN"), json!(null), json!(3)] {
        problem(
            send(Method::PATCH, "/api/admin/users/user_ada", body)
                .await
                .expect("sent"),
            400,
        )
        .await;
    }
    for body in [
        json!([{"userId": "user_ada", "role": "ADMIN"}]),
        json!({"changes": [["user_ada", "ADMIN"]]}),
    ] {
        problem(
            send(Method::POST, "/api/admin/users/roles", body)
                .await
                .expect("sent"),
            400,
        )
        .await;
    }
    assert_eq!(
        app.user("user_ada").await.expect("user").role,
        Role::Student,
        "nothing changed"
    );
    assert_eq!(app.history("user_ada").await.len(), 1);
    assert!(clerk.metadata_patches("user_ada").is_empty());
}

async fn crafted_and_empty_cursors(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    let b64 = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };

    // The year -5000, and the largest instant chrono knows.
    for cursor in [
        b64("-219915000000000000:user_ada"),
        b64("9223372036854775807:user_ada"),
    ] {
        for path in ["/api/admin/users", "/api/admin/users/user_ada/role-history"] {
            let response = app
                .authed(Method::GET, &format!("{path}?cursor={cursor}"), &token)
                .send()
                .await
                .expect("sent");
            problem(response, 400).await;
        }
    }
    let first = app.get_json(&token, "/api/admin/users").await;
    let empty = app.get_json(&token, "/api/admin/users?cursor=").await;
    assert_eq!(first, empty, "an empty cursor is the first page");
    let history = app
        .get_json(&token, "/api/admin/users/user_ada/role-history?cursor=")
        .await;
    assert_eq!(history["data"].as_array().map(Vec::len), Some(1));
}

async fn an_empty_role_in_clerk_is_no_role(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let admin = user_event("user.created", "user_x", 1_000, Some("ADMIN"));
    assert_eq!(outcome(app.post_webhook(&admin).await).await, "applied");

    for (at, role) in [(2_000, ""), (3_000, "  ")] {
        let emptied = user_event("user.updated", "user_x", at, Some(role));
        assert_eq!(
            outcome(app.post_webhook(&emptied).await).await,
            if at == 2_000 { "applied" } else { "unchanged" }
        );
        assert_eq!(
            app.user("user_x").await.expect("user").role,
            Role::Student,
            "{role:?}"
        );
    }
    assert_eq!(app.stats().await.admins, 0);
}

async fn every_answer_is_marked_nosniff_and_admin_answers_are_not_stored(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let token = clerk.mint_token("user_admin");

    for path in ["/healthz", "/metrics", "/nope", "/api-docs/openapi.json"] {
        let response = app.get(path).await;
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert!(response.headers().get("cache-control").is_none(), "{path}");
    }
    let admin = app
        .authed(Method::GET, "/api/admin/users", &token)
        .send()
        .await
        .expect("sent");
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.headers()["cache-control"], "no-store");
    assert_eq!(admin.headers()["x-content-type-options"], "nosniff");
    let refused = app.get("/api/admin/stats").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let webhook = probe_webhook(&app).await;
    assert_eq!(webhook.headers()["x-content-type-options"], "nosniff");
}

async fn swagger_ui_runs_only_its_own_files_and_is_never_framed(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let page = app.get("/swagger-ui/").await;
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "connect-src 'self'",
    ] {
        assert!(
            policy.contains(directive),
            "{directive} missing from {policy}"
        );
    }
    // The page renders under that policy: every script it loads is a file
    // of its own (no inline script), and each of them is served.
    let html = page.text().await.expect("html");
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert!(!scripts.is_empty());
    for script in scripts {
        let src = script
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("an inline script: {script}"));
        let file = app
            .get(&format!("/swagger-ui/{}", src.trim_start_matches("./")))
            .await;
        assert_eq!(file.status(), 200, "{src}");
    }
    let document = app.get("/api-docs/openapi.json").await;
    assert!(
        document.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("frame-ancestors 'none'")
    );
}

async fn old_webhook_records_are_pruned(backend: Backend) {
    let mut app = spawn_app_with(backend, &[("WEBHOOK_EVENTS_RETENTION_DAYS", "30")]).await;
    let recent = user_event("user.created", "user_recent", 1_000, None);
    assert_eq!(
        outcome(app.post_webhook_as("msg_recent", &recent).await).await,
        "applied"
    );
    let old: Vec<String> = (0..2_500)
        .map(|i| format!("('msg_old_{i}', 'user.created', NULL, 'applied', '2020-01-01 00:00:00')"))
        .collect();
    app.execute(&format!(
        "INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at) VALUES {}",
        old.join(", ")
    ))
    .await;
    assert_eq!(app.processed_messages().await, 2_501);

    // Pruning runs at start-up (and hourly after).
    app.restart().await;
    wait_until("old records are gone", || async {
        app.processed_messages().await == 1
    })
    .await;
    assert_eq!(
        app.message_outcome("msg_recent").await.as_deref(),
        Some("applied")
    );
}

async fn role_history_pages_like_the_user_list(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_ada", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");
    for i in 0..24 {
        let role = ["INSTRUCTOR", "STUDENT"][i % 2];
        assert_eq!(app.patch_role(&token, "user_ada", role).await.status(), 200);
    }

    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => {
                format!("/api/admin/users/user_ada/role-history?limit=10&cursor={cursor}")
            }
            None => "/api/admin/users/user_ada/role-history?limit=10".to_owned(),
        };
        let page = app.get_json(&token, &path).await;
        let rows = page["data"].as_array().expect("rows").clone();
        sizes.push(rows.len());
        ids.extend(rows.iter().map(|row| row["id"].as_i64().expect("an id")));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5], "25 rows: the creation and 24 changes");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {ids:?}"
    );
    let default = app
        .get_json(&token, "/api/admin/users/user_ada/role-history")
        .await;
    assert_eq!(default["data"].as_array().map(Vec::len), Some(20));
    for bad in ["limit=0", "limit=101"] {
        let response = app
            .authed(
                Method::GET,
                &format!("/api/admin/users/user_ada/role-history?{bad}"),
                &token,
            )
            .send()
            .await
            .expect("sent");
        problem(response, 422).await;
    }
    let junk = app
        .authed(
            Method::GET,
            "/api/admin/users/user_ada/role-history?cursor=!!",
            &token,
        )
        .send()
        .await
        .expect("sent");
    problem(junk, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_prune_one_at_a_time() {
    use clerk_role_sync::jobs::retention;
    use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};

    let app = spawn_app_with(Backend::Postgres, &[]).await;
    app.execute(
        "INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at) \
         VALUES ('msg_old', 'user.created', NULL, 'applied', '2020-01-01 00:00:00')",
    )
    .await;
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let retention_period = Duration::from_secs(30 * 86_400);

    // Another replica's round holds the maintenance lock.
    let mut other = AsyncPgConnection::establish(&app.test_db.url)
        .await
        .expect("connected");
    other
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7243018);")
        .await
        .expect("locked");
    let pruned = retention::prune(&app.db, retention_period, &stop)
        .await
        .expect("a round");
    assert_eq!(pruned, 0, "no second replica prunes at the same time");
    assert_eq!(app.processed_messages().await, 1);

    other.batch_execute("COMMIT").await.expect("unlocked");
    let pruned = retention::prune(&app.db, retention_period, &stop)
        .await
        .expect("a round");
    assert_eq!(pruned, 1);
    assert_eq!(app.processed_messages().await, 0);
}
