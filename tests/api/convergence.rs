//! Convergence under chaos: seeded random schedules of admin changes (single
//! and bulk), dashboard edits, late, reordered and duplicated webhooks, Clerk
//! failures (5xx, 429, slowness) and service restarts. Once the faults stop
//! and the queue drains, every user must have one role on both sides, that
//! role must be the newest intent, and the audit log must explain it.
//!
//! CI runs `CONVERGENCE_SCHEDULES` schedules per backend (default 24); a
//! failing seed is printed and replays alone with `CONVERGENCE_SEED=<seed>`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_auth::seed as seed_users;
use crate::helpers::{Backend, TestApp, spawn_synced_app_with};
use crate::support::clerk_emulator::{ClerkEmulator, Delivery};
use crate::support::svix;

const USERS: [&str; 4] = ["user_c0", "user_c1", "user_c2", "user_c3"];
const ROLES: [&str; 3] = ["STUDENT", "INSTRUCTOR", "ADMIN"];
const STEPS: usize = 30;

/// The last thing that decided a user's role, as the test did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// An admin changed the role (to a role different from the one shown).
    Admin(&'static str),
    /// A dashboard edit while no push was pending: nothing can overwrite it.
    Dashboard(&'static str),
    /// A dashboard edit racing a pending push: either may end up winning.
    Racing,
}

struct World {
    app: TestApp,
    clerk: ClerkEmulator,
    token: String,
    rng: StdRng,
    intents: HashMap<&'static str, Intent>,
    delivered: Vec<String>,
    log: Vec<String>,
}

impl World {
    fn webhook_url(&self) -> String {
        self.app.url("/api/webhooks/clerk")
    }

    async fn role_here(&self, user: &str) -> Value {
        self.app.api_user(&self.token, user).await
    }

    /// A role other than the one the user has here, so each admin change is real.
    async fn other_role(&mut self, user: &str) -> &'static str {
        let current = self.role_here(user).await["role"].clone();
        let choices: Vec<&'static str> = ROLES.iter().copied().filter(|r| current != *r).collect();
        choices.choose(&mut self.rng).copied().unwrap_or("STUDENT")
    }

    async fn step(&mut self) {
        let user = *USERS.choose(&mut self.rng).unwrap_or(&USERS[0]);
        match self.rng.random_range(0..100) {
            0..25 => {
                let role = self.other_role(user).await;
                self.log.push(format!("admin {user} -> {role}"));
                let response = self.app.patch_role(&self.token, user, role).await;
                assert_eq!(response.status(), 200, "PATCH {user} {role}");
                self.intents.insert(user, Intent::Admin(role));
            }
            25..32 => {
                let other = USERS
                    .iter()
                    .copied()
                    .find(|u| *u != user)
                    .unwrap_or(USERS[1]);
                let (a, b) = (self.other_role(user).await, self.other_role(other).await);
                self.log.push(format!("bulk {user} -> {a}, {other} -> {b}"));
                let response = self
                    .app
                    .authed(Method::POST, "/api/admin/users/roles", &self.token)
                    .json(&json!({"changes": [{"userId": user, "role": a}, {"userId": other, "role": b}]}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 200, "bulk");
                self.intents.insert(user, Intent::Admin(a));
                self.intents.insert(other, Intent::Admin(b));
            }
            32..50 => {
                let role = *ROLES.choose(&mut self.rng).unwrap_or(&"STUDENT");
                let quiet = self.role_here(user).await["sync"]["state"] == "synced";
                self.log.push(format!(
                    "dashboard {user} -> {role} (push pending: {})",
                    !quiet
                ));
                self.clerk.edit_metadata(user, json!({"role": role}));
                self.intents.insert(
                    user,
                    if quiet {
                        Intent::Dashboard(role)
                    } else {
                        Intent::Racing
                    },
                );
            }
            50..72 => {
                let held = self.clerk.held_webhooks();
                if let Some(message) = held.choose(&mut self.rng) {
                    self.log.push(format!(
                        "deliver {} ({} {})",
                        message.svix_id, message.kind, message.user_id
                    ));
                    assert_eq!(self.clerk.release_webhook(&message.svix_id).await, 200);
                    self.delivered.push(message.svix_id.clone());
                }
            }
            72..78 => {
                if let Some(id) = self.delivered.choose(&mut self.rng).cloned() {
                    self.log.push(format!("redeliver {id}"));
                    assert_eq!(self.clerk.redeliver(&id).await, 200);
                }
            }
            78..85 => {
                let count = self.rng.random_range(1..=3);
                self.log
                    .push(format!("clerk fails the next {count} requests"));
                self.clerk.fail_next(
                    count,
                    *[500, 502, 503].choose(&mut self.rng).unwrap_or(&500),
                );
            }
            85..89 => {
                self.log.push("clerk rate-limits the next request".into());
                self.clerk.rate_limit_next(1, 1);
            }
            89..95 => {
                let delay = Duration::from_millis(self.rng.random_range(0..150));
                self.log.push(format!("clerk answers after {delay:?}"));
                self.clerk.set_delay(delay);
            }
            _ => {
                self.log.push("restart the service".into());
                self.app.restart().await;
                self.clerk
                    .send_webhooks_to(&self.webhook_url(), svix::TEST_SECRET, Delivery::Held);
            }
        }
    }

    /// Faults stop; every webhook is delivered (in random order) until no
    /// push is pending and Clerk has nothing more to say.
    async fn quiesce(&mut self) {
        self.clerk.set_delay(Duration::ZERO);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut held = self.clerk.held_webhooks();
            while !held.is_empty() {
                let index = self.rng.random_range(0..held.len());
                let message = held.swap_remove(index);
                assert_eq!(self.clerk.release_webhook(&message.svix_id).await, 200);
            }
            let mut settled = true;
            for user in USERS {
                if self.role_here(user).await["sync"]["state"] != "synced" {
                    settled = false;
                }
            }
            if settled && self.clerk.held_webhooks().is_empty() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let mut states = Vec::new();
                for user in USERS {
                    let row: Result<_, clerk_role_sync::db::DbError> = clerk_role_sync::with_conn!(self.app.db, conn => {
                        use clerk_role_sync::db::Store as _;
                        Ok(conn.find_sync(user).await?)
                    });
                    states.push(format!("{user}: {:?}", row));
                }
                panic!("the queue never drained: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn check(&self) {
        for user in USERS {
            let here = self.role_here(user).await;
            let role = here["role"].as_str().unwrap_or_default().to_owned();
            let clerk = self.clerk.role(user).unwrap_or_else(|| "STUDENT".into());
            assert_eq!(role, clerk, "{user}: one role on both sides");
            match self.intents.get(user) {
                Some(Intent::Admin(expected) | Intent::Dashboard(expected)) => {
                    assert_eq!(role, *expected, "{user}: the newest intent wins");
                }
                Some(Intent::Racing) | None => {}
            }
            // The audit log explains the role: an unbroken chain ending at it.
            let history = self
                .app
                .get_json(
                    &self.token,
                    &format!("/api/admin/users/{user}/role-history"),
                )
                .await;
            let rows = history["data"].as_array().expect("rows");
            let mut previous: Option<&str> = None;
            for row in rows.iter().rev() {
                assert_eq!(
                    row["oldRole"].as_str(),
                    previous,
                    "{user}: audit chain {history}"
                );
                previous = row["newRole"].as_str();
            }
            assert_eq!(
                previous,
                Some(role.as_str()),
                "{user}: the audit ends at the role"
            );
        }
    }
}

async fn schedule(backend: Backend, seed: u64) -> Vec<String> {
    if std::env::var_os("CONVERGENCE_LOG").is_some() {
        clerk_role_sync::telemetry::init(clerk_role_sync::config::LogFormat::Pretty);
    }
    let (app, clerk) = spawn_synced_app_with(
        backend,
        &[
            ("CLERK_PUSH_RETRY_BASE_MS", "20"),
            ("CLERK_PUSH_RETRY_MAX_SECS", "1"),
        ],
    )
    .await;
    let mut users = vec![("user_admin", Some("ADMIN"))];
    users.extend(USERS.iter().map(|u| (*u, None)));
    seed_users(&app, &clerk, &users).await;
    let token = clerk.mint_token("user_admin");
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Held,
    );
    let mut world = World {
        app,
        clerk,
        token,
        rng: StdRng::seed_from_u64(seed),
        intents: HashMap::new(),
        delivered: Vec::new(),
        log: Vec::new(),
    };
    let outcome = std::panic::AssertUnwindSafe(async {
        for _ in 0..STEPS {
            world.step().await;
        }
        world.log.push("quiesce".into());
        world.quiesce().await;
        world.check().await;
    })
    .catch_unwind()
    .await;
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        panic!(
            "convergence failed for seed {seed} on {backend:?}: {message}\n\
             replay: CONVERGENCE_SEED={seed} cargo test --test api convergence\nsteps:\n  {}",
            world.log.join("\n  ")
        );
    }
    world.log
}

async fn run_schedules(backend: Backend) {
    if let Some(seed) = std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        schedule(backend, seed).await;
        return;
    }
    let count: u64 = std::env::var("CONVERGENCE_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let base = match backend {
        Backend::Postgres => 1_000,
        Backend::Sqlite => 2_000,
    };
    for seed in base..base + count {
        schedule(backend, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_converge_on_postgres() {
    run_schedules(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_converge_on_sqlite() {
    run_schedules(Backend::Sqlite).await;
}

#[test]
fn the_same_seed_makes_the_same_choices() {
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..20)
            .map(|_| rng.random_range(0..100))
            .collect::<Vec<u32>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}
