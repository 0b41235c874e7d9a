//! The binary itself: configuration refusals, `openapi`, `set-role`, shutdown.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_clerk-role-sync");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn malformed_configuration_is_a_clear_start_up_error() {
    for (variable, value) in [
        ("BIND_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("DATABASE_URL", "postgres://"),
        ("LOG_FORMAT", "xml"),
        ("CLERK_PUBLISHABLE_KEY", "nonsense"),
        ("CLERK_WEBHOOK_SECRET", "whsec_not*base64"),
    ] {
        let output = run(&["serve"], &[(variable, value)]);

        assert_eq!(output.status.code(), Some(1), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn unreachable_postgres_is_a_clear_start_up_error() {
    let output = run(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")],
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
}

#[test]
fn openapi_prints_the_committed_document() {
    let output = run(&["openapi"], &[]);

    assert!(output.status.success());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .unwrap_or_default();
    assert!(String::from_utf8_lossy(&output.stdout) == committed);
}

#[test]
fn set_role_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());

    let bad_role = run(&["set-role", "user_1", "OWNER"], &[("DATABASE_URL", &url)]);
    assert_eq!(bad_role.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("invalid role"));

    let bad_id = run(&["set-role", "user 1", "ADMIN"], &[("DATABASE_URL", &url)]);
    assert_eq!(bad_id.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("invalid user id"));
}

async fn set_role_then_read_back(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let env = [("DATABASE_URL", test_db.url.as_str())];

    let first = run(&["set-role", "user_boot", "admin"], &env);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        "user_boot created with role ADMIN\n"
    );

    let again = run(&["set-role", "user_boot", "ADMIN"], &env);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "user_boot already has role ADMIN\n"
    );

    let demote = run(&["set-role", "user_boot", "STUDENT"], &env);
    assert!(demote.status.success());
    assert_eq!(
        String::from_utf8_lossy(&demote.stdout),
        "user_boot: ADMIN -> STUDENT\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_creates_then_changes_a_user_on_postgres() {
    set_role_then_read_back(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_creates_then_changes_a_user_on_sqlite() {
    set_role_then_read_back(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_server_down_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the service starts");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        if health.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.path().join("clerk-role-sync.db").exists(),
        "the default SQLite file"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}
