//! The push worker: claims due rows of `clerk_sync`, sends each role to Clerk
//! without holding any database lock during the call, and records the result.
//!
//! A row is claimed only when this replica's slots of the Clerk budget
//! (shared by every replica, [`ClerkBudget`]) run out less than
//! [`LOOKAHEAD`] ahead; each claimed row takes the next slot and is sent
//! when it starts, so a claim means "being sent now or in a moment" (up to
//! 32 at once; at a low rate, or during a 429's pause, a claimed row waits
//! for its slot with its claim renewed). The claim is a short lease in the
//! name of this replica (`REPLICA_ID`), renewed while the push is held: a
//! replica that dies strands its claims for at most [`LEASE`], and one that
//! restarts takes them back at once. Several replicas may run on one
//! PostgreSQL database: claims are taken with `SKIP LOCKED`.
//!
//! Leases and due times are the database's clock, never this replica's. A
//! push is sent only under a live claim: right before the request, the
//! note of what it may write is stored only if this replica still holds
//! the claim, and it stretches the lease past the request's timeout, so no
//! other replica can take the row over while the request is in flight. A
//! replica that lost its claim (stalled past its lease, its row taken over
//! or settled) sends nothing and records nothing.
//!
//! Nothing is claimed until the Clerk instance of the key is confirmed as
//! the database's (the [`InstanceGate`]): a key of another instance never
//! receives a push.
//!
//! A retry first reads the user from Clerk, so that a dashboard edit whose
//! webhook is late still wins over a stale retry (DESIGN.md, "Echo and
//! races"). The worker is supervised: if it ends or panics it is started
//! again; its heartbeat is what `/readyz` reports.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::budget::ClerkBudget;
use super::clerk_instance::InstanceGate;
use super::supervise::supervise;
use crate::app::push::{self, PushResult, RetryCheck};
use crate::clerk::{ClerkClient, ClerkError, ClerkUser};
use crate::config::PushConfig;
use crate::db::rows::{Noted, OutboxRow, Sending};
use crate::db::{Db, DbError, Queries as _};
use crate::domain::{ClerkState, ClerkUserId, MetadataRole, Role, RoleSet, UnrecordedPushes};
use crate::metrics::Metrics;
use crate::with_conn;

/// Pushes in flight at once (the budget's slots space their starts).
const CONCURRENCY: usize = 32;
/// How far ahead of now this replica's slots of the budget may run: enough
/// that a push is ready when its slot starts, little enough that the
/// replicas share the slots as they come.
const LOOKAHEAD: Duration = Duration::from_millis(250);
/// How long a claim lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often the claims of pushes in flight are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Tries to record a push's result before leaving it to the lease.
const RECORD_ATTEMPTS: u32 = 5;
/// Longest sleep between two looks at the table.
const POLL: Duration = Duration::from_secs(1);
/// A worker whose heartbeat is older than this is stuck.
pub const STALLED_AFTER: Duration = Duration::from_secs(15);

/// When the worker last went round its loop.
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// What the rest of the service holds of a running worker.
#[derive(Clone)]
pub struct WorkerLink {
    wake: Arc<Notify>,
    heartbeat: Arc<Heartbeat>,
}

impl WorkerLink {
    /// Tells the worker a push was just queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `None` while the worker goes round its loop; how long it has been
    /// silent once that is longer than `STALLED_AFTER`.
    pub fn stalled_for(&self) -> Option<Duration> {
        let age = self.heartbeat.age();
        (age > STALLED_AFTER).then_some(age)
    }
}

/// Controls a running worker.
pub struct WorkerHandle {
    link: WorkerLink,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// The waker and heartbeat, for the HTTP side.
    pub fn link(&self) -> WorkerLink {
        self.link.clone()
    }

    /// Stops claiming, lets the pushes in flight finish, hands back every
    /// claim, and waits for that.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Drains the outbox.
pub struct PushWorker {
    db: Db,
    client: ClerkClient,
    config: PushConfig,
    /// This replica's name on its claims.
    owner: String,
    budget: ClerkBudget,
    wake: Arc<Notify>,
    heartbeat: Arc<Heartbeat>,
    metrics: Arc<Metrics>,
    /// Open once the key's Clerk instance is confirmed as the database's.
    instance: InstanceGate,
}

impl PushWorker {
    /// Starts the worker, supervised, on the current runtime.
    pub fn spawn(
        db: Db,
        client: ClerkClient,
        config: PushConfig,
        owner: String,
        metrics: Arc<Metrics>,
        instance: InstanceGate,
    ) -> WorkerHandle {
        let wake = Arc::new(Notify::new());
        let heartbeat = Arc::new(Heartbeat::new());
        let (shutdown, stop) = watch::channel(false);
        let worker = Arc::new(Self {
            budget: ClerkBudget::for_pushes(db.clone(), config.rate_per_sec),
            db,
            client,
            config,
            owner,
            wake: wake.clone(),
            heartbeat: heartbeat.clone(),
            metrics: metrics.clone(),
            instance,
        });
        let task = tokio::spawn(supervise(
            "push worker",
            move |stop| {
                let worker = worker.clone();
                async move { worker.run(stop).await }
            },
            stop,
            move || metrics.push_worker_restarts.inc(),
        ));
        WorkerHandle {
            link: WorkerLink { wake, heartbeat },
            shutdown,
            task,
        }
    }

    async fn run(&self, mut stop: watch::Receiver<bool>) {
        tracing::info!(rate = self.config.rate_per_sec, owner = %self.owner, "push worker started");
        // Claims left by an earlier run of this replica (a crash, a kill)
        // are ours to take back now rather than when their lease expires.
        match self.release_own_claims().await {
            Ok(0) => {}
            Ok(claims) => {
                tracing::info!(claims, "took back claims left by an earlier run");
                self.metrics
                    .push_claims_taken_back
                    .inc_by(u64::try_from(claims).unwrap_or(0));
            }
            Err(error) => tracing::warn!(%error, "could not take back earlier claims"),
        }
        let mut in_flight = FuturesUnordered::new();
        let mut held: HashSet<ClerkUserId> = HashSet::new();
        let mut renewed_at = Instant::now();
        let mut instance = self.instance.changes();
        // The start of the last slot this replica took.
        let mut last_slot = Instant::now();
        loop {
            self.heartbeat.beat();
            let stopping = *stop.borrow();
            if stopping && in_flight.is_empty() {
                break;
            }
            if renewed_at.elapsed() >= RENEW_EVERY {
                renewed_at = Instant::now();
                if !held.is_empty() {
                    let ids: Vec<ClerkUserId> = held.iter().cloned().collect();
                    match alongside_pushes(&mut in_flight, &mut held, self.renew(&ids)).await {
                        Ok(renewed) => self
                            .metrics
                            .push_lease_renewals
                            .inc_by(u64::try_from(renewed).unwrap_or(0)),
                        Err(error) => tracing::warn!(%error, "could not renew claims"),
                    }
                }
            }
            // One row per slot of the budget, taken as it is claimed: what
            // is claimed is being sent, now or when its slot comes; nothing
            // is claimed during a pause this replica knows of; and nothing
            // goes to an instance not confirmed as the database's.
            let confirmed = self.instance.is_confirmed();
            let can_send =
                !stopping && confirmed && in_flight.len() < CONCURRENCY && !self.budget.is_paused();
            let mut wait = POLL;
            let ahead = last_slot.saturating_duration_since(Instant::now());
            if can_send && ahead < LOOKAHEAD {
                match alongside_pushes(&mut in_flight, &mut held, self.claim()).await {
                    Ok(Some(row)) => {
                        if row.taken_over {
                            tracing::warn!(user.id = %row.user_id, "took over a push whose owner's lease expired");
                            self.metrics.push_leases_expired.inc();
                        }
                        let slot =
                            alongside_pushes(&mut in_flight, &mut held, self.budget.take()).await;
                        last_slot = last_slot.max(slot);
                        held.insert(row.user_id.clone());
                        in_flight.push(self.push(row, slot, stop.clone()));
                        wait = Duration::ZERO;
                    }
                    Ok(None) => {
                        wait = alongside_pushes(&mut in_flight, &mut held, self.until_next_due())
                            .await;
                    }
                    Err(error) => tracing::warn!(%error, "could not claim a push; retrying"),
                }
            } else if can_send {
                wait = ahead.saturating_sub(LOOKAHEAD);
            }
            let wait = wait
                .min(POLL)
                .min(RENEW_EVERY.saturating_sub(renewed_at.elapsed()));
            self.metrics
                .push_claims_held
                .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
            // A wake-up that came while claiming left a permit: nothing is missed.
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    held.remove(&done);
                }
                () = self.wake.notified(), if !stopping => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed(), if !stopping => {}
                _ = instance.changed(), if !stopping && !confirmed => {}
            }
        }
        self.metrics.push_claims_held.set(0);
        // Anything still claimed (a result that could not be recorded) goes
        // back to the other replicas now.
        if let Err(error) = self.release_own_claims().await {
            tracing::warn!(%error, "could not hand back claims");
        }
        tracing::info!("push worker stopped");
    }

    async fn release_own_claims(&self) -> Result<usize, DbError> {
        with_conn!(self.db, conn => push::hand_back(conn, &self.owner).await)
    }

    async fn renew(&self, user_ids: &[ClerkUserId]) -> Result<usize, DbError> {
        let lease = millis(LEASE);
        with_conn!(self.db, conn => push::renew(conn, &self.owner, user_ids, lease).await)
    }

    /// The due push to send next, if any.
    async fn claim(&self) -> Result<Option<OutboxRow>, DbError> {
        let lease = millis(LEASE);
        with_conn!(self.db, conn => push::claim(conn, &self.owner, lease).await)
    }

    async fn until_next_due(&self) -> Duration {
        let due: Result<Option<i64>, DbError> =
            with_conn!(self.db, conn => Ok(conn.next_push_due_in().await?));
        match due {
            Ok(Some(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            _ => POLL,
        }
    }

    /// Sends one claimed row once its slot starts and records what
    /// happened; returns its user id.
    async fn push(
        &self,
        row: OutboxRow,
        slot: Instant,
        mut stop: watch::Receiver<bool>,
    ) -> ClerkUserId {
        // Told to stop before its slot: not sent, and handed back with the
        // worker's other claims as it stops.
        tokio::select! {
            () = self.budget.wait_for(slot) => {}
            _ = stop.wait_for(|stop| *stop) => return row.user_id,
        }
        let user_id = &row.user_id;
        let (result, label) = self.attempt(user_id, row.desired_role, &row).await;
        if let Some(PushResult::GiveUp(error) | PushResult::RetryIn(_, error)) = &result {
            tracing::warn!(user.id = %user_id, attempts = row.attempts, error, "push to Clerk failed");
        }
        if let Some(result) = result {
            self.record(user_id, row.version, result).await;
        }
        // Counted once recorded, so the metric never runs ahead of the table.
        self.metrics.push_attempt(label);
        row.user_id
    }

    /// Says why a claimed push found its claim gone when it came to note
    /// the send. A newer intent (a dashboard edit, a newer role) cancelling
    /// a push that waited for its slot is the rule at work; a claim whose
    /// lease expired and that another replica took over is worth a warning.
    async fn claim_lost_before_sending(&self, user_id: &ClerkUserId) {
        let row: Result<Option<OutboxRow>, DbError> =
            with_conn!(self.db, conn => Ok(conn.find_outbox_row(user_id).await?));
        let owner = row.ok().flatten().and_then(|row| row.claimed_by);
        if owner.as_ref().is_some_and(|owner| *owner != self.owner) {
            tracing::warn!(user.id = %user_id, "the claim on this push expired and another replica took it over before it was sent; not sending it");
            self.metrics.push_leases_expired.inc();
        } else {
            tracing::info!(user.id = %user_id, "the push was settled or cancelled by a newer intent before it was sent; not sending it");
        }
    }

    /// Stores a push's result. Retried a few times: a lost result would leave
    /// the row claimed until its lease expires (and the push sent again).
    async fn record(&self, user_id: &ClerkUserId, version: i64, result: PushResult) {
        let allowance = allowance_ms(self.config.clock_skew_allowance);
        for attempt in 1..=RECORD_ATTEMPTS {
            let finished: Result<(), DbError> = with_conn!(self.db, conn => {
                push::finish_push(conn, user_id, version, result.clone(), allowance, &self.owner).await
            });
            match finished {
                Ok(()) => return,
                Err(error) if attempt < RECORD_ATTEMPTS => {
                    tracing::warn!(user.id = %user_id, %error, attempt, "could not record a push result; retrying");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
                Err(error) => {
                    tracing::error!(user.id = %user_id, %error, "could not record a push result");
                }
            }
        }
    }

    /// One attempt: on a retry, Clerk is read first; then the role is sent.
    /// Returns what to record (`None`: nothing more, the push was cancelled)
    /// and the `result` label of `clerk_role_sync_push_attempts_total`.
    async fn attempt(
        &self,
        user_id: &ClerkUserId,
        role: Role,
        row: &OutboxRow,
    ) -> (Option<PushResult>, &'static str) {
        // What earlier pushes of this user may have written unrecorded.
        let mut unrecorded = UnrecordedPushes {
            roles: RoleSet::from_bits(row.unrecorded_roles),
            until: row.unrecorded_until,
        };
        // `attempts` counts this one: more than one means an earlier failed.
        if row.attempts > 1 {
            // The read goes in the push's slot; the send, a request to
            // Clerk like any other, takes the next one.
            match self.client.get_user(user_id).await {
                Ok(Some(user)) => match self.check_before_retry(&user, row).await {
                    // Clerk's state is recorded: nothing older can echo.
                    Ok(RetryCheck::Send) => {
                        unrecorded = UnrecordedPushes::NONE;
                        self.budget.wait_for_slot().await;
                    }
                    Ok(RetryCheck::Cancelled) => return (None, "cancelled"),
                    Ok(RetryCheck::AlreadyThere(state)) => {
                        return (Some(PushResult::Landed(state)), "landed");
                    }
                    Err(error) => {
                        let error = format!("could not check Clerk's state first: {error}");
                        return (Some(self.retry(row.attempts, None, error)), "retry");
                    }
                },
                Ok(None) => {
                    let error = "the user no longer exists in Clerk".to_owned();
                    return (Some(PushResult::GiveUp(error)), "failed");
                }
                Err(error) => return self.failed(row, error).await,
            }
        }
        self.send(user_id, role, row, unrecorded).await
    }

    /// Sends the role. It is noted first: if this replica dies before it
    /// records Clerk's answer, the push's echo is still known as possibly
    /// ours.
    async fn send(
        &self,
        user_id: &ClerkUserId,
        role: Role,
        row: &OutboxRow,
        unrecorded: UnrecordedPushes,
    ) -> (Option<PushResult>, &'static str) {
        // Until its answer comes, Clerk may apply it as late as the
        // request's timeout, by the database's clock. The claim must still
        // be ours, by that clock too, and it then lasts until the request
        // has surely ended.
        let sending = Sending {
            roles: unrecorded.roles.with(role),
            earlier_until: unrecorded.until,
            may_apply_ms: millis(self.config.timeout),
        };
        let lease = millis(self.config.timeout.saturating_add(LEASE));
        let (noted, asked_at) = loop {
            // Counted from before the note: the database's time later on is
            // then never behind.
            let asked_at = Instant::now();
            let noted: Result<Option<Noted>, DbError> = with_conn!(self.db, conn => {
                push::note_before_sending(conn, user_id, row.version, &self.owner, sending, lease).await
            });
            // A 429 at another replica paused the budget after this push's
            // slot was taken: it waits the pause out (its claim renewed
            // meanwhile) and goes in a slot after it.
            match noted {
                Ok(Some(noted)) if noted.paused_us > 0 => {
                    self.budget.paused_for(asked_at, noted.paused_us);
                    self.budget.wait_for(asked_at).await;
                }
                noted => break (noted, asked_at),
            }
        };
        let noted_at = match noted {
            Ok(Some(noted)) => DbClock::read(noted.now_ms, asked_at),
            Ok(None) => {
                self.claim_lost_before_sending(user_id).await;
                return (None, "cancelled");
            }
            Err(error) => {
                let error = format!("could not note the push before sending it: {error}");
                return (Some(self.retry(row.attempts, None, error)), "retry");
            }
        };
        // Noted as possibly applied until the database's time at the note
        // plus the timeout: the request gives up by then, however long the
        // note took (its clock reading came after `asked_at`). Until then
        // the push is in flight; after, a newer intent may cancel it.
        let Some(within) = self
            .config
            .timeout
            .checked_sub(asked_at.elapsed())
            .filter(|left| !left.is_zero())
        else {
            let error = "the note before sending took the whole request timeout".to_owned();
            return (Some(self.retry(row.attempts, None, error)), "retry");
        };
        let sent = self.client.set_role(user_id, role, within).await;
        let after = match &sent {
            // Clerk answered: its answer is recorded below.
            Ok(_) => None,
            // Clerk answered with an error: it wrote nothing.
            Err(error) if !error.may_have_applied() => Some(unrecorded),
            // No answer: Clerk may have applied it, by now at the latest.
            Err(_) => Some(UnrecordedPushes {
                roles: sending.roles,
                until: Some(noted_at.now_ms().max(unrecorded.until.unwrap_or(i64::MIN))),
            }),
        };
        if let Some(after) = after
            && let Err(error) = self.note_unrecorded(user_id, after).await
        {
            tracing::warn!(user.id = %user_id, %error, "could not update a push's note");
        }
        match sent {
            Ok(user) => match user.metadata_role() {
                MetadataRole::Known(pushed) => {
                    tracing::info!(user.id = %user_id, role = %pushed, attempts = row.attempts, "role pushed to Clerk");
                    let landed = PushResult::Landed(ClerkState {
                        role: pushed,
                        updated_at: user.updated_at,
                    });
                    (Some(landed), "landed")
                }
                _ => (
                    Some(self.retry(row.attempts, None, "Clerk's answer has no role".into())),
                    "retry",
                ),
            },
            Err(error) => self.failed(row, error).await,
        }
    }

    /// Stores the roles this user's pushes may have written to Clerk
    /// without their answer being recorded.
    async fn note_unrecorded(
        &self,
        user_id: &ClerkUserId,
        pushes: UnrecordedPushes,
    ) -> Result<(), DbError> {
        with_conn!(self.db, conn => push::note_unrecorded(conn, user_id, pushes).await)
    }

    /// Applies what Clerk holds now by the race rule, in the name of this
    /// worker's claim.
    async fn check_before_retry(
        &self,
        user: &ClerkUser,
        row: &OutboxRow,
    ) -> Result<RetryCheck, DbError> {
        let allowance = allowance_ms(self.config.clock_skew_allowance);
        with_conn!(self.db, conn => {
            push::check_before_retry(conn, &row.user_id, user, row.version, &self.owner, allowance).await
        })
    }

    /// What to record after Clerk refused or failed.
    async fn failed(
        &self,
        row: &OutboxRow,
        error: ClerkError,
    ) -> (Option<PushResult>, &'static str) {
        match error {
            ClerkError::RateLimited { retry_after } => {
                // Clerk's number is taken at its word only up to our longest
                // delay: a huge Retry-After must not stop the worker for good.
                let pause = retry_after
                    .unwrap_or_else(|| self.backoff(row.attempts))
                    .min(self.config.retry_max);
                self.budget.pause(pause).await;
                let error = ClerkError::RateLimited { retry_after }.to_string();
                (
                    Some(self.retry(row.attempts, Some(pause), error)),
                    "rate_limited",
                )
            }
            error if error.is_retryable() => (
                Some(self.retry(row.attempts, None, error.to_string())),
                "retry",
            ),
            error => (Some(PushResult::GiveUp(error.to_string())), "failed"),
        }
    }

    /// The next attempt: exponential backoff with jitter, never before `not_before`.
    fn retry(&self, attempts: i32, not_before: Option<Duration>, error: String) -> PushResult {
        let wait = self.backoff(attempts).max(not_before.unwrap_or_default());
        PushResult::RetryIn(millis(wait), error)
    }

    /// The delay after `attempts` tries, with jitter (see [`Backoff`]).
    fn backoff(&self, attempts: i32) -> Duration {
        let retry = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        Backoff::new(self.config.retry_base, self.config.retry_max)
            .with_jitter()
            .delay(retry)
    }
}

/// The database's clock as read once, run on by this replica's monotonic
/// clock: the database's time later on without asking it again, and
/// whatever this replica's own wall clock says.
#[derive(Debug, Clone, Copy)]
struct DbClock {
    read_ms: i64,
    read_at: Instant,
}

impl DbClock {
    /// The database's clock read as `db_ms` (ms since the epoch) by a
    /// request sent at `asked_at`.
    fn read(db_ms: i64, asked_at: Instant) -> Self {
        Self {
            read_ms: db_ms,
            read_at: asked_at,
        }
    }

    /// The database's time now, in ms since the epoch.
    fn now_ms(&self) -> i64 {
        self.read_ms.saturating_add(millis(self.read_at.elapsed()))
    }
}

/// Awaits `work` while the pushes in flight go on (they may hold the pool's
/// connections, which `work` may be waiting for); those that finish leave
/// `held`.
async fn alongside_pushes<T>(
    in_flight: &mut (impl Stream<Item = ClerkUserId> + Unpin),
    held: &mut HashSet<ClerkUserId>,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            Some(done) = in_flight.next() => {
                held.remove(&done);
            }
        }
    }
}

/// A duration as the database adds it to its clock: ms, saturating.
fn millis(wait: Duration) -> i64 {
    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
}

/// The allowance as the domain rules take it.
pub fn allowance_ms(allowance: Duration) -> i64 {
    i64::try_from(allowance.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i64::MAX);
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_heartbeat_is_a_stall() {
        let link = WorkerLink {
            wake: Arc::new(Notify::new()),
            heartbeat: Arc::new(Heartbeat::new()),
        };
        link.heartbeat.beat();
        assert_eq!(link.stalled_for(), None);
        tokio::time::advance(STALLED_AFTER + Duration::from_secs(1)).await;
        assert!(link.stalled_for().is_some());
        link.heartbeat.beat();
        assert_eq!(link.stalled_for(), None);
    }
}
