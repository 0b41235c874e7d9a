//! The shapes of the sync status: the outbox, the pushes not landed, the
//! drift audit's runs and the Clerk instance.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::users::SyncStateName;
use super::webhook_events::WebhookEventResponse;
use crate::db::rows::{DriftAuditRow, OutboxRow, OutboxSummary, SyncState};
use crate::domain::{ClerkUserId, Role};
use crate::jobs::clerk_instance::InstanceState;

/// Where synchronisation stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusResponse {
    /// No push is pending or failing, the last finished drift audit (if
    /// one ran) left no drift unrepaired and waits for no confirmation, no
    /// run stopped on an error, and the Clerk instance is not unconfirmed
    /// or another: as far as the service can tell, both sides agree.
    pub in_sync: bool,
    pub outbox: OutboxResponse,
    /// The oldest 50 pushes pending or failing.
    pub unsettled_pushes: Vec<UnsettledPush>,
    /// The newest webhook message processed (`null`: none kept).
    #[schema(required = true)]
    pub last_webhook: Option<WebhookEventResponse>,
    pub drift_audit: DriftAuditStatus,
    pub clerk_instance: ClerkInstanceStatus,
}

impl SyncStatusResponse {
    pub fn new(
        outbox: OutboxSummary,
        unsettled_pushes: Vec<UnsettledPush>,
        last_webhook: Option<WebhookEventResponse>,
        drift_audit: DriftAuditStatus,
        clerk_instance: ClerkInstanceStatus,
    ) -> Self {
        let audit_clean = drift_audit.last.as_ref().is_none_or(|run| {
            run.found.total() == run.repaired && run.waiting_for_confirmation.is_none()
        }) && drift_audit
            .running
            .as_ref()
            .is_none_or(|run| run.error.is_none());
        let instance_known = matches!(
            clerk_instance.state,
            ClerkInstanceState::Confirmed | ClerkInstanceState::NotConfigured
        );
        Self {
            in_sync: outbox.pending == 0 && outbox.failing == 0 && audit_clean && instance_known,
            outbox: OutboxResponse {
                pending: outbox.pending,
                failing: outbox.failing,
                oldest_pending_at: outbox.oldest_pending.map(|at| at.and_utc()),
            },
            unsettled_pushes,
            last_webhook,
            drift_audit,
            clerk_instance,
        }
    }
}

/// The Clerk instance the database is bound to, and the key's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkInstanceStatus {
    pub state: ClerkInstanceState,
    /// The instance the database is bound to (`ins_…`; `null`: not bound
    /// yet).
    #[schema(required = true)]
    pub bound_id: Option<String>,
    /// The bound instance's `development` or `production`.
    #[schema(required = true)]
    pub environment_type: Option<String>,
    /// When the database was bound to it.
    #[schema(required = true)]
    pub bound_at: Option<DateTime<Utc>>,
    /// The instance of `CLERK_SECRET_KEY`, when it is not the bound one.
    #[schema(required = true)]
    pub current_id: Option<String>,
}

/// Whether the instance of `CLERK_SECRET_KEY` is the database's:
/// `confirmed` (pushes and the drift audit run), `unconfirmed` (Clerk has
/// not answered yet: they wait), `mismatch` (the key belongs to another
/// instance, or the unbound database's users are not in it: they stay
/// stopped), `not_configured` (no `CLERK_SECRET_KEY`: pushes wait for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClerkInstanceState {
    Confirmed,
    Unconfirmed,
    Mismatch,
    NotConfigured,
}

impl From<InstanceState> for ClerkInstanceStatus {
    fn from(state: InstanceState) -> Self {
        let (name, current_id) = match &state {
            InstanceState::Confirmed(_) => (ClerkInstanceState::Confirmed, None),
            InstanceState::Unconfirmed { .. } => (ClerkInstanceState::Unconfirmed, None),
            InstanceState::NotConfigured { .. } => (ClerkInstanceState::NotConfigured, None),
            InstanceState::Mismatch { current, .. } => {
                (ClerkInstanceState::Mismatch, Some(current.id.clone()))
            }
        };
        let bound = state.bound();
        Self {
            state: name,
            bound_id: bound.map(|bound| bound.instance_id.clone()),
            environment_type: bound.map(|bound| bound.environment_type.clone()),
            bound_at: bound.map(|bound| bound.bound_at.and_utc()),
            current_id,
        }
    }
}

/// Pushes to Clerk not landed yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxResponse {
    /// Queued or retrying.
    pub pending: i64,
    /// Whose last attempt failed (retrying, or given up on).
    pub failing: i64,
    /// When the oldest pending push was queued.
    #[schema(required = true)]
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// One push pending or failing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnsettledPush {
    pub user_id: String,
    /// The role to push.
    pub desired_role: Role,
    pub state: SyncStateName,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next attempt is due (`null`: given up on; a new change
    /// queues it again).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub queued_at: Option<DateTime<Utc>>,
}

impl From<OutboxRow> for UnsettledPush {
    fn from(row: OutboxRow) -> Self {
        let state = SyncState::of(Some(&row));
        Self {
            user_id: row.user_id.to_string(),
            desired_role: row.desired_role,
            state: state.status.into(),
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: state.next_attempt_at,
            queued_at: row.queued_at.map(|at| at.and_utc()),
        }
    }
}

/// The drift audit: whether this replica runs it, and its runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftAuditStatus {
    /// This replica audits (`RECONCILE_INTERVAL` is not 0 and
    /// `CLERK_SECRET_KEY` is set).
    pub enabled: bool,
    /// Seconds between two runs, when enabled.
    #[schema(required = true)]
    pub interval_seconds: Option<u64>,
    /// Who walks Clerk's users now (a replica's audit, or a backfill), if
    /// anyone.
    #[schema(required = true)]
    pub walking: Option<String>,
    /// The run not finished yet (walking now, or stopped and to resume).
    #[schema(required = true)]
    pub running: Option<DriftAuditRun>,
    /// The newest finished run.
    #[schema(required = true)]
    pub last: Option<DriftAuditRun>,
}

impl DriftAuditStatus {
    /// `held`: for a `last` run waiting for confirmation, how many changes
    /// it held back and the first of them.
    pub fn new(
        interval: Option<std::time::Duration>,
        running: Option<DriftAuditRow>,
        last: Option<DriftAuditRow>,
        walking: Option<(String, NaiveDateTime)>,
        held: Option<(i64, Vec<(ClerkUserId, String)>)>,
    ) -> Self {
        let mut last = last.map(DriftAuditRun::from);
        if let Some(waiting) = last
            .as_mut()
            .and_then(|last| last.waiting_for_confirmation.as_mut())
            && let Some((changes, users)) = held
        {
            waiting.changes = changes;
            waiting.users = users
                .into_iter()
                .map(|(user_id, kind)| HeldChange {
                    user_id: user_id.into(),
                    kind,
                })
                .collect();
        }
        Self {
            enabled: interval.is_some(),
            interval_seconds: interval.map(|interval| interval.as_secs()),
            walking: walking.map(|(owner, _)| owner),
            running: running.map(DriftAuditRun::from),
            last,
        }
    }
}

/// What a run would have deleted or demoted past its budget
/// (`RECONCILE_MAX_DELETIONS`), or the lookups it left to an operator (a
/// short list, more users missing from Clerk's list than it names one by
/// one), waiting for `clerk-role-sync reconcile --fix --max-deletions N`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingConfirmation {
    /// Why nothing was made.
    pub reason: String,
    /// Deletions and ADMIN demotions held back.
    pub changes: i64,
    /// The first 50 of them, by user id.
    pub users: Vec<HeldChange>,
}

/// One change held back.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldChange {
    pub user_id: String,
    /// `missing_in_clerk` (a deletion) or `role_differs` (an ADMIN demotion).
    pub kind: String,
}

/// One drift audit run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftAuditRun {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The replica that last worked on it.
    pub owner: String,
    /// Users compared with Clerk.
    pub checked: i64,
    pub found: DriftCounts,
    /// Of what was found, what was repaired.
    pub repaired: i64,
    /// Why it last stopped before its end, if it did.
    #[schema(required = true)]
    pub error: Option<String>,
    /// `audit` (inside `serve`), `report` or `fix` (`reconcile`).
    pub mode: String,
    /// It ended making none of the deletions and ADMIN demotions it found
    /// past its budget, or none of the lookups it would need: what waits
    /// for an operator (`null`: nothing).
    #[schema(required = true)]
    pub waiting_for_confirmation: Option<AwaitingConfirmation>,
}

impl From<DriftAuditRow> for DriftAuditRun {
    fn from(row: DriftAuditRow) -> Self {
        Self {
            id: row.id,
            started_at: row.started_at.and_utc(),
            finished_at: row.finished_at.map(|at| at.and_utc()),
            owner: row.owner,
            checked: row.checked,
            found: DriftCounts {
                missing_here: row.found_missing_here,
                role_differs: row.found_role_differs,
                outdated: row.found_outdated,
                missing_in_clerk: row.found_missing_in_clerk,
            },
            repaired: row.repaired,
            error: row.error,
            mode: row.mode,
            waiting_for_confirmation: row.waiting.map(|reason| AwaitingConfirmation {
                reason,
                changes: 0,
                users: Vec::new(),
            }),
        }
    }
}

/// Drift found, by kind.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftCounts {
    /// In Clerk, not here (its `user.created` was lost): brought in.
    pub missing_here: i64,
    /// Another role in Clerk, no push pending (a dashboard edit's webhook
    /// was lost): settled by the race rule.
    pub role_differs: i64,
    /// A newer Clerk state, same role (a profile change was lost): applied.
    pub outdated: i64,
    /// Live here, gone from Clerk (its `user.deleted` was lost): deleted
    /// (provisionally, and within the run's budget).
    pub missing_in_clerk: i64,
}

impl DriftCounts {
    pub fn total(&self) -> i64 {
        self.missing_here + self.role_differs + self.outdated + self.missing_in_clerk
    }
}
