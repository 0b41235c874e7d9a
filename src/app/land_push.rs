//! Landing a push: what Clerk answered (or held, read before a retry)
//! becomes the newest Clerk state seen, and the race rule decides the role.

use super::audit::{after_commit, record_change};
use super::clerk_state::{Apply, apply_clerk_user, known};
use crate::clerk::ClerkUser;
use crate::db::rows::SyncRow;
use crate::db::{DbError, Store};
use crate::domain::{ClerkState, ClerkUserId, MetadataRole, RoleSource, Unrecorded, cancels};

/// What the worker should do after a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Clerk took the role; it now holds `ClerkState`.
    Landed(ClerkState),
    /// Try again this long (ms) after the database's clock.
    RetryIn(i64, String),
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
    user_id: &ClerkUserId,
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
        allowance_ms,
        claimed_by: Some(owner),
    };
    after_commit(conn.transaction(async |conn| {
        apply_clerk_user(conn, user_id, user, apply).await?;
        let sync = conn.find_sync(user_id).await?;
        let check = match sync.as_ref().filter(|sync| sync.is_pending()) {
            None => RetryCheck::Cancelled,
            Some(sync) => match user.metadata_role() {
                MetadataRole::Known(role)
                    if sync.version == version && role == sync.desired_role =>
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
        conn.set_unrecorded_pushes(user_id, Unrecorded::NONE)
            .await?;
        Ok(check)
    }))
    .await
}

/// Records the outcome of pushing version `version` of a user's role, sent
/// under `owner`'s claim.
///
/// A landed push updates the newest Clerk state seen. Unless a newer role
/// is still to be sent, the database role becomes the newest Clerk state:
/// the push's own role, unless a dashboard edit landed in Clerk after it
/// (the row is marked synced when it was this version). A newer role still
/// to be sent is due now, and the lease is released for it.
///
/// A push Clerk answered with an error wrote nothing: a Clerk state that
/// waited as its possible echo is then judged again by the race rule, and
/// may cancel a newer change. A failure is recorded, and a claim released,
/// only while `owner` still holds the claim: a replica that took it over is
/// sending that push, and records its own result.
pub async fn finish_push<C: Store>(
    conn: &mut C,
    user_id: &ClerkUserId,
    version: i64,
    result: PushResult,
    allowance_ms: i64,
    owner: &str,
) -> Result<(), DbError> {
    // Owned captures keep the transaction's future `Send` for spawned workers.
    let user_id = user_id.clone();
    let owner = owner.to_owned();
    after_commit(conn.transaction(async move |conn| {
        let user_id = &user_id;
        let row = conn.lock_user(user_id).await?;
        let now = conn.clock().await?;
        let current = conn.find_sync(user_id).await?;
        let same_version = current.as_ref().is_some_and(|c| c.version == version);
        // A newer role still to be sent keeps the database's role; with none
        // (this version, or a newer one a dashboard edit cancelled while
        // this push was in flight) the newest Clerk state is the role.
        let newer_pending = !same_version && current.as_ref().is_some_and(SyncRow::is_pending);
        let wrote_nothing = !matches!(result, PushResult::Landed(_));
        match result {
            PushResult::Landed(pushed) => {
                let Some(row) = row.filter(|r| r.deleted_at.is_none()) else {
                    return Ok(());
                };
                let stored = match (row.clerk_role, row.clerk_updated_at) {
                    (Some(role), Some(updated_at)) => Some(ClerkState { role, updated_at }),
                    _ => None,
                };
                let newest = pushed.newest(stored);
                let new_role = if newer_pending { row.role } else { newest.role };
                let from_push = newest == pushed;
                conn.apply_push_result(user_id, new_role, newest, from_push, now)
                    .await?;
                if same_version {
                    conn.mark_synced(user_id, version).await?;
                } else {
                    conn.release_claim(user_id, &owner).await?;
                }
                // Clerk's answer is recorded: whatever an earlier push left
                // unrecorded is older than it in Clerk's order.
                conn.set_unrecorded_pushes(user_id, Unrecorded::NONE)
                    .await?;
                let role = row.role;
                if new_role != role {
                    // Clerk's order settles it: a dashboard edit landed after
                    // our push, or our push after a dashboard edit that
                    // cancelled a newer change.
                    conn.move_count(user_id, Some(role), Some(new_role)).await?;
                    record_change(
                        conn,
                        user_id,
                        Some(role),
                        new_role,
                        RoleSource::ClerkWebhook,
                        None,
                        now,
                    )
                    .await?;
                }
            }
            PushResult::RetryIn(wait_ms, error) if same_version => {
                conn.reschedule_push(user_id, version, Some(wait_ms), &error, &owner)
                    .await?;
            }
            PushResult::GiveUp(error) if same_version => {
                conn.reschedule_push(user_id, version, None, &error, &owner)
                    .await?;
            }
            // A newer role was written meanwhile: it is due now.
            PushResult::RetryIn(..) | PushResult::GiveUp(_) => {
                conn.release_claim(user_id, &owner).await?;
            }
        }
        if wrote_nothing {
            judge_again(conn, user_id, allowance_ms).await?;
        }
        Ok(())
    }))
    .await
}

/// Once a push is known to have written nothing, the newest Clerk state
/// seen is judged again against the pending push: while that push was in
/// flight, a Clerk state with its role could have been its echo, and
/// cancelled nothing. Must run inside the transaction holding the user.
async fn judge_again<C: Store>(
    conn: &mut C,
    user_id: &ClerkUserId,
    allowance_ms: i64,
) -> Result<(), DbError> {
    let Some(row) = conn.find_user(user_id).await? else {
        return Ok(());
    };
    let sync = conn.find_sync(user_id).await?;
    let now = conn.clock().await?;
    let known = known(&row, sync.as_ref().filter(|s| s.is_pending()), now);
    let (Some(clerk), Some(pending), Some(sync)) = (known.clerk, known.pending, sync) else {
        return Ok(());
    };
    if known.deleted.is_some()
        || known.clerk_from_push
        || !cancels(clerk, pending, allowance_ms)
        || !conn.cancel_push(user_id, sync.version, None).await?
    {
        return Ok(());
    }
    tracing::info!(
        user.id = %user_id,
        role = %clerk.role,
        "a newer role from Clerk cancelled the pending push"
    );
    conn.update_role(user_id, clerk.role, now).await?;
    conn.move_count(user_id, Some(known.role), Some(clerk.role))
        .await?;
    record_change(
        conn,
        user_id,
        Some(known.role),
        clerk.role,
        RoleSource::ClerkWebhook,
        None,
        now,
    )
    .await?;
    Ok(())
}
