//! Change → Clerk latency of the push, against the Clerk emulator.
//!
//! For each backend, and with Clerk answering at once and after 300 ms:
//! starts the service and the emulator, then changes 300 users' roles one at
//! a time through `PATCH /api/admin/users/{id}` and measures, per change, how
//! long the admin's PATCH took and how long until the emulator received the
//! push. Prints median, p90 and p99. The push rate is set high (1000/s) so
//! that pacing does not hide the latency.
//!
//! Then push throughput: one bulk change of another 1,000 users (two
//! requests of 500), timed until Clerk has received every push.
//!
//! `cargo bench --bench push_latency` (PostgreSQL from `TEST_DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clerk_role_sync::config::Config;
use clerk_role_sync::startup::Application;
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::svix;
use testkit::test_db::{Backend, TestDb};

const CHANGES: usize = 300;
const BURST: usize = 1000;

#[tokio::main]
async fn main() {
    for delay in [Duration::ZERO, Duration::from_millis(300)] {
        for (name, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
            let db = TestDb::new(backend).await;
            run(name, &db.url, delay).await;
        }
    }
}

async fn run(backend: &str, database_url: &str, clerk_delay: Duration) {
    let clerk = ClerkEmulator::start().await;
    let clerk_url = clerk.url();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("DATABASE_URL", database_url),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("CLERK_API_URL", clerk_url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RATE", "1000"),
        ("RUST_LOG", "warn"),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("valid configuration");
    let app = Application::build(config)
        .await
        .expect("the service starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    clerk.send_webhooks_to(
        &format!("{base}/api/webhooks/clerk"),
        svix::TEST_SECRET,
        // Retried as Svix does: 1,300 sign-ups at once meet the service's
        // bound on webhooks buffered at once, and the overflow answers 503.
        Delivery::Retried,
    );

    clerk.add_user("user_admin", Some("ADMIN"));
    let ids: Vec<String> = (0..CHANGES).map(|i| format!("user_b{i:04}")).collect();
    let burst: Vec<String> = (0..BURST).map(|i| format!("user_burst{i:04}")).collect();
    for id in ids.iter().chain(&burst) {
        clerk.add_user(id, None);
    }
    clerk.wait_for_deliveries().await;
    let client = reqwest::Client::new();
    clerk.set_delay(clerk_delay);

    let mut patch_times = Vec::with_capacity(CHANGES);
    let mut push_times = Vec::with_capacity(CHANGES);
    for id in &ids {
        // Session tokens live a minute: a fresh one each time, as a frontend would.
        let token = clerk.mint_token("user_admin");
        let started = Instant::now();
        let response = client
            .patch(format!("{base}/api/admin/users/{id}"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"role": "INSTRUCTOR"}))
            .send()
            .await
            .expect("sent");
        let status = response.status();
        assert_eq!(
            status,
            200,
            "PATCH {id}: {}",
            response.text().await.unwrap_or_default()
        );
        patch_times.push(started.elapsed());
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            if let Some(push) = clerk.metadata_patches(id).first() {
                break push.at;
            }
            assert!(Instant::now() < deadline, "no push for {id}");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        push_times.push(arrived - started);
    }

    let started = Instant::now();
    for chunk in burst.chunks(500) {
        let changes: Vec<_> = chunk
            .iter()
            .map(|id| serde_json::json!({"userId": id, "role": "INSTRUCTOR"}))
            .collect();
        let response = client
            .post(format!("{base}/api/admin/users/roles"))
            .bearer_auth(clerk.mint_token("user_admin"))
            .json(&serde_json::json!({ "changes": changes }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<&String> = burst.iter().collect();
    while !pending.is_empty() {
        pending.retain(|id| clerk.metadata_patches(id).is_empty());
        assert!(
            Instant::now() < deadline,
            "{} pushes missing",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let burst_time = started.elapsed();

    clerk.wait_for_deliveries().await;
    handle.stop(true).await;
    // The push worker stops after the server: wait for it, so that nothing
    // runs on while the runtime shuts down.
    server
        .await
        .expect("the service task")
        .expect("the service stopped cleanly");

    let label = format!("{backend} (Clerk +{}ms)", clerk_delay.as_millis());
    report(&label, "admin PATCH answered", &mut patch_times);
    report(&label, "change -> push received by Clerk", &mut push_times);
    println!(
        "{label:22} {:34} n={BURST} in {burst_time:.2?}: {:.0} pushes/s",
        "bulk change -> all pushes received",
        BURST as f64 / burst_time.as_secs_f64()
    );
}

fn report(backend: &str, what: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{backend:22} {what:34} n={} median={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        times.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
