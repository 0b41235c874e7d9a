//! The push to Clerk, as the worker drives it: a claim on a due push taken,
//! renewed and handed back; a note of what the push may write, stored
//! right before it is sent and only under a live claim; Clerk read before a
//! retry; and the push landed or failed, after which the race rule decides
//! the role. Claims and notes are the database's clock; the changes to
//! users go through the [`UnitOfWork`].

use super::audit::after_commit;
use super::clerk_state::StateContext;
use super::unit_of_work::{FailedPush, UnitOfWork};
use crate::clerk::ClerkUser;
use crate::db::rows::{Noted, OutboxRow, Sending};
use crate::db::{DbError, Store};
use crate::domain::{ClerkState, ClerkUserId, MetadataRole, RoleSource, UnrecordedPushes};

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
    let context = StateContext {
        source: RoleSource::ClerkWebhook,
        actor: "clerk",
        // Clerk's answer settles what that instant held.
        reread: true,
        allowance_ms,
        claimed_by: Some(owner),
    };
    after_commit(conn.transaction(async |conn| {
        let mut unit = UnitOfWork::take(conn, [user_id], &[]).await?;
        unit.apply_state(conn, user_id, user, context, None).await?;
        let check = match unit.pending_push(user_id) {
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
        unit.forget_unrecorded_pushes(conn, user_id).await?;
        unit.write(conn).await?;
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
        let mut unit = UnitOfWork::take(conn, [user_id], &[]).await?;
        match result {
            PushResult::Landed(pushed) => {
                unit.land_push(conn, user_id, version, pushed, &owner)
                    .await?;
            }
            PushResult::RetryIn(wait_ms, error) => {
                let failed = FailedPush {
                    version,
                    error: &error,
                    retry_in_ms: Some(wait_ms),
                };
                unit.fail_push(conn, user_id, failed, &owner, allowance_ms)
                    .await?;
            }
            PushResult::GiveUp(error) => {
                let failed = FailedPush {
                    version,
                    error: &error,
                    retry_in_ms: None,
                };
                unit.fail_push(conn, user_id, failed, &owner, allowance_ms)
                    .await?;
            }
        }
        unit.write(conn).await
    }))
    .await
}

/// Claims the due push that comes first, for `owner`, for `lease_ms` after
/// the database's clock.
pub async fn claim<C: Store>(
    conn: &mut C,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<OutboxRow>, DbError> {
    Ok(conn.claim_due_pushes(owner, lease_ms, 1).await?.pop())
}

/// Extends the claims `owner` still holds on `user_ids` to `lease_ms` after
/// the database's clock; how many it still held.
pub async fn renew<C: Store>(
    conn: &mut C,
    owner: &str,
    user_ids: &[ClerkUserId],
    lease_ms: i64,
) -> Result<usize, DbError> {
    Ok(conn.renew_claims(owner, user_ids, lease_ms).await?)
}

/// Hands back every claim `owner` holds (at its start, and as it stops);
/// how many there were.
pub async fn hand_back<C: Store>(conn: &mut C, owner: &str) -> Result<usize, DbError> {
    Ok(conn.release_claims_of(owner).await?)
}

/// Right before version `version` of a push is sent: notes what it may
/// write and stretches `owner`'s claim to `lease_ms`, only if the claim is
/// still live and `owner`'s. Returns the database's clock (ms) it noted at;
/// `None`: the claim was lost, and the push must not be sent.
pub async fn note_before_sending<C: Store>(
    conn: &mut C,
    user_id: &ClerkUserId,
    version: i64,
    owner: &str,
    sending: Sending,
    lease_ms: i64,
) -> Result<Option<Noted>, DbError> {
    Ok(conn
        .note_before_sending(user_id, version, owner, sending, lease_ms)
        .await?)
}

/// Stores what a user's pushes may have written to Clerk without their
/// answer being recorded, once a send ended without one.
pub async fn note_unrecorded<C: Store>(
    conn: &mut C,
    user_id: &ClerkUserId,
    pushes: UnrecordedPushes,
) -> Result<(), DbError> {
    Ok(conn.set_unrecorded_pushes(user_id, pushes).await?)
}
