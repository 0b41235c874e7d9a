//! The drift audit's use-cases: what a page of Clerk's user list, or the
//! lookup of users Clerk's list did not show, repairs here, each in one
//! transaction together with the run's progress (so a restarted run
//! resumes where it stopped).
//!
//! Drift is what lost webhooks leave behind: a user Clerk has and we do not
//! (`missing_here`), a role that differs while no push is pending
//! (`role_differs`), a Clerk state newer than the one applied here
//! (`outdated`: a profile change, say), and a live user Clerk no longer has
//! (`missing_in_clerk`: its `user.deleted` was lost). Each is repaired as a
//! late webhook would be, by the race rule, with audit rows of source
//! `reconcile`; a user whose push is pending or failing is left to the push.

use chrono::NaiveDateTime;

use super::audit::after_commit;
use super::clerk_state::{Apply, LockedUsers, Outcome};
use crate::clerk::ClerkUser;
use crate::db::rows::{DriftAuditRow, UserRow};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, RoleSource};

/// Longest reason kept for a run that stopped (Clerk's messages can be long).
const MAX_ERROR_CHARS: usize = 1_000;

/// The actor of the audit rows the drift audit writes.
pub const ACTOR: &str = "drift-audit";

/// What kind of drift a user showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    MissingHere,
    RoleDiffers,
    Outdated,
    MissingInClerk,
}

impl DriftKind {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [DriftKind; 4] = [
        Self::MissingHere,
        Self::RoleDiffers,
        Self::Outdated,
        Self::MissingInClerk,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingHere => "missing_here",
            Self::RoleDiffers => "role_differs",
            Self::Outdated => "outdated",
            Self::MissingInClerk => "missing_in_clerk",
        }
    }
}

/// One user's drift, and whether it was repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub user_id: ClerkUserId,
    pub kind: DriftKind,
    pub repaired: bool,
}

/// The run to go on with: the unfinished one (whoever started it: its
/// owner died or stopped), now in `owner`'s name, or a new one.
pub async fn resume_or_start<C: Store>(
    conn: &mut C,
    owner: &str,
    now: NaiveDateTime,
) -> Result<DriftAuditRow, DbError> {
    match conn.unfinished_drift_audit().await? {
        Some(mut run) => {
            run.owner = owner.to_owned();
            conn.save_drift_audit(&run).await?;
            Ok(run)
        }
        None => Ok(conn.start_drift_audit(owner, now).await?),
    }
}

/// Applies one page of Clerk's user list to `run`, with the run's progress
/// (it resumes after the page's last user; after the `last` page, with the
/// lookups), in one transaction.
pub async fn apply_page<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    page: &[ClerkUser],
    last: bool,
    allowance_ms: i64,
) -> Result<(DriftAuditRow, Vec<Finding>), DbError> {
    let users: Vec<(ClerkUserId, &ClerkUser)> = page
        .iter()
        .filter_map(|user| Some((ClerkUserId::parse(user.id.as_str()).ok()?, user)))
        .collect();
    after_commit(conn.transaction(async |conn| {
        let mut next = run.clone();
        next.checked += page.len() as i64;
        let findings = repair(conn, &mut next, &users, &[], allowance_ms).await?;
        let found: Vec<ClerkUserId> = users.into_iter().map(|(id, _)| id).collect();
        conn.mark_audited(&found, run.started_at).await?;
        if let Some(user) = page.last() {
            next.after_user_id = Some(user.id.clone());
        }
        next.walked = last;
        conn.save_drift_audit(&next).await?;
        Ok((next, findings))
    }))
    .await
}

/// Up to `limit` live users the run has not found in Clerk's list (and
/// that existed when it started), after the last one looked up.
pub async fn unaudited<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    limit: i64,
) -> Result<Vec<ClerkUserId>, DbError> {
    Ok(conn
        .unaudited_users(run.started_at, run.after_local_id.as_deref(), limit)
        .await?)
}

/// Applies what Clerk answered for users the walk did not find: `None`,
/// Clerk has no such user (it is tombstoned here); `Some`, the user as
/// Clerk has it (the list missed it: applied like a page's). With the
/// run's progress, in one transaction.
pub async fn apply_lookups<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    looked_up: &[(ClerkUserId, Option<ClerkUser>)],
    allowance_ms: i64,
) -> Result<(DriftAuditRow, Vec<Finding>), DbError> {
    let found: Vec<(ClerkUserId, &ClerkUser)> = looked_up
        .iter()
        .filter_map(|(id, user)| Some((id.clone(), user.as_ref()?)))
        .collect();
    let gone: Vec<ClerkUserId> = looked_up
        .iter()
        .filter(|(_, user)| user.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    after_commit(conn.transaction(async |conn| {
        let mut next = run.clone();
        next.checked += looked_up.len() as i64;
        let findings = repair(conn, &mut next, &found, &gone, allowance_ms).await?;
        let ids: Vec<ClerkUserId> = found.iter().map(|(id, _)| id.clone()).collect();
        conn.mark_audited(&ids, run.started_at).await?;
        if let Some((id, _)) = looked_up.last() {
            next.after_local_id = Some(id.to_string());
        }
        conn.save_drift_audit(&next).await?;
        Ok((next, findings))
    }))
    .await
}

/// Ends `run` at `now` and forgets all but the newest `keep` runs.
pub async fn finish<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    now: NaiveDateTime,
    keep: i64,
) -> Result<DriftAuditRow, DbError> {
    let finished = DriftAuditRow {
        finished_at: Some(now),
        error: None,
        ..run.clone()
    };
    conn.save_drift_audit(&finished).await?;
    conn.prune_drift_audits(keep).await?;
    Ok(finished)
}

/// Notes why the run stopped (it resumes at its next start).
pub async fn stopped<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    error: &str,
) -> Result<(), DbError> {
    let noted = DriftAuditRow {
        error: Some(error.chars().take(MAX_ERROR_CHARS).collect()),
        ..run.clone()
    };
    Ok(conn.save_drift_audit(&noted).await?)
}

/// Locks `found` (users as Clerk has them) and `gone` (users Clerk no
/// longer has) in id order, repairs their drift and counts it in `run`.
async fn repair<C: Store>(
    conn: &mut C,
    run: &mut DriftAuditRow,
    found: &[(ClerkUserId, &ClerkUser)],
    gone: &[ClerkUserId],
    allowance_ms: i64,
) -> Result<Vec<Finding>, DbError> {
    let ids = found.iter().map(|(id, _)| id).chain(gone);
    let mut users = LockedUsers::take(conn, ids, &[]).await?;
    let mut findings = Vec::new();
    let mut in_order: Vec<(&ClerkUserId, Option<&ClerkUser>)> = found
        .iter()
        .map(|(id, user)| (id, Some(*user)))
        .chain(gone.iter().map(|id| (id, None)))
        .collect();
    in_order.sort_by(|a, b| a.0.cmp(b.0));
    let actor = format!("{ACTOR}/{}", run.id);
    for (id, user) in in_order {
        let row = users.row(id);
        let Some(kind) = drift(row, user, users.push_unsettled(id)) else {
            continue;
        };
        let outcome = match user {
            Some(user) => {
                let apply = Apply {
                    source: RoleSource::Reconcile,
                    actor: &actor,
                    // What Clerk holds now settles what its last instant held.
                    reread: true,
                    allowance_ms,
                    claimed_by: None,
                };
                users.apply_state(conn, id, user, apply, None).await?
            }
            None => users.delete(conn, id, None).await?,
        };
        let repaired = matches!(
            outcome,
            Outcome::Applied | Outcome::Unchanged | Outcome::UnknownRole | Outcome::Deleted
        );
        count(run, kind, repaired);
        findings.push(Finding {
            user_id: id.clone(),
            kind,
            repaired,
        });
    }
    users.write(conn).await?;
    Ok(findings)
}

/// The drift a user shows between our row and what Clerk holds (`None`:
/// Clerk has no such user), if any. Deleted users stay deleted, and a user
/// whose push is pending or failing is the push's to settle (a failing one
/// shows in `/api/admin/sync/status` with Clerk's refusal).
fn drift(
    row: Option<&UserRow>,
    clerk: Option<&ClerkUser>,
    push_unsettled: bool,
) -> Option<DriftKind> {
    let Some(row) = row else {
        return clerk.map(|_| DriftKind::MissingHere);
    };
    if row.deleted_at.is_some() || push_unsettled {
        return None;
    }
    let Some(clerk) = clerk else {
        return Some(DriftKind::MissingInClerk);
    };
    let applied = row.clerk_updated_at.unwrap_or(i64::MIN);
    if clerk.updated_at < applied {
        // A newer state came in since Clerk's list was read.
        return None;
    }
    match clerk.metadata_role().role() {
        Some(role) if role != row.role => Some(DriftKind::RoleDiffers),
        _ if clerk.updated_at > applied => Some(DriftKind::Outdated),
        _ => None,
    }
}

fn count(run: &mut DriftAuditRow, kind: DriftKind, repaired: bool) {
    let found = match kind {
        DriftKind::MissingHere => &mut run.found_missing_here,
        DriftKind::RoleDiffers => &mut run.found_role_differs,
        DriftKind::Outdated => &mut run.found_outdated,
        DriftKind::MissingInClerk => &mut run.found_missing_in_clerk,
    };
    *found += 1;
    run.repaired += i64::from(repaired);
}
