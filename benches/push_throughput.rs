//! A bulk role change pushed to a Clerk that enforces its rate limit: how
//! much of the push budget it uses, and how many 429s it draws.
//!
//! For 1 replica, 3 replicas, and 3 replicas with one killed (SIGKILL) 3 s
//! into the run and started again 2 s later, it starts `serve` processes
//! (the release binary, or `SERVICE_BIN`) on one fresh PostgreSQL database,
//! each with `CLERK_PUSH_RATE` = `BUDGET` (default 20), next to the Clerk
//! emulator enforcing `CLERK_LIMIT` requests per second to users (default
//! 25). One admin request changes the role of `USERS` users (default 300).
//! It prints, per run: the time from the admin's answer until Clerk held
//! the last of those roles, the share of the budget that is (the users
//! over the time times the budget), and Clerk's answers in that time (the
//! 429s among them).
//!
//! `cargo bench --bench push_throughput` (PostgreSQL from
//! `TEST_DATABASE_URL`); `RUNS` runs of each (default 1).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::clerk_emulator::{self, ClerkEmulator};
use testkit::instances::start_replicas;
use testkit::svix;
use testkit::test_db::{Backend, TestDb};

/// How long a run may take before it is reported as stuck.
const DEADLINE: Duration = Duration::from_secs(300);
/// When the replica of the kill scenario is killed, and how long it stays down.
const KILL_AT: Duration = Duration::from_secs(3);
const DOWN_FOR: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    replicas: usize,
    kill: bool,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "1 replica",
        replicas: 1,
        kill: false,
    },
    Scenario {
        name: "3 replicas",
        replicas: 3,
        kill: false,
    },
    Scenario {
        name: "3 replicas, one killed and restarted",
        replicas: 3,
        kill: true,
    },
];

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let budget = setting("BUDGET", 20);
    let limit = setting("CLERK_LIMIT", 25);
    let users = usize::try_from(setting("USERS", 300)).expect("a count");
    let runs = setting("RUNS", 1);
    let binary = std::env::var_os("SERVICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_clerk-role-sync")));
    println!(
        "binary: {}; CLERK_PUSH_RATE={budget} (the deployment's budget, given to each replica), Clerk allows {limit}/s, {users} users",
        binary.display()
    );
    for scenario in SCENARIOS {
        for _ in 0..runs {
            let db = TestDb::new(Backend::Postgres).await;
            run(&binary, &db.url, scenario, budget, limit, users).await;
        }
    }
}

async fn run(
    binary: &std::path::Path,
    database_url: &str,
    scenario: Scenario,
    budget: u64,
    limit: u64,
    count: usize,
) {
    let clerk = ClerkEmulator::start().await;
    let budget_env = budget.to_string();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url),
        ("CLERK_API_URL", clerk.url().as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RATE", budget_env.as_str()),
        ("RECONCILE_INTERVAL", "0"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let logs = tempfile::tempdir().expect("a log directory");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let mut replicas = start_replicas(
        binary,
        scenario.replicas,
        &env,
        logs.path(),
        &client,
        &clerk,
    )
    .await;
    clerk.add_user("user_admin", Some("ADMIN"));
    let users: Vec<String> = (0..count).map(|i| format!("user_bulk{i}")).collect();
    for user in &users {
        clerk.add_user(user, None);
    }
    clerk.wait_for_deliveries().await;

    clerk.enforce_rate_limit(
        usize::try_from(limit).expect("a limit"),
        Duration::from_secs(1),
    );
    let changes: Vec<_> = users
        .iter()
        .map(|user| json!({ "userId": user, "role": "INSTRUCTOR" }))
        .collect();
    let requests_before = clerk.requests().len();
    let started = Instant::now();
    let answer = client
        .post(replicas[scenario.replicas - 1].url("/api/admin/users/roles"))
        .bearer_auth(clerk.mint_token("user_admin"))
        .json(&json!({ "changes": changes }))
        .send()
        .await
        .expect("the bulk change answered");
    assert_eq!(
        answer.status(),
        200,
        "{}",
        answer.text().await.unwrap_or_default()
    );
    let answered = Instant::now();

    let mut killed_at = None;
    let mut restarted = false;
    let mut stuck = false;
    while !users
        .iter()
        .all(|user| clerk.role(user).as_deref() == Some("INSTRUCTOR"))
    {
        if scenario.kill {
            if killed_at.is_none() && answered.elapsed() >= KILL_AT {
                replicas[0].kill();
                killed_at = Some(Instant::now());
            }
            if !restarted && killed_at.is_some_and(|at| at.elapsed() >= DOWN_FOR) {
                replicas[0].start(&client).await;
                restarted = true;
            }
        }
        if answered.elapsed() > DEADLINE {
            stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Clerk's answers to the run's requests, and when the last role landed.
    let requests = clerk.requests();
    let run = &requests[requests_before..];
    let landed = run
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 200)
        .filter_map(|r| r.answered)
        .max()
        .unwrap_or_else(Instant::now);
    let took = landed.saturating_duration_since(answered);
    let rate_limited = run.iter().filter(|r| r.status == 429).count();
    let writes = run.iter().filter(|r| r.method == "PATCH").count();
    let reads = run.iter().filter(|r| r.method == "GET").count();
    let ideal = count as f64 / budget as f64;
    println!(
        "{:<38} {:>6.1} s (the budget allows {ideal:.1} s): {:>3.0}% of the budget; \
         Clerk answered {} requests ({writes} writes, {reads} reads), {rate_limited} of them 429{}; \
         admin answer in {:?}",
        scenario.name,
        took.as_secs_f64(),
        100.0 * ideal / took.as_secs_f64().max(f64::EPSILON),
        run.len(),
        if stuck { "; NOT ALL LANDED" } else { "" },
        answered.saturating_duration_since(started),
    );
    for replica in &mut replicas {
        replica.stop().await;
    }
}
