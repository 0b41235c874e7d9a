//! The outbox of roles to push to Clerk (`clerk_sync`): one row per user an
//! admin changed. A newer role overwrites an older one that has not been sent
//! (coalescing), so Clerk always ends at the newest. After a push lands the
//! row stays as a record (`next_attempt_at` NULL, no error) of how it went.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::clerk_sync;
use super::store::after_commit;
use super::users::{corrupt, now};
use super::webhooks::{Apply, apply_clerk_user};
use super::{DbError, Store};
use crate::clerk::ClerkUser;
use crate::domain::{ClerkState, ClerkUserId, MetadataRole, Role, RoleSource, Unrecorded};

/// A `clerk_sync` row as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = clerk_sync)]
pub struct SyncRow {
    pub user_id: String,
    pub desired_role: String,
    pub version: i64,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub claimed_until: Option<NaiveDateTime>,
    pub queued_at: Option<NaiveDateTime>,
    pub claimed_by: Option<String>,
    /// Clerk's `updated_at` of the newest state known at the commit.
    pub seen_clerk_updated_at: Option<i64>,
    /// This claim took the row over from an owner whose lease expired.
    pub taken_over: bool,
    /// Roles its pushes may have written to Clerk unrecorded
    /// ([`RoleSet`](crate::domain::RoleSet) bits).
    pub unrecorded_roles: i32,
    /// The latest time (ms) Clerk could have applied one of them.
    pub unrecorded_until: Option<i64>,
}

impl SyncRow {
    /// Still to be sent. Retrying stops (`next_attempt_at` cleared) when the
    /// push landed, or after a refusal from Clerk that a retry cannot fix.
    pub fn is_pending(&self) -> bool {
        self.next_attempt_at.is_some()
    }
}

/// Where a user's role stands with Clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Clerk has the role (or there was never anything to push).
    Synced,
    /// A push is queued or in flight.
    Pending,
    /// The last push failed; see `last_error` (`next_attempt_at` says whether
    /// it will be retried).
    Failing,
}

/// The sync state shown with a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub status: SyncStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl SyncState {
    pub fn of(row: Option<&SyncRow>) -> Self {
        let Some(row) = row else {
            return Self {
                status: SyncStatus::Synced,
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
            };
        };
        let status = match (&row.last_error, row.next_attempt_at) {
            (Some(_), _) => SyncStatus::Failing,
            (None, Some(_)) => SyncStatus::Pending,
            (None, None) => SyncStatus::Synced,
        };
        Self {
            status,
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            next_attempt_at: row.next_attempt_at.map(|at| at.and_utc()),
        }
    }
}

/// What the worker should do after a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Clerk took the role; it now holds `ClerkState`.
    Landed(ClerkState),
    /// Try again at the given time.
    RetryAt(NaiveDateTime, String),
    /// Stop retrying; the user shows as failing.
    GiveUp(String),
}

/// What a retry may do, once Clerk's current state has been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCheck {
    /// Send the role.
    Send,
    /// A newer role in Clerk cancelled the push: nothing to send.
    Cancelled,
    /// Clerk already holds the role (an earlier attempt landed unseen).
    AlreadyThere(ClerkState),
}

/// Before a retry of version `version`, claimed by `owner`: applies what
/// Clerk holds now (`user`, just read) by the race rule, so that a dashboard
/// edit whose webhook is late still wins over a stale retry.
pub async fn check_before_retry<C: Store>(
    conn: &mut C,
    user: &ClerkUser,
    version: i64,
    owner: &str,
    allowance_ms: i64,
) -> Result<RetryCheck, DbError> {
    let apply = Apply {
        source: RoleSource::ClerkWebhook,
        actor: "clerk",
        // Clerk's answer settles what that instant held.
        reread: true,
        message: None,
        allowance_ms,
        claimed_by: Some(owner),
    };
    after_commit(conn.transaction(async |conn| {
        apply_clerk_user(conn, user, apply).await?;
        let sync = conn.find_sync(user.id.as_str()).await?;
        let check = match sync.as_ref().filter(|sync| sync.is_pending()) {
            None => RetryCheck::Cancelled,
            Some(sync) => match user.metadata_role() {
                MetadataRole::Known(role)
                    if sync.version == version && role.as_str() == sync.desired_role =>
                {
                    RetryCheck::AlreadyThere(ClerkState {
                        role,
                        updated_at: user.updated_at,
                    })
                }
                _ => RetryCheck::Send,
            },
        };
        // Clerk was just read: whatever earlier pushes may have written is
        // older than what it holds now.
        conn.set_unrecorded_pushes(user.id.as_str(), Unrecorded::NONE)
            .await?;
        Ok(check)
    }))
    .await
}

/// Records the outcome of pushing version `version` of a user's role.
///
/// A landed push updates the newest Clerk state seen; if no newer role was
/// written meanwhile the row is marked synced and the database role becomes
/// the newest Clerk state — the push's own role, unless a dashboard edit
/// landed in Clerk after it. If a newer role was written meanwhile, that one
/// is now due and the lease is released for it.
pub async fn finish_push<C: Store>(
    conn: &mut C,
    user_id: &ClerkUserId,
    version: i64,
    result: PushResult,
) -> Result<(), DbError> {
    // Owned captures keep the transaction's future `Send` for spawned workers.
    let user_id = user_id.clone();
    after_commit(conn.transaction(async move |conn| {
        let user_id = &user_id;
        let row = conn.lock_user(user_id.as_str()).await?;
        let current = conn.find_sync(user_id.as_str()).await?;
        let same_version = current.as_ref().is_some_and(|c| c.version == version);
        match result {
            PushResult::Landed(pushed) => {
                let Some(row) = row.filter(|r| r.deleted_at.is_none()) else {
                    return Ok(());
                };
                let stored = match (&row.clerk_role, row.clerk_updated_at) {
                    (Some(role), Some(at)) => Some(ClerkState {
                        role: role.parse().map_err(corrupt)?,
                        updated_at: at,
                    }),
                    _ => None,
                };
                let newest = pushed.newest(stored);
                let role: Role = row.role.parse().map_err(corrupt)?;
                let new_role = if same_version { newest.role } else { role };
                let from_push = newest == pushed;
                conn.apply_push_result(
                    user_id.as_str(),
                    new_role.as_str(),
                    newest,
                    from_push,
                    now(),
                )
                .await?;
                if same_version {
                    conn.mark_synced(user_id.as_str(), version).await?;
                } else {
                    conn.release_claim(user_id.as_str()).await?;
                }
                // Clerk's answer is recorded: whatever an earlier push left
                // unrecorded is older than it in Clerk's order.
                conn.set_unrecorded_pushes(user_id.as_str(), Unrecorded::NONE)
                    .await?;
                if new_role != role {
                    // A dashboard edit landed in Clerk after our push: it wins.
                    conn.move_count(user_id, Some(role), Some(new_role)).await?;
                    conn.record_change(
                        user_id,
                        Some(role),
                        new_role,
                        RoleSource::ClerkWebhook,
                        None,
                        now(),
                    )
                    .await?;
                }
            }
            PushResult::RetryAt(at, error) if same_version => {
                conn.reschedule_push(user_id.as_str(), version, Some(at), &error)
                    .await?;
            }
            PushResult::GiveUp(error) if same_version => {
                conn.reschedule_push(user_id.as_str(), version, None, &error)
                    .await?;
            }
            // A newer role was written meanwhile: it is due now.
            PushResult::RetryAt(..) | PushResult::GiveUp(_) => {
                conn.release_claim(user_id.as_str()).await?;
            }
        }
        Ok(())
    }))
    .await
}
