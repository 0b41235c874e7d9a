//! PostgreSQL going away under load: a cluster of the test's own (so the
//! shared server the other tests use is untouched) is restarted while
//! webhooks keep coming and a push waits to be sent. Nothing answered 2xx
//! is lost, the same process is ready again within 20 s, and the queued
//! push lands after.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::schema::webhook_events;
use clerk_role_sync::db::{Db, DbError};
use clerk_role_sync::with_conn;

use crate::helpers::{post_signed, wait_until};
use testkit::clerk_emulator::{self, ClerkEmulator};
use testkit::clerk_payloads::user_event;
use testkit::instances::Instance;
use testkit::svix;
use testkit::throwaway_postgres::ThrowawayPostgres;

/// Senders posting webhooks at once.
const SENDERS: usize = 4;
/// How long the same process has to be ready again once PostgreSQL is back.
const READY_AGAIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_answered() {
    let postgres = ThrowawayPostgres::start();
    let clerk = ClerkEmulator::start().await;
    let url = postgres.url();
    let api_url = clerk.url();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_API_URL", api_url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RETRY_BASE_MS", "100"),
        ("CLERK_PUSH_RETRY_MAX_SECS", "1"),
        ("RECONCILE_INTERVAL", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let logs = tempfile::tempdir().expect("a log folder");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("a client");
    let mut service = Instance::new(binary, "failover", &env, logs.path());
    service.start(&client).await;
    let webhook = service.url("/api/webhooks/clerk");

    // An admin, and a push that waits: Clerk fails it until the end.
    clerk.add_user("user_admin", Some("ADMIN"));
    clerk.add_user("user_promoted", None);
    for id in ["user_admin", "user_promoted"] {
        let created = clerk.user(id).expect("in Clerk");
        let event = serde_json::json!({"type": "user.created", "data": created});
        let answer = post_signed(&client, &webhook, &format!("msg_{id}"), &event).await;
        assert_eq!(answer.expect("answered").status(), 200);
    }
    clerk.fail_next(100_000, 503);
    let token = clerk.mint_token("user_admin");
    let patched = client
        .patch(service.url("/api/admin/users/user_promoted"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"role": "INSTRUCTOR"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(patched.status(), 200);

    // Webhooks keep coming while the server restarts.
    let sending = Arc::new(AtomicBool::new(true));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (client, webhook, sending) = (client.clone(), webhook.clone(), sending.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut i = 0;
                while sending.load(Ordering::Relaxed) {
                    let id = format!("user_f{sender}_{i:05}");
                    let svix_id = format!("msg_{id}");
                    let event = user_event("user.created", &id, 1_000, None);
                    let status = post_signed(&client, &webhook, &svix_id, &event)
                        .await
                        .ok()
                        .map(|answer| answer.status().as_u16());
                    if status != Some(200) {
                        // Svix would deliver it again later: pause a little.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    answered.push((svix_id, status));
                    i += 1;
                }
                answered
            })
        })
        .collect();
    wait_until("webhooks flow", || async {
        webhooks_recorded(&url).await > 50
    })
    .await;
    postgres.restart();
    let back = Instant::now();
    let deadline = back + READY_AGAIN;
    loop {
        let ready = client.get(service.url("/readyz")).send().await;
        if ready.is_ok_and(|ready| ready.status() == 200) && webhooks_recorded(&url).await > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready {READY_AGAIN:?} after PostgreSQL came back:\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = back.elapsed();
    // Some more load after the restart, then stop.
    let recorded_after_restart = webhooks_recorded(&url).await;
    wait_until("webhooks flow again", || async {
        webhooks_recorded(&url).await > recorded_after_restart + 50
    })
    .await;
    sending.store(false, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for sender in senders {
        for (svix_id, status) in sender.await.expect("joined") {
            match status {
                Some(200) => {
                    acknowledged.insert(svix_id);
                }
                _ => refused += 1,
            }
        }
    }
    assert!(service.is_running(), "the same process served throughout");
    assert!(
        refused > 0,
        "the restart was seen: some webhooks were refused"
    );

    eprintln!(
        "acknowledged {}, refused or unanswered {refused}, ready {:?} after the restart",
        acknowledged.len(),
        ready_after
    );
    let recorded = recorded_ids(&url).await;
    let lost: Vec<&String> = acknowledged.difference(&recorded).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhooks were lost (refused meanwhile: {refused}): {lost:?}",
        lost.len(),
        acknowledged.len()
    );

    // The push queued before the restart lands once Clerk answers.
    clerk.clear_faults();
    wait_until("the queued push lands", || async {
        clerk.role("user_promoted").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    service.stop().await;
}

async fn webhooks_recorded(url: &str) -> i64 {
    use diesel::QueryDsl as _;
    use diesel_async::RunQueryDsl as _;
    let Ok(db) = Db::connect(&DatabaseUrl::parse(url).expect("a URL"), 1).await else {
        return 0;
    };
    let count: Result<i64, DbError> = with_conn!(db, conn => {
        Ok(webhook_events::table.count().get_result(conn).await?)
    });
    count.unwrap_or(0)
}

async fn recorded_ids(url: &str) -> BTreeSet<String> {
    use diesel::QueryDsl as _;
    use diesel_async::RunQueryDsl as _;
    let db = Db::connect(&DatabaseUrl::parse(url).expect("a URL"), 1)
        .await
        .expect("PostgreSQL is back");
    let ids: Result<Vec<String>, DbError> = with_conn!(db, conn => {
        Ok(webhook_events::table
            .select(webhook_events::svix_id)
            .load(conn)
            .await?)
    });
    ids.expect("the recorded messages").into_iter().collect()
}
