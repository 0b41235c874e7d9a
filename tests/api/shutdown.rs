//! SIGTERM as a container runtime sends it on every deploy: a real `serve`
//! process, after webhooks and an admin PATCH, and with webhooks still
//! arriving, is stopped five times in a row (the ERROR it once logged came
//! on some stops only). Each stop must be orderly:
//! `/readyz` stops answering ready at once, every webhook that was answered
//! got a 200, the process exits 0 well inside a 10 s grace, and nothing from
//! the stop is logged at ERROR or WARN (anyone alerting on those would be
//! paged on every deploy).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::both_backends;
use crate::helpers::{Backend, TestDb, post_signed};
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::clerk_payloads::user_event;
use testkit::instances::Instance;
use testkit::svix;

/// How many times the process is started, given traffic, and stopped.
const STOPS: usize = 5;
/// A container runtime's usual grace between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

both_backends!(sigterm_after_traffic_is_an_orderly_stop);

async fn sigterm_after_traffic_is_an_orderly_stop(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let clerk = ClerkEmulator::start().await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    let api_url = clerk.url();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_API_URL", api_url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("DATABASE_MAX_CONNECTIONS", "4"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let mut service = Instance::new(binary, "service", &env, log_dir.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    clerk.send_webhooks_to(
        &service.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );

    for round in 0..STOPS {
        // Arrange: a running service that has seen webhooks and a PATCH.
        service.start(&client).await;
        if round == 0 {
            clerk.add_user("user_admin", Some("ADMIN"));
        }
        let users: Vec<String> = (0..5).map(|i| format!("user_s{round}_{i}")).collect();
        for user in &users {
            clerk.add_user(user, None);
        }
        clerk.wait_for_deliveries().await;
        let patched = client
            .patch(service.url(&format!("/api/admin/users/{}", users[0])))
            .bearer_auth(clerk.mint_token("user_admin"))
            .json(&json!({"role": "INSTRUCTOR"}))
            .send()
            .await
            .expect("the PATCH is answered");
        assert_eq!(patched.status(), 200, "round {round}");
        let logged_before = service.log().len();

        // Act: SIGTERM while webhooks keep arriving and /readyz is asked.
        let (stop_sending, sending) = watch::channel(false);
        let sender = tokio::spawn(send_webhooks(
            client.clone(),
            service.url("/api/webhooks/clerk"),
            round,
            sending,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let readiness = tokio::spawn(first_unready(client.clone(), service.url("/readyz")));
        let signalled = Instant::now();
        let status = service.terminate().await.expect("it was running");
        let took = signalled.elapsed();
        let _ = stop_sending.send(true);
        let answers = sender.await.expect("the sender ends");
        let unready = readiness.await.expect("the probe ends");

        // Assert
        let log = service.log();
        let stop_log = &log[logged_before.min(log.len())..];
        assert!(
            status.success(),
            "round {round}: exit {status:?}\n{stop_log}"
        );
        assert!(
            took < GRACE,
            "round {round}: took {took:?} to stop\n{stop_log}"
        );
        let (after, answer) =
            unready.unwrap_or_else(|| panic!("round {round}: /readyz kept answering 200"));
        assert!(
            after < Duration::from_secs(1),
            "round {round}: /readyz answered 200 for {after:?} after SIGTERM"
        );
        assert!(
            answer.is_none_or(|status| status == 503),
            "round {round}: /readyz answered {answer:?} while stopping"
        );
        assert!(
            answers.iter().all(|status| *status == 200),
            "round {round}: webhooks answered {answers:?} during the stop"
        );
        let loud: Vec<&str> = stop_log
            .lines()
            .filter(|line| {
                let parsed: Value = serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("round {round}: not JSON: {line}"));
                matches!(parsed["level"].as_str(), Some("ERROR" | "WARN"))
            })
            .collect();
        assert!(
            loud.is_empty(),
            "round {round}: the stop logged at ERROR or WARN:\n{}",
            loud.join("\n")
        );
        assert!(
            stop_log.contains("shutting down"),
            "round {round}: {stop_log}"
        );
    }
}

/// Posts signed `user.updated` events to `url` one after another until
/// told to stop or the service stops taking connections; the status of
/// every answer received.
async fn send_webhooks(
    client: reqwest::Client,
    url: String,
    round: usize,
    stop: watch::Receiver<bool>,
) -> Vec<u16> {
    let mut answers = Vec::new();
    for i in 0_u32.. {
        if *stop.borrow() {
            break;
        }
        let user = format!("user_s{round}_{}", i % 5);
        let updated_at = 2_000_000_000_000 + i64::from(i);
        let event = user_event("user.updated", &user, updated_at, Some("STUDENT"));
        match post_signed(&client, &url, &svix::message_id(), &event).await {
            Ok(response) => answers.push(response.status().as_u16()),
            // Refused or closed: the server no longer takes requests.
            Err(_) => break,
        }
    }
    answers
}

/// Asks `url` (`/readyz`) every few milliseconds, on kept-alive
/// connections, until it does not answer 200: how long after the start
/// that was, and its status (`None`: the connection was refused or closed).
/// `None` when it answered 200 for 5 s.
async fn first_unready(client: reqwest::Client, url: String) -> Option<(Duration, Option<u16>)> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => {}
            Ok(response) => return Some((started.elapsed(), Some(response.status().as_u16()))),
            Err(_) => return Some((started.elapsed(), None)),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
