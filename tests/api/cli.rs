//! The binary itself: configuration refusals, start-up warnings and
//! errors, `help`, `openapi`, `set-role`, logs, shutdown.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestDb};
use testkit::clerk_emulator::{self, ClerkEmulator, SECRET_KEY};
use testkit::test_db::test_database_url;

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

        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
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

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
}

#[test]
fn a_missing_postgres_database_is_named_with_how_to_create_it() {
    let mut url = url::Url::parse(&test_database_url()).expect("TEST_DATABASE_URL is a URL");
    let name = format!("crs_missing_{}", std::process::id());
    url.set_path(&name);

    for args in [
        &["migrate"][..],
        &["serve"],
        &["set-role", "user_1", "ADMIN"],
    ] {
        let output = run(args, &[("DATABASE_URL", url.as_str())]);

        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("the database \"{name}\" does not exist")),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "`createdb -h {}",
                url.host_str().unwrap_or_default()
            )) && stderr.contains(&format!(" {name}`")),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("CREATE DATABASE \"{name}\"")),
            "{args:?}: {stderr}"
        );
        if let Some(password) = url.password() {
            assert!(!stderr.contains(password), "the password is never shown");
        }
    }
}

#[test]
fn a_sqlite_directory_that_cannot_be_made_is_named_and_a_missing_one_is_made() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").expect("write a file");
    let under_a_file = file.join("data");

    let refused = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            &format!("sqlite://{}/db.sqlite", under_a_file.display()),
        )],
    );

    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "the directory {} of the SQLite file does not exist",
            under_a_file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} is a file, not a directory", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("mkdir -p {}", under_a_file.display())),
        "{stderr}"
    );

    // A directory that is only missing is made, with the file.
    let nested = dir.path().join("new").join("nested").join("db.sqlite");
    let made = run(
        &["migrate"],
        &[("DATABASE_URL", &format!("sqlite://{}", nested.display()))],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(nested.exists());
}

#[test]
fn help_help_prints_help_and_succeeds() {
    let output = run(&["help", "--help"], &[]);

    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Usage: clerk-role-sync help"), "{stdout}");
    assert!(
        stdout.contains("Print this message or the help of the given subcommand(s)"),
        "{stdout}"
    );

    // `help [COMMAND]` prints what `[COMMAND] --help` prints.
    for (asked, same_as) in [
        (&["help"][..], &["--help"][..]),
        (&["help", "serve"], &["serve", "--help"]),
        (&["help", "help"], &["help", "--help"]),
    ] {
        let asked_output = run(asked, &[]);
        assert!(asked_output.status.success(), "{asked:?}");
        assert_eq!(
            String::from_utf8_lossy(&asked_output.stdout),
            String::from_utf8_lossy(&run(same_as, &[]).stdout),
            "{asked:?}"
        );
    }
    let unknown = run(&["help", "nonsense"], &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nonsense"));
}

#[test]
fn pretty_logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());

    // A configuration warning is logged by every command.
    let output = run(
        &["migrate"],
        &[
            ("DATABASE_URL", &url),
            ("LOG_FORMAT", "pretty"),
            ("CLERK_API_VERSION", "v1"),
        ],
    );

    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("WARN") && line.contains("CLERK_API_VERSION")),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "ANSI escape codes: {stderr:?}");
}

#[test]
fn openapi_prints_the_committed_document() {
    assert_prints_the_committed("openapi", "openapi.yaml");
}

#[test]
fn env_example_prints_the_committed_file() {
    assert_prints_the_committed("env-example", ".env.example");
}

/// `command` succeeds and prints exactly the committed `file`.
fn assert_prints_the_committed(command: &str, file: &str) {
    let output = run(&[command], &[]);

    assert!(output.status.success());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&output.stdout) == committed,
        "{file} is not what `{command}` prints"
    );
}

#[test]
fn set_role_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());

    let bad_role = run(&["set-role", "user_1", "OWNER"], &[("DATABASE_URL", &url)]);
    assert_eq!(bad_role.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("invalid role"));

    let bad_id = run(&["set-role", "user 1", "ADMIN"], &[("DATABASE_URL", &url)]);
    assert_eq!(bad_id.status.code(), Some(2));
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

/// A `serve` process on a free port in its own folder, healthy.
struct Served {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service starts");
        let served = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.get("/healthz").await.map(|r| r.status()) != Some(reqwest::StatusCode::OK) {
            assert!(
                Instant::now() < deadline,
                "the service never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }

    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()
    }

    /// SIGTERM, then the exit status and everything written to stderr.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
        }
        (status, stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_server_down_cleanly() {
    let served = Served::start(&[]).await;
    assert!(
        served.dir.path().join("clerk-role-sync.db").exists(),
        "the default SQLite file"
    );

    let (status, stderr) = served.terminate().await;
    assert!(status.success(), "exit status {status:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_of_an_admin_api_without_keys_and_of_an_unchecked_azp() {
    let served = Served::start(&[]).await;

    let (status, stderr) = served.terminate().await;
    assert!(status.success(), "{stderr}");
    let warned = |words: &[&str]| {
        stderr
            .lines()
            .any(|line| line.contains("WARN") && words.iter().all(|word| line.contains(word)))
    };
    assert!(
        warned(&[
            "CLERK_JWT_KEY",
            "CLERK_SECRET_KEY",
            "503",
            "set CLERK_SECRET_KEY"
        ]),
        "{stderr}"
    );
    assert!(
        warned(&["CLERK_AUTHORIZED_PARTIES", "`azp` is not checked", "set it"]),
        "{stderr}"
    );

    // With a key and the parties set, neither is said.
    let served = Served::start(&[
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_AUTHORIZED_PARTIES", "https://admin.example.com"),
    ])
    .await;
    let (status, stderr) = served.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("CLERK_JWT_KEY"), "{stderr}");
    assert!(!stderr.contains("CLERK_AUTHORIZED_PARTIES"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let served = Served::start(&[("LOG_FORMAT", "json")]).await;
    let response = served.get("/readyz").await.expect("answered");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let (status, stderr) = served.terminate().await;
    assert!(status.success());
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line.is_object() && line["level"].is_string())
    );
    let logged = lines
        .iter()
        .find(|line| line.to_string().contains(&request_id))
        .unwrap_or_else(|| panic!("no line with {request_id}: {stderr}"));
    assert_eq!(logged["status"], 200, "{logged}");
    assert_eq!(
        logged["span"]["request_id"],
        request_id.as_str(),
        "{logged}"
    );
}

#[test]
fn dot_env_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join(".env"), "LOG_FORMAT=xml\n").expect("write .env");
    let serve = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .arg("migrate")
            .current_dir(dir.path())
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("the binary runs")
    };

    // The value in .env is read (and refused)...
    let from_file = serve(&[]);
    assert_eq!(from_file.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&from_file.stderr).contains("LOG_FORMAT"));
    // ...unless the environment sets the variable.
    let from_env = serve(&[("LOG_FORMAT", "json")]);
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );

    // A .env that cannot be parsed names itself.
    std::fs::write(dir.path().join(".env"), "LOG_FORMAT='unterminated\n").expect("write .env");
    let malformed = serve(&[("LOG_FORMAT", "json")]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains(".env"));
}

#[test]
fn help_lists_every_variable_with_its_default() {
    for args in [&["--help"][..], &["serve", "--help"]] {
        let output = run(args, &[]);
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for variable in clerk_role_sync::config::VARIABLES {
            assert!(
                help.contains(variable.name()),
                "{args:?} lacks {}",
                variable.name()
            );
            assert!(
                help.contains(&format!("[default: {}]", variable.default().shown())),
                "{args:?}: {}",
                variable.name()
            );
        }
    }
}

/// A Clerk emulator and a SQLite database, for the commands that need both.
struct WithClerk {
    clerk: ClerkEmulator,
    db: TestDb,
    api_url: String,
}

impl WithClerk {
    async fn start() -> Self {
        let clerk = ClerkEmulator::start().await;
        let api_url = clerk.url();
        let db = TestDb::new(Backend::Sqlite).await;
        Self { clerk, db, api_url }
    }

    fn env(&self) -> [(&str, &str); 3] {
        [
            ("DATABASE_URL", self.db.url.as_str()),
            ("CLERK_SECRET_KEY", SECRET_KEY),
            ("CLERK_API_URL", self.api_url.as_str()),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exits_0_in_sync_1_on_drift_and_2_on_an_error() {
    let with_clerk = WithClerk::start().await;
    let (clerk, env) = (&with_clerk.clerk, with_clerk.env());
    clerk.add_user("user_r1", Some("INSTRUCTOR"));
    assert!(run(&["backfill"], &env).status.success());

    let in_sync = run(&["reconcile"], &env);
    assert_eq!(
        in_sync.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&in_sync.stderr)
    );

    // The dashboard demotes the user; no webhook comes.
    clerk.edit_metadata("user_r1", serde_json::json!({"role": "STUDENT"}));
    let drift = run(&["reconcile"], &env);
    assert_eq!(drift.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&drift.stdout).contains("user_r1"));
    assert!(String::from_utf8_lossy(&drift.stderr).contains("1 users still differ"));

    let fixed = run(&["reconcile", "--fix"], &env);
    assert_eq!(
        fixed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fixed.stderr)
    );
    assert_eq!(run(&["reconcile"], &env).status.code(), Some(0));

    // A key Clerk refuses (rotated, say) is an error, not drift.
    let refused = [env[0], ("CLERK_SECRET_KEY", "sk_test_rotated"), env[2]];
    let error = run(&["reconcile"], &refused);
    let stderr = String::from_utf8_lossy(&error.stderr);
    assert_eq!(error.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("error: ")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_fix_deletes_past_the_budget_only_when_told_how_many() {
    let with_clerk = WithClerk::start().await;
    let (clerk, env) = (&with_clerk.clerk, with_clerk.env());
    let ids: Vec<String> = (0..25).map(|i| format!("user_b{i:02}")).collect();
    for id in &ids {
        clerk.add_user(id, None);
    }
    assert!(run(&["backfill"], &env).status.success());
    // Twelve leave Clerk; their `user.deleted` never arrives.
    for id in &ids[..12] {
        clerk.delete_user(id);
    }

    let held = run(&["reconcile", "--fix"], &env);
    let stdout = String::from_utf8_lossy(&held.stdout);
    assert_eq!(held.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("nothing was deleted or demoted"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("held: user_b").count(), 12, "{stdout}");
    assert!(
        stdout.contains("reconcile --fix --max-deletions 12"),
        "{stdout}"
    );
    let report = run(&["reconcile"], &env);
    assert_eq!(report.status.code(), Some(1), "the twelve are still here");

    let fixed = run(&["reconcile", "--fix", "--max-deletions", "12"], &env);
    let stdout = String::from_utf8_lossy(&fixed.stdout);
    assert_eq!(fixed.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("12 drifted, 12 fixed"), "{stdout}");
    assert_eq!(run(&["reconcile"], &env).status.code(), Some(0));

    // --max-deletions only means something with --fix.
    let refused = run(&["reconcile", "--max-deletions", "12"], &env);
    assert_eq!(refused.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_change_is_never_logged_as_made() {
    let with_clerk = WithClerk::start().await;
    let (clerk, env) = (&with_clerk.clerk, with_clerk.env());
    clerk.add_user("user_l1", Some("ADMIN"));

    // A dry run applies each page in a transaction and rolls it back.
    let dry_run = run(&["backfill", "--dry-run"], &env);
    let stderr = String::from_utf8_lossy(&dry_run.stderr);
    assert!(dry_run.status.success(), "{stderr}");
    assert!(!stderr.contains("role changed"), "{stderr}");

    let applied = run(&["backfill"], &env);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "{stderr}");
    assert_eq!(stderr.matches("role changed").count(), 1, "{stderr}");
    assert!(stderr.contains("user_l1"), "{stderr}");
}
