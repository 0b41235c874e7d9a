//! Replicas whose clocks differ: leases, due times and claim expiry are
//! the database's clock, so a replica running a minute ahead
//! (`CLOCK_OFFSET_SECS`, the test-only offset of a replica's clock) takes
//! over no push in flight, delays no push, and walks no user list beside
//! another walk.

use std::time::{Duration, Instant};

use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::Db;
use clerk_role_sync::jobs::walk_lease::WalkLease;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestDb, metric, wait_until};
use crate::replicas::replica_env;
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::instances::Instance;
use testkit::svix;

const USERS: [&str; 6] = [
    "user_c0", "user_c1", "user_c2", "user_c3", "user_c4", "user_c5",
];

/// Two replicas on one PostgreSQL database, `replica-ahead` a minute ahead
/// of `replica-on-time`; Clerk takes 3 s for every request, so each push is
/// in flight for that long. Every push is sent once, none is taken over,
/// and all land within seconds (a due time set by the replica ahead does
/// not wait for the clock it runs ahead of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_a_minute_ahead_takes_over_no_push_in_flight() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let clerk = ClerkEmulator::start().await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let env = replica_env(&test_db, &clerk, &[("DATABASE_MAX_CONNECTIONS", "4")]);
    let mut on_time = Instance::new(binary, "replica-on-time", &env, log_dir.path());
    let mut ahead = Instance::new(binary, "replica-ahead", &env, log_dir.path());
    ahead.set_env("CLOCK_OFFSET_SECS", "60");
    on_time.start(&client).await;
    ahead.start(&client).await;
    let endpoints = [
        on_time.url("/api/webhooks/clerk"),
        ahead.url("/api/webhooks/clerk"),
    ];
    clerk.send_webhooks_to_any(&endpoints, svix::TEST_SECRET, Delivery::Retried);
    clerk.add_user("user_admin", Some("ADMIN"));
    for user in USERS {
        clerk.add_user(user, None);
    }
    clerk.wait_for_deliveries().await;

    // Each change through either replica; Clerk slow, so that every push
    // is in flight for a while.
    clerk.set_delay(Duration::from_secs(3));
    let token = clerk.mint_token("user_admin");
    let started = Instant::now();
    for (i, user) in USERS.iter().enumerate() {
        let replica = if i % 2 == 0 { &on_time } else { &ahead };
        let response = client
            .patch(replica.url(&format!("/api/admin/users/{user}")))
            .bearer_auth(&token)
            .json(&json!({"role": "INSTRUCTOR"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    wait_until("Clerk has every change", || async {
        USERS
            .iter()
            .all(|user| clerk.role(user).as_deref() == Some("INSTRUCTOR"))
    })
    .await;
    // Two of the slow requests in a row at most: none waited for a clock.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the pushes took {:?}",
        started.elapsed()
    );
    clerk.set_delay(Duration::ZERO);

    for user in USERS {
        let pushes = clerk.metadata_patches(user);
        let senders: Vec<Option<String>> = pushes.iter().map(|p| p.user_agent.clone()).collect();
        assert_eq!(pushes.len(), 1, "{user} pushed by {senders:?}");
    }
    for replica in [&on_time, &ahead] {
        let page = client
            .get(replica.url("/metrics"))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("a page");
        assert_eq!(
            metric(&page, "clerk_role_sync_push_leases_expired_total"),
            0.0,
            "{} took a claim over:\n{}",
            replica.name,
            replica.log_tail()
        );
    }
    on_time.stop().await;
    ahead.stop().await;
}

both_backends!(a_walk_is_not_taken_over_by_a_clock_a_minute_ahead);

/// A walk lease held by one replica is held for a command whose clock runs
/// a minute ahead too: the backfill refuses and names the holder.
async fn a_walk_is_not_taken_over_by_a_clock_a_minute_ahead(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    clerk.add_user("user_one", None);
    let url = DatabaseUrl::parse(&test_db.url).expect("a URL");
    let db = Db::connect(&url, 1).await.expect("a pool");
    db.migrate().await.expect("migrations");
    let lease = WalkLease::take(&db, "replica-a")
        .await
        .expect("the database answers")
        .expect("the lease is free");

    let api_url = clerk.url();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-role-sync"))
        .arg("backfill")
        .env_clear()
        .env("DATABASE_URL", &test_db.url)
        .env("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY)
        .env("CLERK_API_URL", &api_url)
        .env("CLOCK_OFFSET_SECS", "61")
        .output()
        .expect("the command runs");
    crate::helpers::assert_backfill_refused_by_walk(&refused, "replica-a", &clerk);
    lease.release().await;
}
