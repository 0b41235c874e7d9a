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
use clerk_role_sync::sync::backfill;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

#[expect(dead_code, reason = "the bench uses a part of the test support")]
#[path = "../tests/support/mod.rs"]
mod support;

use support::clerk_emulator::{self, ClerkEmulator};

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
    let pg_admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = AsyncPgConnection::establish(&pg_admin)
        .await
        .expect("PostgreSQL");

    for (limit, rate) in [("no limit", 1_000.0), ("100 req / 10 s", 10.0)] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
        run(&clerk, "sqlite", &sqlite, limit, rate).await;

        let name = format!("crs_bench_backfill_{}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        let mut url = url::Url::parse(&pg_admin).expect("a URL");
        url.set_path(&name);
        run(&clerk, "postgres", url.as_str(), limit, rate).await;
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .expect("drop");
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
    let done = backfill::run(&db, &client, BackfillOptions::default(), rate, true)
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
