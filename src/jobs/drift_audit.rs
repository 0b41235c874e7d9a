//! The drift audit: a walk of Clerk's user list, as `backfill` walks it,
//! that repairs what lost webhooks left behind (see
//! [`app::drift_audit`](crate::app::drift_audit)); then the lookup, one by
//! one, of the live users here the walk did not find (deleted in Clerk,
//! their `user.deleted` lost), named by the sketch of what it found.
//! Inside `serve` one replica (the holder of the
//! [walk lease](super::walk_lease)) runs it every `RECONCILE_INTERVAL`;
//! `reconcile` runs the same walk from the command line. Its requests take
//! what pushes leave of the Clerk budget every replica shares, at most
//! `RECONCILE_RATE_SHARE` of it (`reconcile --rate`), so admin pushes come
//! first.
//!
//! An audit's progress is saved with each page it applies: a run stopped
//! by a restart, an error or a lost lease resumes where it stopped,
//! whichever replica takes it up. Nothing it does on its own can delete
//! or demote many users: deletions and ADMIN demotions wait for the run's
//! end, are made only within its budget (`RECONCILE_MAX_DELETIONS`), each
//! confirmed by a fresh lookup; a list far shorter than the users here
//! stops the run before any lookup, and so do more users missing from the
//! list than the audit can name without looking up nearly every user.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use futures_util::TryStreamExt as _;
use tokio::sync::watch;

use super::ClerkBudget;
use super::clerk_instance::InstanceGate;
use super::list_walk::{ListWalk, Step};
use super::retry::call_clerk;
use super::supervise::supervise;
use super::walk_lease::{Held, LEASE, WalkLease};
use crate::app::drift_audit::{self, Finding, Rules, RunMode, Waiting};
use crate::clerk::{ClerkClient, ClerkError, ClerkUser};
use crate::db::rows::DriftAuditRow;
use crate::db::{Db, DbError, Queries as _};
use crate::domain::{ClerkUserId, DECODES_UP_TO, IdSketch};
use crate::metrics::Metrics;
use crate::with_conn;

/// Finished runs kept in `drift_audits` (for `/api/admin/sync/status`).
const KEEP_RUNS: i64 = 30;
/// Users looked up in Clerk per transaction.
const LOOKUPS_PER_STEP: usize = 50;
/// The largest share of the users here the audit inside `serve` looks up
/// beyond those its sketch names (ids it cannot rule out); past it, the
/// run waits for an operator.
const MAY_LOOK_UP_SHARE: f64 = 0.001;
/// Wait before trying again after a run stopped on an error.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// Times one attempt at a run starts its walk over when Clerk refuses its
/// cursor, before it stops.
const MAX_WALK_RESTARTS: u32 = 3;
/// How often `reconcile` looks whether the walk lease is free.
const LEASE_POLL: Duration = Duration::from_secs(2);

/// How an audit runs: its cadence, pace and budget.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// Time between two runs inside `serve`.
    pub interval: Duration,
    /// Requests per second to Clerk at most (its share of the budget).
    pub rate_per_sec: f64,
    /// The Clerk budget every replica and command shares
    /// (`CLERK_PUSH_RATE`): the audit takes what pushes leave of it.
    pub budget_per_sec: f64,
    /// Longest `Retry-After` honoured (as the push worker's).
    pub max_wait: Duration,
    /// The race rule's clock-skew allowance.
    pub allowance_ms: i64,
    /// Deletions and ADMIN demotions a run may make.
    pub max_deletions: i64,
}

/// What a replica (or `reconcile`) needs to audit.
pub struct DriftAudit {
    db: Db,
    client: ClerkClient,
    /// Its name on the walk lease and the runs.
    owner: String,
    settings: AuditSettings,
    metrics: Arc<Metrics>,
    /// Open once the key's Clerk instance is confirmed as the database's.
    instance: InstanceGate,
    /// Print each finding to stdout (`reconcile`), besides logging it.
    print: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Finished(DriftAuditRow),
    /// Someone else walks Clerk's users now (another replica's audit, or a
    /// backfill): nothing was done.
    Busy(Held),
}

impl DriftAudit {
    pub fn new(
        db: Db,
        client: ClerkClient,
        owner: String,
        settings: AuditSettings,
        metrics: Arc<Metrics>,
        instance: InstanceGate,
    ) -> Self {
        Self {
            db,
            client,
            owner,
            settings,
            metrics,
            instance,
            print: false,
        }
    }

    /// The same audit, printing each finding (for `reconcile`).
    pub fn printing(self) -> Self {
        Self {
            print: true,
            ..self
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
        let interval = self.settings.interval;
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
                Ok(RunEnd::Busy(_)) => tokio::time::sleep(LEASE.min(interval)).await,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "the drift audit stopped; it resumes later"
                    );
                    tokio::time::sleep(RETRY_AFTER.min(interval)).await;
                }
            }
        }
    }

    /// How long until the next run is due: at once when one is unfinished
    /// or none ever ran, else an interval after the last one started.
    async fn until_due(&self) -> Result<Duration, DbError> {
        let (unfinished, last, now) = with_conn!(self.db, conn => {
            Ok::<_, DbError>((
                conn.unfinished_drift_audit().await?,
                conn.last_drift_audit(false).await?,
                conn.clock().await?,
            ))
        })?;
        if let Some(last) = &last {
            self.show_last(last);
        }
        let due = match (unfinished, last) {
            (None, Some(last)) => last.started_at + delta(self.settings.interval),
            _ => return Ok(Duration::ZERO),
        };
        Ok((due - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// One audit run, resumed or new, if the walk lease is free; not before
    /// the Clerk instance is confirmed.
    pub async fn run_once(&self) -> anyhow::Result<RunEnd> {
        self.instance.confirmed().await;
        let lease = match WalkLease::take(&self.db, &self.owner).await? {
            Ok(lease) => lease,
            Err(held) => return Ok(RunEnd::Busy(held)),
        };
        let ended = lease
            .hold(async {
                let run = with_conn!(self.db, conn => {
                    let now = conn.clock().await?;
                    drift_audit::resume_or_start(conn, &self.owner, now).await
                })?;
                self.run_to_end(run, RunMode::Audit, self.settings.max_deletions)
                    .await
            })
            .await;
        lease.release().await;
        ended.map(RunEnd::Finished)
    }

    /// A fresh run of `mode` that may make `max_deletions` deletions and
    /// ADMIN demotions (`reconcile`), once the walk lease is free: it waits
    /// for a walk in progress rather than failing.
    pub async fn run_fresh(
        &self,
        mode: RunMode,
        max_deletions: i64,
    ) -> anyhow::Result<DriftAuditRow> {
        self.instance.confirmed().await;
        let mut waited = false;
        let lease = loop {
            match WalkLease::take(&self.db, &self.owner).await? {
                Ok(lease) => break lease,
                Err(held) => {
                    if !waited {
                        eprintln!("waiting: {held}");
                        waited = true;
                    }
                    tokio::time::sleep(LEASE_POLL).await;
                }
            }
        };
        let ended = lease
            .hold(async {
                let run = with_conn!(self.db, conn => {
                    let now = conn.clock().await?;
                    drift_audit::start(conn, &self.owner, now, mode).await
                })?;
                self.run_to_end(run, mode, max_deletions).await
            })
            .await;
        lease.release().await;
        ended
    }

    /// Takes `run` to its end: finished (perhaps waiting for an operator)
    /// or stopped on an error, noted either way.
    async fn run_to_end(
        &self,
        mut run: DriftAuditRow,
        mode: RunMode,
        max_deletions: i64,
    ) -> anyhow::Result<DriftAuditRow> {
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
            tracing::info!(run = run.id, mode = mode.as_str(), "drift audit started");
        }
        let rules = Rules {
            mode,
            allowance_ms: self.settings.allowance_ms,
        };
        let budget = ClerkBudget::for_walks(
            self.db.clone(),
            self.settings.budget_per_sec,
            self.settings.rate_per_sec,
        );
        let waiting = match self.compare(&budget, &mut run, rules, max_deletions).await {
            Ok(waiting) => waiting,
            Err(error) => {
                self.metrics.drift_audit_ended("stopped");
                let noted = with_conn!(self.db, conn => {
                    drift_audit::stopped(conn, &run, &format!("{error:#}")).await
                });
                if let Err(noting) = noted {
                    tracing::warn!(error = %noting, "could not note why the drift audit stopped");
                }
                return Err(error);
            }
        };
        let run = with_conn!(self.db, conn => {
            let now = conn.clock().await?;
            drift_audit::finish(conn, &run, now, waiting.as_ref(), KEEP_RUNS).await
        })?;
        self.show_last(&run);
        match &waiting {
            Some(waiting) => {
                self.metrics.drift_audit_ended("waiting");
                let held = waiting.users();
                self.metrics.drift_audit_awaiting_confirmation.set(held);
                tracing::error!(
                    run = run.id,
                    held,
                    reason = %waiting,
                    "the drift audit deleted and demoted no one and waits for an operator: {}",
                    waiting.next_step()
                );
            }
            None => {
                self.metrics.drift_audit_ended("finished");
                self.metrics.drift_audit_awaiting_confirmation.set(0);
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
            }
        }
        Ok(run)
    }

    /// Walks Clerk's list from where `run` stands, looks up the live users
    /// it did not find, then makes the changes it held back if they are
    /// within its budget; `run` follows the progress saved. Why it must
    /// wait for an operator instead, if it must.
    async fn compare(
        &self,
        budget: &ClerkBudget,
        run: &mut DriftAuditRow,
        rules: Rules,
        max_deletions: i64,
    ) -> anyhow::Result<Option<Waiting>> {
        let listed = self.walk(budget, run, rules).await?;
        if run.after_local_id.is_none() {
            let short = with_conn!(self.db, conn => {
                drift_audit::short_list(conn, run, max_deletions).await
            })?;
            if short.is_some() {
                return Ok(short);
            }
        }
        let unfound = with_conn!(self.db, conn => drift_audit::unfound(conn, &listed).await)?;
        if unfound.unruled_out() > MAY_LOOK_UP_SHARE {
            // Inside `serve`, nothing looks up a million users on its own;
            // an operator's `reconcile` does, at the pace it is given.
            if rules.mode == RunMode::Audit {
                let waiting = with_conn!(self.db, conn => {
                    drift_audit::too_many_unlisted(conn, run).await
                })?;
                return Ok(Some(waiting));
            }
            tracing::warn!(
                run = run.id,
                named = unfound.named(),
                "more live users are missing from Clerk's list than its sketch names one by one \
                 (about {DECODES_UP_TO}); looking up every user it cannot rule out"
            );
        }
        loop {
            let ids = with_conn!(self.db, conn => {
                drift_audit::unfound_users(conn, run, &unfound, LOOKUPS_PER_STEP).await
            })?;
            let Some(last_asked) = ids.last().cloned() else {
                break;
            };
            let more = ids.len() == LOOKUPS_PER_STEP;
            let looked_up = self.look_up(budget, ids).await?;
            let (next, findings) = retried(async || {
                with_conn!(self.db, conn => {
                    drift_audit::apply_lookups(conn, run, &looked_up, &last_asked, rules).await
                })
            })
            .await?;
            *run = next;
            self.report(run, looked_up.len(), &findings);
            if !more {
                break;
            }
        }
        let held = with_conn!(self.db, conn => drift_audit::held_count(conn, run).await)?;
        if held > max_deletions {
            return Ok(Some(Waiting::TooManyChanges {
                held,
                max: max_deletions,
            }));
        }
        self.make_held(budget, run, rules).await?;
        Ok(None)
    }

    /// The walk of Clerk's list, from where `run` stands to its end; the
    /// sketch of the live users it found. A cursor Clerk refuses (its user
    /// deleted meanwhile), or a walk begun whose sketch is lost, starts it
    /// over.
    async fn walk(
        &self,
        budget: &ClerkBudget,
        run: &mut DriftAuditRow,
        rules: Rules,
    ) -> anyhow::Result<IdSketch> {
        let mut listed = match with_conn!(self.db, conn => drift_audit::listed(conn, run).await)? {
            Some(listed) => listed,
            None => {
                tracing::warn!(
                    run = run.id,
                    "the drift audit's sketch is lost; starting the walk over"
                );
                *run = with_conn!(self.db, conn => drift_audit::restart_walk(conn, run).await)?;
                IdSketch::default()
            }
        };
        if run.walked {
            return Ok(listed);
        }
        let walk = ListWalk {
            client: &self.client,
            budget,
            max_wait: self.settings.max_wait,
            restarts: MAX_WALK_RESTARTS,
        };
        let mut pages = pin!(walk.pages(run.after_user_id.clone()));
        while let Some(step) = pages.try_next().await? {
            let (page, last) = match step {
                Step::Page { users, last } => (users, last),
                Step::StartedOver { status } => {
                    tracing::warn!(
                        run = run.id,
                        status,
                        "Clerk refused the walk's cursor (its user deleted meanwhile?); \
                         starting the walk over"
                    );
                    *run = with_conn!(self.db, conn => drift_audit::restart_walk(conn, run).await)?;
                    listed = IdSketch::default();
                    continue;
                }
            };
            let (next, sketch, findings) = retried(async || {
                with_conn!(self.db, conn => {
                    drift_audit::apply_page(conn, run, &listed, &page, last, rules).await
                })
            })
            .await?;
            *run = next;
            listed = sketch;
            self.report(run, page.len(), &findings);
        }
        Ok(listed)
    }

    /// Makes the changes `run` held back, each after a fresh lookup.
    async fn make_held(
        &self,
        budget: &ClerkBudget,
        run: &mut DriftAuditRow,
        rules: Rules,
    ) -> anyhow::Result<()> {
        let mut after: Option<ClerkUserId> = None;
        loop {
            let held = with_conn!(self.db, conn => {
                drift_audit::held(conn, run, after.as_ref(), LOOKUPS_PER_STEP as i64).await
            })?;
            let Some((last, _)) = held.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            let ids = held.into_iter().map(|(id, _)| id).collect();
            let looked_up = self.look_up(budget, ids).await?;
            let (next, findings) = retried(async || {
                with_conn!(self.db, conn => {
                    drift_audit::apply_held(conn, run, &looked_up, rules).await
                })
            })
            .await?;
            *run = next;
            self.report_made(run, &findings);
        }
    }

    /// Users `ids` as Clerk has them now (`None`: Clerk has no such user);
    /// a user whose lookup Clerk refused is left out.
    async fn look_up(
        &self,
        budget: &ClerkBudget,
        ids: Vec<ClerkUserId>,
    ) -> anyhow::Result<Vec<(ClerkUserId, Option<ClerkUser>)>> {
        let mut looked_up = Vec::with_capacity(ids.len());
        for id in ids {
            let user =
                call_clerk(budget, self.settings.max_wait, || self.client.get_user(&id)).await;
            match user {
                Ok(user) => looked_up.push((id, user)),
                Err(error) => skip_or_stop(&id, error)?,
            }
        }
        Ok(looked_up)
    }

    /// Counts, logs (and prints, for `reconcile`) what a step found after
    /// comparing `checked` users with Clerk.
    fn report(&self, run: &DriftAuditRow, checked: usize, findings: &[Finding]) {
        self.metrics
            .drift_audit_users_checked
            .inc_by(checked as u64);
        for finding in findings {
            self.metrics.drift_found(finding.kind);
            self.report_one(run, finding);
        }
    }

    /// [`report`](Self::report) for changes held back until now: found
    /// (and counted) before.
    fn report_made(&self, run: &DriftAuditRow, findings: &[Finding]) {
        for finding in findings {
            self.report_one(run, finding);
        }
    }

    fn report_one(&self, run: &DriftAuditRow, finding: &Finding) {
        if finding.repaired {
            self.metrics.drift_repaired(finding.kind);
        }
        if self.print {
            println!("{}", describe(finding));
        }
        let kind = finding.kind.as_str();
        let user_id = &finding.user_id;
        if finding.repaired {
            tracing::info!(run = run.id, %user_id, kind, "drift repaired");
        } else if finding.held {
            tracing::warn!(
                run = run.id,
                %user_id,
                kind,
                "drift found; held back until the run's end (a deletion or an ADMIN demotion)"
            );
        } else {
            tracing::warn!(run = run.id, %user_id, kind, "drift found, not repaired");
        }
    }

    /// Shows when the last run finished in the metrics.
    fn show_last(&self, run: &DriftAuditRow) {
        if let Some(finished) = run.finished_at {
            self.metrics.drift_audit_last_finished.set(unix(finished));
        }
    }
}

/// Runs a step of a run again when it lost a race to create a user (a
/// webhook created the same new user meanwhile): run again, it finds the
/// user and applies Clerk's state by the ordering rules, as an upsert
/// would. Never a failed run for it.
async fn retried<T>(mut step: impl AsyncFnMut() -> Result<T, DbError>) -> Result<T, DbError> {
    let mut attempts_left = 3;
    loop {
        attempts_left -= 1;
        match step().await {
            Err(error) if attempts_left > 0 && error.is_unique_violation() => {}
            answer => return answer,
        }
    }
}

/// One line of `reconcile`'s report.
fn describe(finding: &Finding) -> String {
    let role = |role: Option<crate::domain::Role>| role.map_or("none", |role| role.as_str());
    let what = match finding.kind {
        drift_audit::DriftKind::MissingHere => "in Clerk, not here".to_owned(),
        drift_audit::DriftKind::MissingInClerk => "here, not in Clerk".to_owned(),
        drift_audit::DriftKind::RoleDiffers => format!(
            "role here {}, in Clerk {}",
            role(finding.ours),
            role(finding.clerk)
        ),
        drift_audit::DriftKind::Outdated => "Clerk holds a newer profile".to_owned(),
    };
    let done = match (finding.repaired, finding.held) {
        (true, _) => " (repaired)",
        (false, true) => " (held: a deletion or an ADMIN demotion)",
        (false, false) => "",
    };
    format!(
        "drift: {}: {what} [{}]{done}",
        finding.user_id,
        finding.kind.as_str()
    )
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
