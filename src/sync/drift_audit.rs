//! The drift audit inside `serve`: every `RECONCILE_INTERVAL`, one replica
//! (the holder of the [walk lease](super::walk_lease)) walks Clerk's user
//! list as `backfill` does and repairs what lost webhooks left behind (see
//! [`app::drift_audit`](crate::app::drift_audit)); then it looks up, one by
//! one, the live users here that the walk did not find (deleted in Clerk,
//! their `user.deleted` lost). Its requests are paced at
//! `RECONCILE_RATE_SHARE` of the push rate, by a pacer of its own, so admin
//! pushes keep theirs.
//!
//! A run's progress is saved with each page it applies: a run stopped by a
//! restart, an error or a lost lease resumes where it stopped, whichever
//! replica takes it up.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use tokio::sync::watch;

use super::Pacer;
use super::backfill::{PAGE_SIZE, ensure_advances};
use super::clerk_instance::InstanceGate;
use super::retry::call_clerk;
use super::supervise::supervise;
use super::walk_lease::{LEASE, WalkLease};
use crate::app::drift_audit::{self, Finding};
use crate::clerk::{ClerkClient, ClerkError};
use crate::db::rows::{DriftAuditRow, now};
use crate::db::{Db, DbError, Queries as _};
use crate::domain::ClerkUserId;
use crate::metrics::Metrics;
use crate::with_conn;

/// Finished runs kept in `drift_audits` (for `/api/admin/sync/status`).
const KEEP_RUNS: i64 = 30;
/// Live users looked up in Clerk per transaction, after the walk.
const LOOKUPS_PER_STEP: i64 = 50;
/// Wait before trying again after a run stopped on an error.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// What a replica needs to audit.
pub struct DriftAudit {
    db: Db,
    client: ClerkClient,
    /// This replica's name on the walk lease and the runs.
    owner: String,
    interval: Duration,
    /// Requests per second to Clerk.
    rate_per_sec: f64,
    allowance_ms: i64,
    metrics: Arc<Metrics>,
    /// Open once the key's Clerk instance is confirmed as the database's.
    instance: InstanceGate,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Finished(DriftAuditRow),
    /// Someone else walks Clerk's users now (another replica's audit, or a
    /// backfill): nothing was done.
    Busy(super::walk_lease::Held),
}

impl DriftAudit {
    #[expect(clippy::too_many_arguments, reason = "each is the audit's own")]
    pub fn new(
        db: Db,
        client: ClerkClient,
        owner: String,
        interval: Duration,
        rate_per_sec: f64,
        allowance_ms: i64,
        metrics: Arc<Metrics>,
        instance: InstanceGate,
    ) -> Self {
        Self {
            db,
            client,
            owner,
            interval,
            rate_per_sec,
            allowance_ms,
            metrics,
            instance,
        }
    }

    /// Runs an audit whenever one is due, until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let audit = Arc::new(self);
        supervise(
            "drift audit",
            move |mut stop| {
                let audit = Arc::clone(&audit);
                async move {
                    tokio::select! {
                        () = audit.schedule() => {}
                        _ = stop.changed() => {}
                    }
                }
            },
            stop,
            || {},
        )
        .await;
    }

    async fn schedule(&self) {
        loop {
            let wait = match self.until_due().await {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::warn!(%error, "could not read the drift audit's schedule");
                    RETRY_AFTER
                }
            };
            tokio::time::sleep(wait).await;
            match self.run_once().await {
                Ok(RunEnd::Finished(_)) => {}
                // Its holder finishes the run, or leaves it to resume.
                Ok(RunEnd::Busy(_)) => tokio::time::sleep(LEASE.min(self.interval)).await,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "the drift audit stopped; it resumes later"
                    );
                    tokio::time::sleep(RETRY_AFTER.min(self.interval)).await;
                }
            }
        }
    }

    /// How long until the next run is due: at once when one is unfinished
    /// or none ever ran, else an interval after the last one started.
    async fn until_due(&self) -> Result<Duration, DbError> {
        let (unfinished, last) = with_conn!(self.db, conn => {
            Ok::<_, DbError>((
                conn.unfinished_drift_audit().await?,
                conn.last_drift_audit().await?,
            ))
        })?;
        if let Some(finished) = last.as_ref().and_then(|run| run.finished_at) {
            self.metrics.drift_audit_last_finished.set(unix(finished));
        }
        let due = match (unfinished, last) {
            (None, Some(last)) => last.started_at + delta(self.interval),
            _ => return Ok(Duration::ZERO),
        };
        Ok((due - now()).to_std().unwrap_or(Duration::ZERO))
    }

    /// One run, resumed or new, if the walk lease is free; not before the
    /// Clerk instance is confirmed.
    pub async fn run_once(&self) -> anyhow::Result<RunEnd> {
        self.instance.confirmed().await;
        let lease = match WalkLease::take(&self.db, &self.owner).await? {
            Ok(lease) => lease,
            Err(held) => return Ok(RunEnd::Busy(held)),
        };
        let ended = lease.hold(self.audit()).await;
        lease.release().await;
        ended.map(RunEnd::Finished)
    }

    async fn audit(&self) -> anyhow::Result<DriftAuditRow> {
        let mut run = with_conn!(self.db, conn => {
            drift_audit::resume_or_start(conn, &self.owner, now()).await
        })?;
        self.metrics
            .drift_audit_last_started
            .set(unix(run.started_at));
        if run.checked > 0 {
            tracing::info!(
                run = run.id,
                checked = run.checked,
                "resuming the drift audit"
            );
        } else {
            tracing::info!(run = run.id, "drift audit started");
        }
        let pacer = Pacer::new(self.rate_per_sec);
        if let Err(error) = self.compare(&pacer, &mut run).await {
            self.metrics.drift_audit_ended("stopped");
            let noted = with_conn!(self.db, conn => {
                drift_audit::stopped(conn, &run, &format!("{error:#}")).await
            });
            if let Err(noting) = noted {
                tracing::warn!(error = %noting, "could not note why the drift audit stopped");
            }
            return Err(error);
        }
        let run = with_conn!(self.db, conn => {
            drift_audit::finish(conn, &run, now(), KEEP_RUNS).await
        })?;
        self.metrics.drift_audit_ended("finished");
        if let Some(finished) = run.finished_at {
            self.metrics.drift_audit_last_finished.set(unix(finished));
        }
        tracing::info!(
            run = run.id,
            checked = run.checked,
            missing_here = run.found_missing_here,
            role_differs = run.found_role_differs,
            outdated = run.found_outdated,
            missing_in_clerk = run.found_missing_in_clerk,
            repaired = run.repaired,
            "drift audit finished"
        );
        Ok(run)
    }

    /// Walks Clerk's list from where `run` stands, then looks up the live
    /// users it did not find; `run` follows the progress saved.
    async fn compare(&self, pacer: &Pacer, run: &mut DriftAuditRow) -> anyhow::Result<()> {
        while !run.walked {
            let after = run.after_user_id.clone();
            let page = call_clerk(pacer, || {
                self.client.list_users(PAGE_SIZE, after.as_deref())
            })
            .await?;
            ensure_advances(after.as_deref(), &page)?;
            let last = page.len() < PAGE_SIZE;
            let (next, findings) = with_conn!(self.db, conn => {
                drift_audit::apply_page(conn, run, &page, last, self.allowance_ms).await
            })?;
            *run = next;
            self.report(run, page.len(), &findings);
        }
        loop {
            let ids = with_conn!(self.db, conn => {
                drift_audit::unaudited(conn, run, LOOKUPS_PER_STEP).await
            })?;
            if ids.is_empty() {
                return Ok(());
            }
            let mut looked_up = Vec::with_capacity(ids.len());
            for id in ids {
                match call_clerk(pacer, || self.client.get_user(&id)).await {
                    Ok(user) => looked_up.push((id, user)),
                    Err(error) => skip_or_stop(&id, error)?,
                }
            }
            let (next, findings) = with_conn!(self.db, conn => {
                drift_audit::apply_lookups(conn, run, &looked_up, self.allowance_ms).await
            })?;
            *run = next;
            self.report(run, looked_up.len(), &findings);
        }
    }

    fn report(&self, run: &DriftAuditRow, checked: usize, findings: &[Finding]) {
        self.metrics
            .drift_audit_users_checked
            .inc_by(checked as u64);
        for finding in findings {
            self.metrics.drift(finding.kind, finding.repaired);
            if finding.repaired {
                tracing::info!(
                    run = run.id,
                    user_id = %finding.user_id,
                    kind = finding.kind.as_str(),
                    "drift repaired"
                );
            } else {
                tracing::warn!(
                    run = run.id,
                    user_id = %finding.user_id,
                    kind = finding.kind.as_str(),
                    "drift found, not repaired (Clerk's state could not be applied)"
                );
            }
        }
    }
}

/// A lookup Clerk refused: this user is skipped (the next run looks again)
/// unless the refusal is about our credentials, which would refuse every
/// other lookup too.
fn skip_or_stop(id: &ClerkUserId, error: ClerkError) -> anyhow::Result<()> {
    match error {
        ClerkError::Refused { status, .. } if status != 401 && status != 403 => {
            tracing::warn!(user_id = %id, %error, "Clerk refused the drift audit's lookup; skipping the user");
            Ok(())
        }
        error => Err(error.into()),
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn unix(at: NaiveDateTime) -> f64 {
    at.and_utc().timestamp_micros() as f64 / 1e6
}
