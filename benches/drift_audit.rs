//! Drift audit cost against the Clerk emulator (answering at once, no rate
//! limit, so that the service's own cost shows): 20,000 users taken in by a
//! backfill, then audited three times with nothing to repair (the daily
//! case), then once after 10% of the roles were changed and 1% of the
//! users deleted in Clerk with their webhooks lost. Prints users/s and the
//! requests each run sent to Clerk.
//!
//! `cargo bench --bench drift_audit` (SQLite in a temporary directory, and
//! PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clerk_role_sync::app::backfill::BackfillOptions;
use clerk_role_sync::clerk::ClerkClient;
use clerk_role_sync::config::Config;
use clerk_role_sync::db::Db;
use clerk_role_sync::db::rows::DriftAuditRow;
use clerk_role_sync::jobs::clerk_instance::InstanceGate;
use clerk_role_sync::jobs::drift_audit::{AuditSettings, DriftAudit, RunEnd};
use clerk_role_sync::jobs::{ClerkBudget, backfill};
use clerk_role_sync::metrics::Metrics;
use serde_json::json;
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::svix;
use testkit::test_db::{Backend, TestDb};

const USERS: usize = 20_000;
const RUNS: usize = 3;

#[tokio::main]
async fn main() {
    for (name, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
        let db = TestDb::new(backend).await;
        run(name, &db.url).await;
    }
}

async fn run(backend: &str, database_url: &str) {
    let clerk = ClerkEmulator::start().await;
    // No service listens: every change's webhook is lost.
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    for i in 0..USERS {
        clerk.add_user(&id(i), (i % 4 == 0).then_some("INSTRUCTOR"));
    }
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
    backfill::run(
        &db,
        &client,
        BackfillOptions::default(),
        &ClerkBudget::for_walks(db.clone(), 1_000.0, 1_000.0),
        true,
    )
    .await
    .expect("backfill");

    let mut in_sync = Vec::new();
    for _ in 0..RUNS {
        let (run, elapsed, requests) = audit(&db, &client, &clerk).await;
        assert_eq!(run.repaired, 0, "{run:?}");
        in_sync.push((elapsed, requests));
    }
    in_sync.sort();
    let (median, requests) = in_sync[RUNS / 2];
    println!(
        "{backend:8} in sync   {USERS} users in {median:.2?} (median of {RUNS}): {:.0} users/s, \
         {requests} requests to Clerk",
        USERS as f64 / median.as_secs_f64()
    );

    for i in (0..USERS).step_by(10) {
        clerk.edit_metadata(&id(i), json!({ "role": "ADMIN" }));
    }
    for i in (5..USERS).step_by(100) {
        clerk.delete_user(&id(i));
    }
    let (run, elapsed, requests) = audit(&db, &client, &clerk).await;
    println!(
        "{backend:8} drifted  {USERS} users in {elapsed:.2?}: {:.0} users/s, {requests} requests \
         to Clerk, {} roles and {} deletions repaired",
        USERS as f64 / elapsed.as_secs_f64(),
        run.found_role_differs,
        run.found_missing_in_clerk,
    );
}

/// One audit run: what it did, how long it took, how many requests it sent.
async fn audit(
    db: &Db,
    client: &ClerkClient,
    clerk: &ClerkEmulator,
) -> (DriftAuditRow, Duration, usize) {
    let settings = AuditSettings {
        interval: Duration::from_secs(3_600),
        rate_per_sec: 1_000.0,
        budget_per_sec: 1_000.0,
        max_wait: Duration::from_secs(600),
        allowance_ms: 2_000,
        // Every user Clerk deleted may go: the bench measures the repairs.
        max_deletions: 1_000_000,
    };
    let audit = DriftAudit::new(
        db.clone(),
        client.clone(),
        "bench".into(),
        settings,
        Arc::new(Metrics::new()),
        InstanceGate::confirm(db, client)
            .await
            .expect("the instance is confirmed"),
    );
    let before = clerk.requests().len();
    let started = Instant::now();
    let run = match audit.run_once().await.expect("the audit runs") {
        RunEnd::Finished(run) => run,
        RunEnd::Busy(held) => panic!("{held}"),
    };
    (run, started.elapsed(), clerk.requests().len() - before)
}

fn id(i: usize) -> String {
    format!("user_{i:06}")
}
