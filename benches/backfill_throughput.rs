//! Backfill throughput (users/s) against the Clerk emulator: without a rate
//! limit, and paced at a development instance's limit (100 requests / 10 s).
//!
//! `cargo bench --bench backfill_throughput` (SQLite in a temporary
//! directory, and PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::HashMap;
use std::time::Instant;

use clerk_role_sync::app::backfill::BackfillOptions;
use clerk_role_sync::clerk::ClerkClient;
use clerk_role_sync::config::Config;
use clerk_role_sync::db::Db;
use clerk_role_sync::jobs::{ClerkBudget, backfill};
use testkit::clerk_emulator::{self, ClerkEmulator};
use testkit::test_db::{Backend, TestDb};

const USERS: usize = 20_000;

#[tokio::main]
async fn main() {
    let clerk = ClerkEmulator::start().await;
    for i in 0..USERS {
        let role = match i % 4 {
            0 => Some("INSTRUCTOR"),
            1 => Some("ADMIN"),
            _ => None,
        };
        clerk.add_user(&format!("user_{i:06}"), role);
    }
    for (limit, rate) in [("no limit", 1_000.0), ("100 req / 10 s", 10.0)] {
        for (name, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
            let db = TestDb::new(backend).await;
            run(&clerk, name, &db.url, limit, rate).await;
        }
    }
}

async fn run(clerk: &ClerkEmulator, backend: &str, database_url: &str, limit: &str, rate: f64) {
    let clerk_url = clerk.url();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("DATABASE_URL", database_url),
        ("CLERK_API_URL", clerk_url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("valid configuration");
    let db = Db::connect(&config.database, 2).await.expect("database");
    db.migrate().await.expect("migrations");
    let client =
        ClerkClient::new(config.clerk.connection().expect("a secret key")).expect("client");

    let started = Instant::now();
    let done = backfill::run(
        &db,
        &client,
        BackfillOptions::default(),
        &ClerkBudget::for_walks(db.clone(), rate, rate),
        true,
    )
    .await
    .expect("backfill");
    let elapsed = started.elapsed();
    assert_eq!(done.seen, USERS as i64);
    println!(
        "{backend:8} {limit:16} {USERS} users in {:.2?}: {:.0} users/s",
        elapsed,
        USERS as f64 / elapsed.as_secs_f64()
    );
}
