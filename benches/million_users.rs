//! A million users: `backfill` and `reconcile` run as an operator runs
//! them (the release binary, against the Clerk emulator answering at once
//! and a budget Clerk's pace does not bound), on SQLite and PostgreSQL,
//! each timed, with its peak resident memory; then the drift audit's
//! database side alone: the pages of Clerk's list read beforehand, applied
//! as the audit applies them, and the users its walk did not find sought.
//!
//! The backfill runs once (it fills the database); `reconcile` and the
//! database side run `BENCH_RUNS` times (default 3), and the median is
//! given, with the highest peak RSS.
//!
//! `cargo bench --bench million_users`. `BENCH_USERS` changes the number of
//! users (default 1,000,000), `BENCH_BACKENDS` the backends
//! (`sqlite,postgres`); PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clerk_role_sync::app::drift_audit::{self, Rules, RunMode};
use clerk_role_sync::clerk::{ClerkClient, ClerkUser};
use clerk_role_sync::config::Config;
use clerk_role_sync::db::{Db, Queries as _};
use clerk_role_sync::with_conn;
use testkit::clerk_emulator::{self, ClerkEmulator};
use testkit::test_db::{Backend, TestDb};

const PAGE: usize = 500;

#[tokio::main]
async fn main() {
    let users = number("BENCH_USERS", 1_000_000);
    let runs = number("BENCH_RUNS", 3).max(1);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let clerk = ClerkEmulator::start().await;
    let started = Instant::now();
    for i in 0..users {
        clerk.add_user(
            &format!("user_{i:07}"),
            (i % 10 == 0).then_some("INSTRUCTOR"),
        );
    }
    eprintln!("{users} users in the emulator in {:.1?}", started.elapsed());
    for backend in backends.split(',') {
        let (name, backend) = match backend.trim() {
            "sqlite" => ("SQLite", Backend::Sqlite),
            "postgres" => ("PostgreSQL", Backend::Postgres),
            other => panic!("BENCH_BACKENDS: no backend {other}"),
        };
        let db = TestDb::new(backend).await;
        let env = [
            ("DATABASE_URL", db.url.clone()),
            ("CLERK_API_URL", clerk.url()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY.to_owned()),
            ("CLERK_PUSH_RATE", "1000".to_owned()),
            ("RECONCILE_RATE_SHARE", "1".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        for (command, runs) in [("backfill", 1), ("reconcile", runs)] {
            let mut times = Vec::new();
            let mut peak_kib = 0;
            for _ in 0..runs {
                let (elapsed, peak) = run_command(command, &env);
                times.push(elapsed);
                peak_kib = peak_kib.max(peak);
            }
            let elapsed = median(times);
            println!(
                "{name:10} {command:9} {users} users in {:6.1} s (median of {runs}): {:7.0} users/s, \
                 peak RSS {:.1} MiB",
                elapsed.as_secs_f64(),
                users as f64 / elapsed.as_secs_f64(),
                peak_kib as f64 / 1024.0,
            );
        }
        database_side(name, &env, users, runs).await;
    }
}

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

/// Runs `clerk-role-sync <command> --rate 1000` to its end (it must
/// succeed: `reconcile` finds no drift); how long it took and its peak RSS
/// in KiB.
fn run_command(command: &str, env: &[(&str, String)]) -> (Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clerk-role-sync"))
        .args([command, "--rate", "1000"])
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .expect("the command starts");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let exit = loop {
        if let Some(kib) = high_water_mark(Path::new(&status)) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(exit) = child.try_wait().expect("the command is waited for") {
            break exit;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{command} failed: {exit}");
    (started.elapsed(), peak_kib)
}

/// `VmHWM` (the peak RSS so far) of the process whose status file this is.
fn high_water_mark(status: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(status).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The drift audit's database side: every page of Clerk's list read first,
/// then applied page by page as `serve`'s audit applies them (users in
/// sync: nothing to repair), then the users its walk did not find sought.
async fn database_side(name: &str, env: &[(&str, String)], users: usize, runs: usize) {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("valid configuration");
    let db = Db::connect(&config.database, 2).await.expect("database");
    let client =
        ClerkClient::new(config.clerk.connection().expect("a secret key")).expect("client");
    let mut pages: Vec<Vec<ClerkUser>> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .list_users(PAGE, after.as_deref())
            .await
            .expect("a page");
        after = page.last().map(|user| user.id.clone());
        let last = page.len() < PAGE;
        pages.push(page);
        if last {
            break;
        }
    }
    let rules = Rules {
        mode: RunMode::Audit,
        allowance_ms: 2_000,
    };
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(audit_pages(&db, &pages, rules).await);
    }
    let (elapsed, walked, sketched) = median(times);
    println!(
        "{name:10} audit, database side: {users} users in {:.1} s (median of {runs}; {:.1} s the \
         walk's pages, {:.1} s the sketch of the users here, {:.1} s the scan for the users it \
         did not find): {:.0} users/s",
        elapsed.as_secs_f64(),
        walked.as_secs_f64(),
        sketched.as_secs_f64(),
        (elapsed - walked - sketched).as_secs_f64(),
        users as f64 / elapsed.as_secs_f64(),
    );
}

/// One run of the audit over `pages` (users in sync): how long it took in
/// all, its walk, and its sketch of the users here.
async fn audit_pages(
    db: &Db,
    pages: &[Vec<ClerkUser>],
    rules: Rules,
) -> (Duration, Duration, Duration) {
    let started = Instant::now();
    let mut run = with_conn!(db, conn => {
        let now = conn.clock().await?;
        drift_audit::start(conn, "bench", now, RunMode::Audit).await
    })
    .expect("a run");
    let mut listed = drift_audit::IdSketch::default();
    for (i, page) in pages.iter().enumerate() {
        let last = i + 1 == pages.len();
        let (next, found, findings) = with_conn!(db, conn => {
            drift_audit::apply_page(conn, &run, &listed, page, last, rules).await
        })
        .expect("a page applied");
        assert!(findings.is_empty(), "in sync: {findings:?}");
        run = next;
        listed = found;
    }
    let walked = started.elapsed();
    let difference = with_conn!(db, conn => drift_audit::unfound(conn, &listed).await)
        .expect("the live users sketched");
    let sketched = started.elapsed() - walked;
    let unfound = with_conn!(db, conn => {
        drift_audit::unfound_users(conn, &run, &difference, 50).await
    })
    .expect("the users the walk did not find");
    assert!(unfound.is_empty(), "in sync: {unfound:?}");
    (started.elapsed(), walked, sketched)
}
