//! `spawn_app()`: the real service on port 0 over a fresh database of either
//! backend, and typed helpers to talk to it.

use std::collections::HashMap;
use std::sync::Arc;

use clerk_role_sync::config::Config;
use clerk_role_sync::db::rows::{RoleChangeRow, RoleStats, UserRow};
use clerk_role_sync::db::{Db, DbError, Queries};
use clerk_role_sync::domain::{ClerkUserId, Role};
use clerk_role_sync::jobs::allowance_ms;
use clerk_role_sync::jobs::clerk_instance::InstanceGate;
use clerk_role_sync::jobs::drift_audit::{AuditSettings, DriftAudit};
use clerk_role_sync::metrics::Metrics;
use clerk_role_sync::startup::{AppHandle, Application, audit_settings, clerk_client};
use clerk_role_sync::with_conn;
use diesel_async::SimpleAsyncConnection;
use serde_json::Value;

use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::svix;
pub use testkit::test_db::{Backend, TestDb};

/// The service under test, with a handle on its database.
pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<port>` of `/metrics` when `METRICS_BIND_ADDR` is set.
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    pub db: Db,
    pub test_db: TestDb,
    config: Config,
    server: AppHandle,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The running service's Clerk instance gate.
    pub clerk_instance: InstanceGate,
}

/// Configuration for a test service: port 0, a small pool, plus `extra`.
pub fn test_config(test_db: &TestDb, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), test_db.url.clone()),
        ("BIND_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_MAX_CONNECTIONS".into(), "3".into()),
        ("CLERK_WEBHOOK_SECRET".into(), svix::TEST_SECRET.into()),
        // Tests that audit turn it on, or run it themselves.
        ("RECONCILE_INTERVAL".into(), "0".into()),
        // Tests that hold locks to catch the service waiting on them hold
        // them for as long as they look; the lock timeout has its own test.
        ("DATABASE_LOCK_TIMEOUT_MS".into(), "60000".into()),
    ]);
    for (key, value) in extra {
        vars.insert((*key).into(), (*value).into());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid test configuration")
}

/// A user id the test knows is well formed.
pub fn user_id(value: &str) -> ClerkUserId {
    ClerkUserId::parse(value).expect("a well-formed user id")
}

/// Starts the real service on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app`], with extra environment variables.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let test_db = TestDb::new(backend).await;
    let config = test_config(&test_db, extra);
    let (address, metrics_address, server, running, clerk_instance) = start(&config).await;
    let db = Db::connect(&config.database, 2)
        .await
        .expect("test connection");
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client"),
        db,
        test_db,
        config,
        server,
        running,
        clerk_instance,
    }
}

/// A started service: its address, its metrics address, a handle to stop
/// it, the task serving it, and its Clerk instance gate.
type Started = (
    String,
    Option<String>,
    AppHandle,
    tokio::task::JoinHandle<std::io::Result<()>>,
    InstanceGate,
);

async fn start(config: &Config) -> Started {
    let app = Application::build(config.clone())
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let server = app.handle();
    let clerk_instance = app.clerk_instance();
    (
        address,
        metrics_address,
        server,
        tokio::spawn(app.run_until_stopped()),
        clerk_instance,
    )
}

/// A test's service stops with it: otherwise its server, push worker and
/// pools would run on until the test binary ends (1,000 convergence
/// schedules would leave 1,000 services running in one process).
impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.stop_now();
    }
}

impl TestApp {
    /// Stops the service gracefully (a push in flight finishes) and starts
    /// it again on the same database, on a new port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Stops the service gracefully; [`start`](Self::start) brings it back.
    pub async fn stop(&mut self) {
        self.server.stop(true).await;
        (&mut self.running).await.expect("joined").expect("served");
    }

    /// Starts the stopped service again on the same database, on a new port.
    pub async fn start(&mut self) {
        let (address, metrics_address, server, running, clerk_instance) = start(&self.config).await;
        self.address = address;
        self.metrics_address = metrics_address;
        self.server = server;
        self.running = running;
        self.clerk_instance = clerk_instance;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Posts `body` to the webhook, signed now with the test secret under a
    /// fresh message id.
    pub async fn post_webhook(&self, body: &Value) -> reqwest::Response {
        self.post_webhook_as(&svix::message_id(), body).await
    }

    /// Posts `body` to the webhook as message `id`, signed now.
    pub async fn post_webhook_as(&self, id: &str, body: &Value) -> reqwest::Response {
        post_signed(&self.client, &self.url("/api/webhooks/clerk"), id, body)
            .await
            .expect("request sent")
    }

    /// Posts exactly these headers and bytes to the webhook.
    pub async fn post_raw_webhook(
        &self,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/webhooks/clerk"))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("request sent")
    }

    /// A drift audit over this service's database and Clerk, as replica
    /// `owner` would run it, for the test to run (`run_once`); with the
    /// metrics it counts in. It waits behind the service's own Clerk
    /// instance gate.
    pub fn drift_audit(&self, owner: &str) -> (DriftAudit, Arc<Metrics>) {
        self.drift_audit_with(owner, |_| {})
    }

    /// Like [`drift_audit`](Self::drift_audit), with its settings changed
    /// by `tweak`.
    pub fn drift_audit_with(
        &self,
        owner: &str,
        tweak: impl FnOnce(&mut AuditSettings),
    ) -> (DriftAudit, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let client = clerk_client(&self.config)
            .expect("a Clerk client")
            .expect("CLERK_SECRET_KEY is set");
        let allowance = allowance_ms(self.config.clerk.push.clock_skew_allowance);
        let mut settings = AuditSettings {
            rate_per_sec: 1_000.0,
            budget_per_sec: 1_000.0,
            ..audit_settings(
                &self.config,
                std::time::Duration::from_secs(3_600),
                allowance,
            )
        };
        tweak(&mut settings);
        let audit = DriftAudit::new(
            self.db.clone(),
            client,
            owner.to_owned(),
            settings,
            Arc::clone(&metrics),
            self.clerk_instance.clone(),
        );
        (audit, metrics)
    }

    /// A user row straight from the database (deleted ones too).
    pub async fn user(&self, id: &str) -> Option<UserRow> {
        let found: Result<_, DbError> =
            with_conn!(self.db, conn => Ok(conn.find_user(&user_id(id)).await?));
        found.expect("query users")
    }

    /// A user's role changes in the audit log, oldest first, as `old->new`.
    pub async fn audit_trail(&self, id: &str) -> Vec<String> {
        let mut rows: Vec<String> = self
            .history(id)
            .await
            .into_iter()
            .map(|row| {
                let from = row.old_role.map_or("none", Role::as_str);
                let to = row.new_role.map_or("none", Role::as_str);
                format!("{from}->{to}")
            })
            .collect();
        rows.reverse();
        rows
    }

    /// A user's audit rows, newest first.
    pub async fn history(&self, id: &str) -> Vec<RoleChangeRow> {
        let rows: Result<_, DbError> =
            with_conn!(self.db, conn => Ok(conn.role_history(&user_id(id), None, i64::MAX).await?));
        rows.expect("query role_changes")
    }

    /// The dashboard counts.
    pub async fn stats(&self) -> RoleStats {
        let stats: Result<_, DbError> =
            with_conn!(self.db, conn => Ok::<_, DbError>(conn.role_stats().await?));
        stats.expect("query role_counts")
    }

    /// Runs SQL directly (test set-up and fault injection).
    pub async fn execute(&self, sql: &str) {
        let done: Result<(), DbError> =
            with_conn!(self.db, conn => Ok(conn.batch_execute(sql).await?));
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// How many Svix messages are recorded as processed.
    pub async fn processed_messages(&self) -> i64 {
        use clerk_role_sync::db::schema::webhook_events;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let count: Result<i64, DbError> = with_conn!(self.db, conn => {
            Ok(webhook_events::table.count().get_result(conn).await?)
        });
        count.expect("query webhook_events")
    }

    /// The recorded outcome of one message.
    pub async fn message_outcome(&self, svix_id: &str) -> Option<String> {
        use clerk_role_sync::db::schema::webhook_events;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let outcome: Result<Option<String>, DbError> = with_conn!(self.db, conn => {
            Ok(webhook_events::table
                .find(svix_id)
                .select(webhook_events::outcome)
                .first(conn)
                .await
                .optional()?)
        });
        outcome.expect("query webhook_events")
    }
}

/// Posts `body` to webhook endpoint `url` as message `id`, signed now with
/// the test secret.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let body = serde_json::to_vec(body).expect("serializable");
    let timestamp = svix::now();
    let signature = svix::sign(svix::TEST_SECRET, id, timestamp, &body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(body)
        .send()
        .await
}

/// Starts the Clerk emulator and the service wired to it: pushes go to the
/// emulator, its webhooks come back (delivered at once), session tokens are
/// checked against its JWKS. Retries are fast so that tests stay short.
pub async fn spawn_synced_app(backend: Backend) -> (TestApp, ClerkEmulator) {
    spawn_synced_app_with(backend, &[]).await
}

/// Like [`spawn_synced_app`], with extra environment variables.
pub async fn spawn_synced_app_with(
    backend: Backend,
    extra: &[(&str, &str)],
) -> (TestApp, ClerkEmulator) {
    let clerk = ClerkEmulator::start().await;
    let url = clerk.url();
    let mut vars = vec![
        ("CLERK_API_URL", url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_AUTHORIZED_PARTIES", clerk_emulator::AUTHORIZED_PARTY),
        ("CLERK_PUSH_RATE", "200"),
        ("CLERK_PUSH_RETRY_BASE_MS", "50"),
        ("CLERK_JWKS_REFRESH_SECS", "1"),
    ];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(backend, &vars).await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );
    (app, clerk)
}

/// Asserts that every role's counter equals a recount of its live users.
pub async fn assert_counters_match_a_recount(db: &Db) {
    #[derive(diesel::QueryableByName)]
    struct RoleCount {
        #[diesel(sql_type = diesel::sql_types::Text)]
        role: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        counted: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        recounted: i64,
    }
    use diesel_async::RunQueryDsl as _;
    let counts: Result<Vec<RoleCount>, DbError> = with_conn!(db, conn => {
        Ok(diesel::sql_query(
            "SELECT c.role, \
             CAST((SELECT sum(count) FROM role_counts WHERE role = c.role) AS BIGINT) AS counted, \
             (SELECT count(*) FROM users WHERE role = c.role AND deleted_at IS NULL) AS recounted \
             FROM (SELECT DISTINCT role FROM role_counts) AS c",
        )
        .load(conn)
        .await?)
    });
    for count in counts.expect("counts") {
        assert_eq!(
            count.counted, count.recounted,
            "{}: counters equal a recount",
            count.role
        );
    }
}

/// The deadlocks PostgreSQL has detected in the current database.
pub async fn deadlocks(db: &Db) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl as _;
    let deadlocks: Result<Count, DbError> = with_conn!(db, conn => {
        Ok(diesel::sql_query(
            "SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()",
        )
        .get_result(conn)
        .await?)
    });
    deadlocks.expect("deadlocks").n
}

/// A transaction of the test's own that keeps the service's writes to the
/// role counters waiting (on PostgreSQL a lock on `role_counts`, taken after
/// a batch has written its users; on SQLite the database's write lock, which
/// every write takes first) until it is released.
pub struct HeldWrites {
    release: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldWrites {
    /// Takes the lock on a connection of `db` (hold it for less than
    /// SQLite's busy timeout, 5 s, or the writes it holds fail).
    pub async fn take(db: &Db) -> Self {
        Self::hold(db, "BEGIN; LOCK TABLE role_counts IN EXCLUSIVE MODE".into()).await
    }

    /// Like [`take`](Self::take), but on PostgreSQL it holds user `id`'s
    /// row instead: a batch with an event of that user waits before it
    /// writes anything.
    pub async fn take_user(db: &Db, id: &str) -> Self {
        let lock = format!("BEGIN; SELECT 1 FROM users WHERE id = '{id}' FOR UPDATE");
        Self::hold(db, lock).await
    }

    async fn hold(db: &Db, postgres: String) -> Self {
        let (locked, on_locked) = tokio::sync::oneshot::channel();
        let (release, on_release) = tokio::sync::oneshot::channel::<()>();
        let begin = match db.backend() {
            clerk_role_sync::db::Backend::Postgres => postgres,
            clerk_role_sync::db::Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
        };
        let db = db.clone();
        let task = tokio::spawn(async move {
            let held: Result<(), DbError> = with_conn!(db, conn => {
                conn.batch_execute(&begin).await?;
                let _ = locked.send(());
                let _ = on_release.await;
                conn.batch_execute("COMMIT").await?;
                Ok(())
            });
            held.expect("the held transaction commits");
        });
        on_locked.await.expect("the lock is taken");
        Self { release, task }
    }

    /// Lets the waiting writes through.
    pub async fn release(self) {
        let _ = self.release.send(());
        self.task.await.expect("the held transaction ends");
    }
}

/// The value of one sample in a Prometheus text page (`name` with its
/// labels, as printed), or 0 when absent.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 20 ms until it holds; fails the test after 20 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// A request with `Authorization: Bearer <token>`.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `POST /api/admin/users/roles` with `{"changes": changes}`.
    pub async fn post_role_changes(&self, token: &str, changes: Value) -> reqwest::Response {
        self.authed(reqwest::Method::POST, "/api/admin/users/roles", token)
            .json(&serde_json::json!({ "changes": changes }))
            .send()
            .await
            .expect("request sent")
    }

    /// `PATCH /api/admin/users/{id}` with `{"role": role}`.
    pub async fn patch_role(&self, token: &str, id: &str, role: &str) -> reqwest::Response {
        self.authed(
            reqwest::Method::PATCH,
            &format!("/api/admin/users/{id}"),
            token,
        )
        .json(&serde_json::json!({ "role": role }))
        .send()
        .await
        .expect("request sent")
    }

    /// An authenticated GET, expecting 200 and JSON.
    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        let response = self
            .authed(reqwest::Method::GET, path, token)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The user as the API shows it (including `sync`).
    pub async fn api_user(&self, token: &str, id: &str) -> Value {
        self.get_json(token, &format!("/api/admin/users/{id}"))
            .await
    }
}

/// The `outcome` of a webhook answer, checking it is a 200.
pub async fn outcome(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, 200, "{body}");
    body["outcome"].as_str().expect("an outcome").to_owned()
}

/// Reads a problem+json body, checking the envelope on the way.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    body
}

/// Runs each named `async fn name(backend: Backend)` of the calling module as
/// two tests, `name::postgres` and `name::sqlite`: `both_backends!(name, ...)`.
/// The bodies stay ordinary functions, which rustfmt formats.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
        }
    )+};
}

/// A backfill refused because `holder` walks Clerk's users: it failed,
/// named the walker, and read nothing from Clerk.
pub fn assert_backfill_refused_by_walk(
    refused: &std::process::Output,
    holder: &str,
    clerk: &ClerkEmulator,
) {
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{holder} is walking Clerk's users")),
        "{stderr}"
    );
    assert!(
        !clerk
            .requests()
            .iter()
            .any(|request| request.path == "/v1/users"),
        "the refused backfill did not read Clerk"
    );
}
