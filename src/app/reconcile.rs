//! Repairs for drift between our database and Clerk (`reconcile --fix`).

use super::audit::after_commit;
use super::clerk_state::{Apply, Outcome, apply_clerk_user};
use super::webhook_event::delete_user;
use crate::clerk::ClerkUser;
use crate::db::rows::now;
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, DEFAULT_CLOCK_SKEW_ALLOWANCE_MS, Role, RoleSource};

/// Applies the user as Clerk holds it now (a role that differs, a user
/// missing here), in its own transaction; its role change is audited as
/// `reconcile`.
pub async fn apply_clerk_state<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    user: &ClerkUser,
) -> Result<Outcome, DbError> {
    let apply = Apply {
        source: RoleSource::Reconcile,
        actor: "reconcile",
        // What Clerk holds now settles what its last instant held.
        reread: true,
        // Only users with no push pending are repaired: the race rule's
        // allowance does not come in.
        allowance_ms: DEFAULT_CLOCK_SKEW_ALLOWANCE_MS,
        claimed_by: None,
    };
    after_commit(conn.transaction(async |conn| apply_clerk_user(conn, id, user, apply).await)).await
}

/// Tombstones a user Clerk no longer has (its `user.deleted` was lost).
pub async fn tombstone<C: Store>(conn: &mut C, id: &ClerkUserId) -> Result<Outcome, DbError> {
    let id = id.clone();
    conn.transaction(async move |conn| delete_user(conn, &id).await)
        .await
}

/// Queues a push of our role to Clerk.
pub async fn queue_push<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    role: Role,
) -> Result<(), DbError> {
    Ok(conn.enqueue_push(id, role, now()).await?)
}

/// Every live user's id and role.
pub async fn live_users<C: Store>(conn: &mut C) -> Result<Vec<(ClerkUserId, Role)>, DbError> {
    Ok(conn.live_user_roles().await?)
}
