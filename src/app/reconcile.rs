//! Repairs for drift between our database and Clerk (`reconcile --fix`).

use super::clerk_state::Outcome;
use super::webhook_event::delete_user;
use crate::db::rows::now;
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, Role};

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
