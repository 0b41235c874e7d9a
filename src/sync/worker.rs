//! The push worker: claims due rows of `clerk_sync`, sends each role to Clerk
//! without holding any database lock during the call, and records the result.
//!
//! Woken right after a change (and polled once a second, for changes made by
//! other replicas or the CLI). Several replicas may run it on one PostgreSQL
//! database: a claim is a lease (`claimed_until`), taken with `SKIP LOCKED`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::Pacer;
use crate::clerk::{ClerkClient, ClerkError};
use crate::config::PushConfig;
use crate::db::clerk_sync::{self, PushResult, SyncRow};
use crate::db::users::now;
use crate::db::{Db, DbError, Dialect as _, Store as _};
use crate::domain::{ClerkState, ClerkUserId, MetadataRole, Role};
use crate::metrics::Metrics;
use crate::with_conn;

/// Pushes in flight at once (the pacer spaces their starts).
const CONCURRENCY: usize = 32;
/// How long a claim lasts. A push only starts while at least the request
/// timeout and this margin remain, so it ends before anyone else may claim.
const LEASE: Duration = Duration::from_secs(120);
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Tries to record a push's result before leaving it to the lease.
const RECORD_ATTEMPTS: u32 = 5;
/// Longest sleep between two looks at the table.
const POLL: Duration = Duration::from_secs(1);

/// Drains the outbox.
pub struct PushWorker {
    db: Db,
    client: ClerkClient,
    config: PushConfig,
    pacer: Pacer,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// Controls a running worker.
pub struct WorkerHandle {
    wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// A waker to call after queueing a push.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops claiming, lets the pushes in flight finish, and waits for that.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

impl PushWorker {
    /// Starts the worker on the current runtime.
    pub fn spawn(
        db: Db,
        client: ClerkClient,
        config: PushConfig,
        metrics: Arc<Metrics>,
    ) -> WorkerHandle {
        let wake = Arc::new(Notify::new());
        let (shutdown, stop) = watch::channel(false);
        let worker = Self {
            db,
            client,
            config,
            pacer: Pacer::new(config.rate_per_sec),
            wake: wake.clone(),
            metrics,
        };
        // diesel-async's transactions make futures that the compiler cannot
        // prove `Send` (rust-lang/rust#100013), so the worker is not spawned
        // as a task: it runs on a blocking thread of the same runtime, whose
        // I/O it shares.
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || runtime.block_on(worker.run(stop)));
        WorkerHandle {
            wake,
            shutdown,
            task,
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(rate = self.config.rate_per_sec, "push worker started");
        // Pushes in flight; new rows are claimed as soon as one finishes, so a
        // slow Clerk answer never holds back the changes queued behind it.
        let mut in_flight = FuturesUnordered::new();
        loop {
            let stopping = *stop.borrow();
            if stopping && in_flight.is_empty() {
                break;
            }
            let free = CONCURRENCY - in_flight.len();
            let mut claimed_all_free = false;
            if !stopping && free > 0 {
                match drive(&mut in_flight, self.claim(free)).await {
                    Ok(rows) => {
                        claimed_all_free = rows.len() == free;
                        for row in rows {
                            in_flight.push(self.push(row));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not claim pushes; retrying"),
                }
            }
            let wait = if stopping || claimed_all_free {
                POLL
            } else {
                drive(&mut in_flight, self.until_next_due()).await
            };
            // A wake-up that came while claiming left a permit: nothing is missed.
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                () = self.wake.notified(), if !stopping => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed(), if !stopping => {}
            }
        }
        tracing::info!("push worker stopped");
    }

    async fn claim(&self, limit: usize) -> Result<Vec<SyncRow>, DbError> {
        let now = now();
        let lease_until = now + delta(LEASE);
        let limit = i64::try_from(limit).unwrap_or(1);
        with_conn!(self.db, conn => {
            Ok(conn.claim_due_pushes(now, lease_until, limit).await?)
        })
    }

    async fn until_next_due(&self) -> Duration {
        let now = now();
        let due: Result<Option<NaiveDateTime>, DbError> =
            with_conn!(self.db, conn => Ok(conn.next_push_due(now).await?));
        match due {
            Ok(Some(at)) => (at - now).to_std().unwrap_or(Duration::ZERO).min(POLL),
            _ => POLL,
        }
    }

    /// Sends one claimed row and records what happened.
    async fn push(&self, row: SyncRow) {
        let Ok(user_id) = ClerkUserId::parse(row.user_id.as_str()) else {
            return;
        };
        let (result, label) = match row.desired_role.parse::<Role>() {
            Ok(role) => self.send(&user_id, role, &row).await,
            Err(_) => (
                PushResult::GiveUp(format!("stored role {:?} is not valid", row.desired_role)),
                "failed",
            ),
        };
        if let PushResult::GiveUp(error) | PushResult::RetryAt(_, error) = &result {
            tracing::warn!(user.id = %user_id, attempts = row.attempts, error, "push to Clerk failed");
        }
        self.record(&user_id, row.version, result).await;
        // Counted once recorded, so the metric never runs ahead of the table.
        self.metrics.push_attempts.with_label_values(&[label]).inc();
    }

    /// Stores a push's result. Retried a few times: a lost result would leave
    /// the row leased until the lease expires (and the push sent again).
    async fn record(&self, user_id: &ClerkUserId, version: i64, result: PushResult) {
        for attempt in 1..=RECORD_ATTEMPTS {
            let finished: Result<(), DbError> = with_conn!(self.db, conn => {
                clerk_sync::finish_push(conn, user_id, version, result.clone()).await
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

    /// Sends the role; returns what to record and the `result` label of
    /// `clerk_push_attempts_total`.
    async fn send(
        &self,
        user_id: &ClerkUserId,
        role: Role,
        row: &SyncRow,
    ) -> (PushResult, &'static str) {
        let latest_start = tokio::time::Instant::now() + LEASE - self.config.timeout - LEASE_MARGIN;
        if tokio::time::timeout_at(latest_start, self.pacer.wait_for_slot())
            .await
            .is_err()
        {
            // Waiting longer would outlive the lease: hand the row back.
            let result = PushResult::RetryAt(now(), "waiting for Clerk's rate limit".into());
            return (result, "deferred");
        }
        match self.client.set_role(user_id, role).await {
            Ok(user) => match user.metadata_role() {
                MetadataRole::Known(pushed) => {
                    tracing::info!(user.id = %user_id, role = %pushed, attempts = row.attempts, "role pushed to Clerk");
                    let landed = PushResult::Landed(ClerkState {
                        role: pushed,
                        updated_at: user.updated_at,
                    });
                    (landed, "landed")
                }
                _ => (
                    self.retry(row.attempts, None, "Clerk's answer has no role".into()),
                    "retry",
                ),
            },
            Err(ClerkError::RateLimited { retry_after }) => {
                let pause = retry_after.unwrap_or_else(|| self.backoff(row.attempts));
                self.pacer.pause(pause);
                let error = ClerkError::RateLimited { retry_after }.to_string();
                (self.retry(row.attempts, Some(pause), error), "rate_limited")
            }
            Err(error) if error.is_retryable() => {
                (self.retry(row.attempts, None, error.to_string()), "retry")
            }
            Err(error) => (PushResult::GiveUp(error.to_string()), "failed"),
        }
    }

    /// The next attempt: exponential backoff with jitter, never before `not_before`.
    fn retry(&self, attempts: i32, not_before: Option<Duration>, error: String) -> PushResult {
        let wait = self.backoff(attempts).max(not_before.unwrap_or_default());
        PushResult::RetryAt(now() + delta(wait), error)
    }

    /// `base · 2^(attempts-1)`, capped, then scaled by a random factor in
    /// [0.5, 1] so that many failed pushes do not retry in lockstep.
    fn backoff(&self, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let full = self
            .config
            .retry_base
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.config.retry_max);
        full.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Awaits `work` while the pushes in flight go on: they may hold the pool's
/// connections, which `work` may be waiting for.
async fn drive<T>(
    in_flight: &mut (impl Stream<Item = ()> + Unpin),
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            Some(()) = in_flight.next() => {}
        }
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}
