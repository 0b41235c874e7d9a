//! Several replicas on one PostgreSQL database, one of them killed without
//! warning at random moments and restarted: three real `serve` processes,
//! one Clerk emulator that fails, rate-limits and slows down on demand, and
//! admin changes and webhooks spread across the replicas. Once the faults
//! stop, every push must drain within 10 s, DB == Clerk == the newest
//! intent for every user, no push is sent twice for one change except
//! after an attempt whose sender died, counters equal a recount, and
//! PostgreSQL saw no deadlock.
//!
//! Repeated pushes are counted from what Clerk received: a push of the role
//! the user's previous push carried, after that one landed, with no admin
//! change and no kill of its sender between; the count must be 0. Once a
//! run, a replica is also frozen (SIGSTOP) while it reads Clerk before a
//! retry, past its lease, and woken after another replica took its push
//! over: a sender that does not check its claim before sending sends that
//! push a second time, and the count catches it.
//!
//! CI runs `REPLICA_SCHEDULES` schedules (default 2); a failing seed is
//! printed and replays alone with `REPLICA_SEED=<seed>`. A longer run by
//! hand: `REPLICA_CHAOS_SECS=60 REPLICA_KILL_EVERY_SECS=10-15
//! REPLICA_DOWN_SECS=5-12` (see `chaos_schedule`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::{Db, DbError};
use clerk_role_sync::with_conn;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl as _;
use futures_util::FutureExt as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestDb};
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery, RecordedRequest};
use testkit::instances::{Instance, start_replicas};
use testkit::svix;

const REPLICAS: usize = 3;
/// Users only admins change, and users only the dashboard changes.
const ADMIN_USERS: [&str; 6] = [
    "user_r0", "user_r1", "user_r2", "user_r3", "user_r4", "user_r5",
];
const DASHBOARD_USERS: [&str; 2] = ["user_d0", "user_d1"];
const ROLES: [&str; 3] = ["STUDENT", "INSTRUCTOR", "ADMIN"];
/// How long the faults go on, unless `REPLICA_CHAOS_SECS` says otherwise.
const CHAOS: Duration = Duration::from_secs(24);
/// When the run's stall is armed (ms after the faults start).
const STALL_AFTER_MS: std::ops::Range<u64> = 2_000..4_000;
/// When Clerk slows down after a replica froze: shortly before its claim's
/// lease (10 s) expires and another replica takes the push over.
const STALL_SLOW_AFTER: Duration = Duration::from_secs(8);
/// How slow Clerk is then.
const CLERK_SLOW: Duration = Duration::from_secs(3);
/// The longest a replica stays frozen.
const STALL_GIVE_UP: Duration = Duration::from_secs(16);
/// How often a replica is killed (ms, a random pause in this range),
/// unless `REPLICA_KILL_EVERY_SECS` (`10-15`) says otherwise.
const KILL_EVERY_MS: std::ops::Range<u64> = 2_000..4_000;
/// How long a killed replica stays down (ms), unless `REPLICA_DOWN_SECS`
/// (`5-12`) says otherwise.
const DOWN_MS: std::ops::Range<u64> = 500..1_500;
/// The drain the design promises once the faults stop.
const DRAIN: Duration = Duration::from_secs(10);

/// The environment of a replica on `test_db` talking to `clerk`, quick to
/// retry, plus `extra`.
pub(crate) fn replica_env(
    test_db: &TestDb,
    clerk: &ClerkEmulator,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let api_url = clerk.url();
    [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_API_URL", api_url.as_str()),
        ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RETRY_BASE_MS", "50"),
        ("CLERK_PUSH_RETRY_MAX_SECS", "1"),
        ("RECONCILE_INTERVAL", "0"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct UserRole {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    role: String,
}

struct Cluster {
    replicas: Vec<Instance>,
    client: reqwest::Client,
    clerk: ClerkEmulator,
    db: Db,
    test_db: TestDb,
    rng: StdRng,
    /// The newest intent per user.
    intents: HashMap<&'static str, &'static str>,
    /// Each admin change of a user: when its PATCH was sent, and the role.
    changed_at: HashMap<&'static str, Vec<(Instant, &'static str)>>,
    /// Every kill: which replica, when.
    kills: Vec<(String, Instant)>,
    /// When the cluster started: failure messages time events from it.
    started: Instant,
    /// 5xx answers from replicas that were not being killed.
    server_errors: Vec<String>,
    /// The run's one stall of a replica.
    stall: Stall,
    /// When the faults end (see [`Cluster::chaos`]).
    faults_end: Instant,
    log: Vec<String>,
}

/// The run's one stall: a replica frozen while it reads Clerk before a
/// retry, past its lease, and woken while the replica that took its push
/// over is sending it (Clerk slow then, so that both sends would land).
#[derive(Debug, Clone)]
enum Stall {
    /// Armed at that time.
    Due(Instant),
    /// Clerk holds its answers and fails the next push, so that a retry
    /// reads Clerk: the first replica to read a user since request
    /// `since` is frozen, unless none does before `until`.
    Armed {
        since: usize,
        until: Instant,
    },
    /// `replica` is frozen since request `since`, in its read of `user`.
    /// Clerk slows down at `slow_at`, shortly before its claim expires; it
    /// wakes once another replica sends `user`'s push, or at `give_up`.
    Frozen {
        replica: usize,
        user: String,
        since: usize,
        slow_at: Instant,
        give_up: Instant,
    },
    /// Woken; Clerk stays slow until `until`, so that what the woken
    /// replica sends lands after the push it raced.
    Woken {
        user: String,
        until: Instant,
    },
    Over,
}

impl Cluster {
    async fn start(seed: u64, log_dir: &std::path::Path) -> Self {
        let test_db = TestDb::new(Backend::Postgres).await;
        let clerk = ClerkEmulator::start().await;
        let env = replica_env(
            &test_db,
            &clerk,
            &[
                ("DATABASE_MAX_CONNECTIONS", "4"),
                ("CLERK_PUSH_RATE", "100"),
                // Longer than a stall: a replica frozen mid-request finds
                // its answer when it wakes, not a timeout.
                ("CLERK_TIMEOUT_SECS", "30"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ],
        );
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        let replicas = start_replicas(binary, REPLICAS, &env, log_dir, &client, &clerk).await;
        clerk.add_user("user_admin", Some("ADMIN"));
        for user in ADMIN_USERS.iter().chain(&DASHBOARD_USERS) {
            clerk.add_user(user, None);
        }
        clerk.wait_for_deliveries().await;
        let url = DatabaseUrl::parse(&test_db.url).expect("a PostgreSQL URL");
        let db = Db::connect(&url, 2).await.expect("connected");
        Self {
            replicas,
            client,
            clerk,
            db,
            test_db,
            rng: StdRng::seed_from_u64(seed),
            intents: HashMap::new(),
            changed_at: HashMap::new(),
            kills: Vec::new(),
            started: Instant::now(),
            server_errors: Vec::new(),
            stall: Stall::Over,
            faults_end: Instant::now(),
            log: Vec::new(),
        }
    }

    /// The replicas that run and answer (not frozen).
    fn running(&self) -> Vec<usize> {
        let frozen = match self.stall {
            Stall::Frozen { replica, .. } => Some(replica),
            _ => None,
        };
        (0..REPLICAS)
            .filter(|i| self.replicas[*i].is_running() && Some(*i) != frozen)
            .collect()
    }

    /// Moves the run's stall on (see [`Stall`]); the faults end at
    /// `faults_end`.
    fn advance_stall(&mut self) {
        let now = Instant::now();
        let end = self.faults_end;
        if let Stall::Frozen { slow_at, .. } = self.stall
            && now >= slow_at
        {
            self.clerk.set_delay(CLERK_SLOW);
        }
        self.stall = match std::mem::replace(&mut self.stall, Stall::Over) {
            Stall::Due(at) if now >= at => {
                self.log
                    .push("clerk holds its answers; the next push fails".into());
                self.clerk.set_answer_delay(Duration::from_secs(2));
                self.clerk.fail_next(1, 503);
                Stall::Armed {
                    since: self.clerk.requests().len(),
                    until: now + Duration::from_secs(3),
                }
            }
            Stall::Armed { since, until } => {
                let requests = self.clerk.requests();
                let read = requests[since..].iter().find_map(|request| {
                    let user = request.path.strip_prefix("/v1/users/")?;
                    let agent = request.user_agent.as_deref()?;
                    let replica =
                        (0..REPLICAS).find(|i| agent.contains(&format!("replica-{i}")))?;
                    (request.method == "GET" && !user.contains('/'))
                        .then(|| (replica, user.to_owned()))
                });
                match read.filter(|(replica, _)| self.running().contains(replica)) {
                    Some((replica, user)) => {
                        self.replicas[replica].pause();
                        self.clerk.set_answer_delay(Duration::ZERO);
                        self.log
                            .push(format!("freeze replica-{replica} while it reads {user}"));
                        Stall::Frozen {
                            replica,
                            user,
                            since: requests.len(),
                            slow_at: now + STALL_SLOW_AFTER,
                            give_up: now + STALL_GIVE_UP,
                        }
                    }
                    // Armed again while a whole stall still fits.
                    None if now >= until && now + STALL_GIVE_UP < end => Stall::Due(now),
                    None if now >= until => {
                        self.clerk.set_answer_delay(Duration::ZERO);
                        self.log.push("no replica read Clerk to be frozen".into());
                        Stall::Over
                    }
                    None => Stall::Armed { since, until },
                }
            }
            Stall::Frozen {
                replica,
                user,
                since,
                give_up,
                ..
            } if now >= give_up || self.sent_by_another(replica, &user, since) => {
                self.log.push(format!("wake replica-{replica}"));
                self.replicas[replica].resume();
                Stall::Woken {
                    user,
                    until: now + CLERK_SLOW + Duration::from_secs(1),
                }
            }
            Stall::Woken { until, .. } if now >= until => {
                self.clerk.set_delay(Duration::ZERO);
                Stall::Over
            }
            stall => stall,
        };
    }

    /// Whether a replica other than `replica` sent `user`'s push since
    /// request `since`.
    fn sent_by_another(&self, replica: usize, user: &str, since: usize) -> bool {
        let path = format!("/v1/users/{user}/metadata");
        let frozen = format!("replica-{replica}");
        self.clerk.requests()[since..].iter().any(|request| {
            request.method == "PATCH"
                && request.path == path
                && !request
                    .user_agent
                    .as_deref()
                    .is_some_and(|agent| agent.contains(&frozen))
        })
    }

    /// The user whose push the stall races: admins leave it alone
    /// meanwhile, so that a second send of that push shows as one.
    fn stalled_user(&self) -> Option<&str> {
        match &self.stall {
            Stall::Frozen { user, .. } | Stall::Woken { user, .. } => Some(user),
            Stall::Due(_) | Stall::Armed { .. } | Stall::Over => None,
        }
    }

    /// Whether a replica is frozen, or was woken a moment ago: it may hold
    /// rows locked (a batch of webhooks, a push's landing, the counters
    /// they move) until it wakes, and a statement that waited on them may
    /// time out just after.
    fn stall_holds_locks(&self) -> bool {
        matches!(self.stall, Stall::Frozen { .. } | Stall::Woken { .. })
    }

    /// Whether the stall decides how slow Clerk is now.
    fn stall_slows_clerk(&self) -> bool {
        matches!(self.stall, Stall::Frozen { slow_at, .. } if Instant::now() >= slow_at)
            || matches!(self.stall, Stall::Woken { .. })
    }

    /// Ends the stall: wakes a frozen replica, lets Clerk answer at once.
    fn wake(&mut self) {
        match std::mem::replace(&mut self.stall, Stall::Over) {
            Stall::Frozen { replica, .. } => {
                self.log.push(format!("wake replica-{replica}"));
                self.replicas[replica].resume();
            }
            Stall::Armed { .. } => self.clerk.set_answer_delay(Duration::ZERO),
            Stall::Due(_) | Stall::Woken { .. } | Stall::Over => {}
        }
    }

    /// Sets `user`'s role through any running replica, again through
    /// another when the one asked is killed meanwhile (setting a role twice
    /// is harmless), until one answers.
    async fn admin_change(&mut self, user: &'static str, role: &'static str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Some(&replica) = self.running().choose(&mut self.rng) else {
                panic!("no replica runs");
            };
            let token = self.clerk.mint_token("user_admin");
            self.changed_at
                .entry(user)
                .or_default()
                .push((Instant::now(), role));
            let sent = self
                .client
                .patch(self.replicas[replica].url(&format!("/api/admin/users/{user}")))
                .bearer_auth(token)
                .json(&json!({"role": role}))
                .send()
                .await;
            match sent {
                Ok(response) if response.status() == 200 => {
                    self.intents.insert(user, role);
                    return;
                }
                // A row the frozen replica holds locked: the lock timeout
                // answers 503 and nothing was written; sent again, once the
                // stall has moved on (it wakes the replica when it is due).
                Ok(response) if response.status() == 503 && self.stall_holds_locks() => {
                    self.log
                        .push(format!("PATCH {user} waited on the frozen replica: 503"));
                    assert!(
                        Instant::now() < deadline,
                        "no replica took {user} -> {role}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.advance_stall();
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    self.server_errors.push(format!(
                        "PATCH {user} on replica-{replica}: {status} {body}"
                    ));
                    return;
                }
                // The replica was killed while answering: ask another.
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "no replica took {user} -> {role}"
                ),
            }
        }
    }

    async fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..60 => {
                let stalled = self.stalled_user();
                let users: Vec<&'static str> = ADMIN_USERS
                    .iter()
                    .copied()
                    .filter(|user| Some(*user) != stalled)
                    .collect();
                let user = *users.choose(&mut self.rng).unwrap_or(&ADMIN_USERS[0]);
                let current = self.intents.get(user).copied().unwrap_or("STUDENT");
                let choices: Vec<&'static str> =
                    ROLES.iter().copied().filter(|r| *r != current).collect();
                let role = *choices.choose(&mut self.rng).unwrap_or(&"ADMIN");
                self.log.push(format!("admin {user} -> {role}"));
                self.admin_change(user, role).await;
            }
            60..72 => {
                let user = *DASHBOARD_USERS
                    .choose(&mut self.rng)
                    .unwrap_or(&DASHBOARD_USERS[0]);
                let role = *ROLES.choose(&mut self.rng).unwrap_or(&"STUDENT");
                self.log.push(format!("dashboard {user} -> {role}"));
                self.clerk.edit_metadata(user, json!({"role": role}));
                self.intents.insert(user, role);
            }
            72..82 => {
                let count = self.rng.random_range(1..=3);
                self.log
                    .push(format!("clerk fails the next {count} requests"));
                self.clerk.fail_next(
                    count,
                    *[500, 502, 503].choose(&mut self.rng).unwrap_or(&500),
                );
            }
            82..86 => {
                self.log.push("clerk rate-limits the next request".into());
                self.clerk.rate_limit_next(1, 1);
            }
            _ => {
                let delay = Duration::from_millis(self.rng.random_range(0..200));
                if !self.stall_slows_clerk() {
                    self.log.push(format!("clerk answers after {delay:?}"));
                    self.clerk.set_delay(delay);
                }
            }
        }
    }

    /// Faults for [`CHAOS`]: a replica killed every 2 to 4 s, restarted 0.5
    /// to 1.5 s later ([`chaos_schedule`] for longer runs).
    async fn chaos(&mut self) {
        let (chaos, kill_every, down) = chaos_schedule();
        let end = Instant::now() + chaos;
        self.faults_end = end;
        let mut next_kill = Instant::now() + self.pause(kill_every.clone());
        let mut restart: Option<(usize, Instant)> = None;
        self.stall = Stall::Due(Instant::now() + self.pause(STALL_AFTER_MS));
        while Instant::now() < end {
            self.advance_stall();
            if let Some((replica, at)) = restart
                && Instant::now() >= at
            {
                self.log.push(format!("restart replica-{replica}"));
                let client = self.client.clone();
                self.replicas[replica].start(&client).await;
                restart = None;
            }
            if restart.is_none()
                && Instant::now() >= next_kill
                && let Some(&replica) = self.running().choose(&mut self.rng)
            {
                self.log.push(format!("kill -9 replica-{replica}"));
                self.replicas[replica].kill();
                self.kills
                    .push((self.replicas[replica].name.clone(), Instant::now()));
                restart = Some((replica, Instant::now() + self.pause(down.clone())));
                next_kill = Instant::now() + self.pause(kill_every.clone());
            }
            self.step().await;
            tokio::time::sleep(self.pause(10..40)).await;
        }
        self.wake();
        self.log.push("faults stop".into());
        self.clerk.clear_faults();
        self.clerk.set_delay(Duration::ZERO);
        if let Some((replica, _)) = restart {
            let client = self.client.clone();
            self.replicas[replica].start(&client).await;
        }
    }

    fn pause(&mut self, millis: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.random_range(millis))
    }

    async fn pending_pushes(&self) -> i64 {
        let count: Result<Count, DbError> = with_conn!(self.db, conn => {
            Ok(diesel::sql_query(
                "SELECT count(*) AS n FROM clerk_sync WHERE next_attempt_at IS NOT NULL",
            )
            .get_result(conn)
            .await?)
        });
        count.expect("count pending").n
    }

    async fn roles_here(&self) -> HashMap<String, String> {
        let rows: Result<Vec<UserRole>, DbError> = with_conn!(self.db, conn => {
            Ok(diesel::sql_query("SELECT id, role FROM users WHERE deleted_at IS NULL")
                .load(conn)
                .await?)
        });
        rows.expect("users")
            .into_iter()
            .map(|row| (row.id, row.role))
            .collect()
    }

    fn agrees(&self, here: &HashMap<String, String>) -> bool {
        ADMIN_USERS.iter().chain(&DASHBOARD_USERS).all(|user| {
            let intent = self.intents.get(user).copied().unwrap_or("STUDENT");
            let clerk = self.clerk.role(user).unwrap_or_else(|| "STUDENT".into());
            here.get(*user).map(String::as_str) == Some(intent) && clerk == intent
        })
    }

    async fn check(&mut self) {
        // Every push drains, and both sides reach the newest intent, within
        // the promised time after the faults stopped.
        let stopped = Instant::now();
        loop {
            let here = self.roles_here().await;
            if self.pending_pushes().await == 0 && self.agrees(&here) {
                break;
            }
            assert!(
                stopped.elapsed() < DRAIN,
                "not drained {DRAIN:?} after the faults stopped: {} pending; here {here:?}; \
                 intents {:?}",
                self.pending_pushes().await,
                self.intents
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log.push(format!("drained in {:?}", stopped.elapsed()));
        assert!(
            self.server_errors.is_empty(),
            "5xx outside a kill: {:?}",
            self.server_errors
        );

        let repeats = self.repeated_pushes();
        self.log.push(format!("{} repeated pushes", repeats.len()));
        assert!(
            repeats.is_empty(),
            "{} pushes repeated the one before with no failed attempt, no change and no \
             kill of their first sender between:\n{}\nkills at {:?}",
            repeats.len(),
            repeats.join("\n"),
            self.kills
                .iter()
                .map(|(replica, at)| (replica.as_str(), at.duration_since(self.started)))
                .collect::<Vec<_>>()
        );

        crate::helpers::assert_counters_match_a_recount(&self.db).await;
        assert_eq!(
            crate::helpers::deadlocks(&self.db).await,
            0,
            "PostgreSQL saw a deadlock"
        );
    }

    /// Pushes that repeat the one before them for the same user: the same
    /// role, after that one landed (Clerk answered 200: no failed attempt
    /// between), with no admin change between the two and no kill of the
    /// first one's sender between them. A change is sent at most once, so
    /// each is a change sent twice. The only other push of a role just
    /// pushed is a newer change to the same role that the first push could
    /// not carry (see [`Self::may_carry_an_older_change`]).
    fn repeated_pushes(&self) -> Vec<String> {
        let mut repeats = Vec::new();
        for user in ADMIN_USERS.iter().chain(&DASHBOARD_USERS) {
            let pushes = self.clerk.metadata_patches(user);
            let landed: Vec<RecordedRequest> = pushes
                .iter()
                .filter(|push| push.status == 200)
                .cloned()
                .collect();
            let changes = self.changed_at.get(user).cloned().unwrap_or_default();
            for pair in pushes.windows(2) {
                let (first, second) = (&pair[0], &pair[1]);
                if first.body != second.body || first.status != 200 {
                    continue;
                }
                if changes
                    .iter()
                    .any(|(at, _)| *at > first.at && *at < second.at)
                    || self.may_carry_an_older_change(&landed, &changes, first)
                {
                    continue;
                }
                let sender = first.user_agent.as_deref().unwrap_or_default();
                let sender_killed = self.kills.iter().any(|(replica, at)| {
                    sender.contains(replica.as_str()) && *at >= first.at && *at <= second.at
                });
                if sender_killed {
                    continue;
                }
                repeats.push(format!(
                    "{user}: {} sent at {:?} by {sender:?}, again at {:?} by {:?}",
                    first.body["public_metadata"]["role"],
                    first.at.duration_since(self.started),
                    second.at.duration_since(self.started),
                    second.user_agent.as_deref().unwrap_or_default(),
                ));
            }
        }
        repeats
    }

    /// Whether `push` may carry a change older than the last one before it:
    /// an earlier change to the same role that no successful push followed
    /// before `push`, with a change to another role between the two.
    fn may_carry_an_older_change(
        &self,
        pushes: &[RecordedRequest],
        changes: &[(Instant, &'static str)],
        push: &RecordedRequest,
    ) -> bool {
        let role = push.body["public_metadata"]["role"].as_str();
        let before: Vec<&(Instant, &str)> =
            changes.iter().filter(|(at, _)| *at < push.at).collect();
        let Some(((_, last_role), earlier)) = before.split_last() else {
            return false;
        };
        Some(*last_role) == role
            && earlier.iter().enumerate().any(|(i, (at, earlier_role))| {
                Some(*earlier_role) == role
                    && earlier[i + 1..]
                        .iter()
                        .any(|(_, between)| Some(*between) != role)
                    && !pushes.iter().any(|p| p.at > *at && p.at < push.at)
            })
    }
}

/// How long the faults go on, how often a replica is killed and how long
/// it stays down (ms): [`CHAOS`], [`KILL_EVERY_MS`] and [`DOWN_MS`], or
/// for a longer run by hand `REPLICA_CHAOS_SECS=60`,
/// `REPLICA_KILL_EVERY_SECS=10-15` and `REPLICA_DOWN_SECS=5-12`.
fn chaos_schedule() -> (Duration, std::ops::Range<u64>, std::ops::Range<u64>) {
    let chaos = std::env::var("REPLICA_CHAOS_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(CHAOS, Duration::from_secs);
    let range_ms = |name: &str, default: std::ops::Range<u64>| {
        std::env::var(name)
            .ok()
            .and_then(|range| {
                let (low, high) = range.split_once('-')?;
                let (low, high): (u64, u64) = (low.parse().ok()?, high.parse().ok()?);
                (low < high).then(|| low * 1_000..high * 1_000)
            })
            .unwrap_or(default)
    };
    (
        chaos,
        range_ms("REPLICA_KILL_EVERY_SECS", KILL_EVERY_MS),
        range_ms("REPLICA_DOWN_SECS", DOWN_MS),
    )
}

async fn schedule(seed: u64) {
    let log_dir = tempfile::tempdir().expect("a log directory");
    let mut cluster = Cluster::start(seed, log_dir.path()).await;
    let outcome = std::panic::AssertUnwindSafe(async {
        cluster.chaos().await;
        cluster.check().await;
    })
    .catch_unwind()
    .await;
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        let logs: Vec<String> = cluster
            .replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.name, r.log_tail()))
            .collect();
        panic!(
            "replicas failed for seed {seed}: {message}\n\
             replay: REPLICA_SEED={seed} cargo test --test api replicas\nsteps:\n  {}\n{}",
            cluster.log.join("\n  "),
            logs.join("\n")
        );
    }
    let changes: usize = cluster.changed_at.values().map(Vec::len).sum();
    let stall = cluster
        .log
        .iter()
        .find(|step| step.starts_with("freeze") || step.starts_with("no replica read"))
        .map_or("no stall", String::as_str);
    eprintln!(
        "seed {seed}: {changes} admin changes, {} kills, {stall}, {}",
        cluster.kills.len(),
        cluster.log.last().map_or("", String::as_str)
    );
    for replica in &mut cluster.replicas {
        replica.stop().await;
    }
    drop(cluster.test_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_die_strand_no_push() {
    if let Some(seed) = std::env::var("REPLICA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        schedule(seed).await;
        return;
    }
    let count: u64 = std::env::var("REPLICA_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 3_000..3_000 + count {
        schedule(seed).await;
    }
}

both_backends!(the_echo_of_a_push_nobody_recorded_cancels_no_newer_change);

async fn the_echo_of_a_push_nobody_recorded_cancels_no_newer_change(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let clerk = ClerkEmulator::start().await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    // However long the restart takes, the echo lands within the
    // allowance of the newer change, where the lower role would win.
    let env = replica_env(&test_db, &clerk, &[("CLOCK_SKEW_ALLOWANCE_MS", "30000")]);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let mut replica = Instance::new(binary, "replica-a", &env, log_dir.path());
    replica.start(&client).await;
    let webhooks = replica.url("/api/webhooks/clerk");
    clerk.send_webhooks_to(&webhooks, svix::TEST_SECRET, Delivery::Held);
    clerk.add_user("user_admin", Some("ADMIN"));
    clerk.add_user("user_u", None);
    assert_eq!(clerk.release_all_webhooks(false).await, [200, 200]);
    let token = clerk.mint_token("user_admin");
    let user_url = replica.url("/api/admin/users/user_u");
    let patch = |role: &'static str| {
        client
            .patch(&user_url)
            .bearer_auth(&token)
            .json(&json!({ "role": role }))
            .send()
    };

    // Clerk applies the push at once but answers only much later: the
    // replica dies (SIGKILL) in between, and nobody records the answer.
    clerk.set_answer_delay(Duration::from_secs(60));
    assert_eq!(patch("INSTRUCTOR").await.expect("sent").status(), 200);
    crate::helpers::wait_until("Clerk applied the push", || async {
        clerk.role("user_u").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    replica.kill();
    clerk.set_answer_delay(Duration::ZERO);

    // Back under the same name; a newer change while Clerk fails.
    clerk.fail_next(10_000, 503);
    replica.start(&client).await;
    assert_eq!(patch("ADMIN").await.expect("sent").status(), 200);

    // The push's echo arrives: INSTRUCTOR, within the allowance and
    // lower than ADMIN, so as a dashboard edit it would win. It may be
    // our own push's, so it cancels nothing.
    let echo = clerk
        .held_webhooks()
        .into_iter()
        .find(|held| held.user_id == "user_u" && held.kind == "user.updated")
        .expect("the echo is held");
    assert_eq!(clerk.release_webhook(&echo.svix_id).await, 200);
    let get = |url: String| async {
        let response = client.get(url).bearer_auth(&token).send().await;
        let json = response.expect("sent").json::<serde_json::Value>().await;
        json.expect("json")
    };
    let user = get(user_url.clone()).await;
    assert_eq!(user["role"], "ADMIN", "{user}");
    assert_ne!(user["sync"]["state"], "synced", "{user}");

    // Clerk recovers: the newer change reaches it.
    clerk.clear_faults();
    crate::helpers::wait_until("Clerk has the newer change", || async {
        clerk.role("user_u").as_deref() == Some("ADMIN")
    })
    .await;
    let history = get(format!("{user_url}/role-history")).await;
    let roles: Vec<&str> = history["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row["newRole"].as_str())
        .collect();
    assert_eq!(roles, ["ADMIN", "INSTRUCTOR", "STUDENT"], "{history}");
    replica.stop().await;
}

/// A replica frozen past its lease while it reads Clerk before a retry
/// (SIGSTOP: a stalled VM, CPU starvation) and woken while the replica that
/// took its push over is sending it: the woken replica sends nothing, and
/// Clerk receives the role once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stalled_past_its_lease_does_not_send_the_push_again() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let clerk = ClerkEmulator::start().await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    let env = replica_env(
        &test_db,
        &clerk,
        &[
            // Slow retries, so that the read before the retry can be held;
            // a timeout longer than the stall.
            ("CLERK_PUSH_RETRY_BASE_MS", "2000"),
            ("CLERK_PUSH_RETRY_MAX_SECS", "2"),
            ("CLERK_TIMEOUT_SECS", "60"),
        ],
    );
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let mut stalled = Instance::new(binary, "replica-stalled", &env, log_dir.path());
    let mut other = Instance::new(binary, "replica-other", &env, log_dir.path());
    stalled.start(&client).await;
    let webhooks = stalled.url("/api/webhooks/clerk");
    clerk.send_webhooks_to(&webhooks, svix::TEST_SECRET, Delivery::Retried);
    clerk.add_user("user_admin", Some("ADMIN"));
    clerk.add_user("user_s", None);
    clerk.wait_for_deliveries().await;

    // The first push fails; the retry's read of Clerk is answered only
    // 15 s later, and the replica freezes while it waits for it.
    clerk.fail_next(1, 503);
    let token = clerk.mint_token("user_admin");
    let response = client
        .patch(stalled.url("/api/admin/users/user_s"))
        .bearer_auth(&token)
        .json(&json!({"role": "INSTRUCTOR"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    crate::helpers::wait_until("the first push failed", || async {
        clerk
            .metadata_patches("user_s")
            .iter()
            .any(|push| push.status == 503)
    })
    .await;
    clerk.set_answer_delay(Duration::from_secs(15));
    let read = |requests: &[RecordedRequest]| {
        requests
            .iter()
            .any(|request| request.method == "GET" && request.path == "/v1/users/user_s")
    };
    crate::helpers::wait_until("the retry reads Clerk", || async {
        read(&clerk.requests())
    })
    .await;
    stalled.pause();
    clerk.set_answer_delay(Duration::ZERO);
    // Clerk is slow: the other replica's push is in flight for a while.
    clerk.set_delay(Duration::from_secs(3));

    // Once the frozen replica's lease expires, the other replica takes the
    // push over and sends it.
    other.start(&client).await;
    crate::helpers::wait_until("the other replica sends the push", || async {
        clerk.metadata_patches("user_s").iter().any(|push| {
            push.user_agent
                .as_deref()
                .is_some_and(|agent| agent.contains("replica-other"))
        })
    })
    .await;
    stalled.resume();

    // The woken replica gets its stale read, and either sends the role
    // again or finds its claim lost.
    crate::helpers::wait_until("the woken replica is done with the push", || async {
        let sent_again = clerk.metadata_patches("user_s").iter().any(|push| {
            push.status != 503
                && push
                    .user_agent
                    .as_deref()
                    .is_some_and(|agent| agent.contains("replica-stalled"))
        });
        sent_again || stalled.log_tail().contains("not sending it")
    })
    .await;
    crate::helpers::wait_until("Clerk has the role", || async {
        clerk.role("user_s").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    clerk.set_delay(Duration::ZERO);
    let pushes: Vec<(u16, Option<String>)> = clerk
        .metadata_patches("user_s")
        .into_iter()
        .map(|push| (push.status, push.user_agent))
        .collect();
    assert_eq!(
        pushes.iter().filter(|(status, _)| *status != 503).count(),
        1,
        "the role was sent more than once: {pushes:?}"
    );
    stalled.stop().await;
    other.stop().await;
}
