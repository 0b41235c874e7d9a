//! Role changes made here (an admin's PATCH, the CLI): each writes the
//! user, an audit row, the counters and a queued push in one transaction.

use super::audit::{after_commit, record_change};
use crate::db::rows::{COUNT_SHARDS, NewUser, SyncRow, User, UserRow};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, CountDeltas, Role, RoleSource};

/// What a role change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleUpdate {
    /// The user already had that role: nothing was written.
    Unchanged(User),
    /// The role changed (`from` is `None` for a user created by the change).
    Changed { user: User, from: Option<Role> },
}

/// Why a role change was not made.
#[derive(Debug, thiserror::Error)]
pub enum RoleUpdateError {
    #[error("no such user")]
    NotFound,
    #[error("the user was deleted in Clerk")]
    Deleted,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for RoleUpdateError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(error.into())
    }
}

/// Sets a user's role, creating a bare user row when `create_missing` is set
/// (the CLI bootstraps admins before Clerk's webhook has told us about them).
/// Writes the audit row, moves the counters and queues the push to Clerk in
/// the same transaction.
pub async fn set_role<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    role: Role,
    source: RoleSource,
    actor: Option<&str>,
    create_missing: bool,
) -> Result<RoleUpdate, RoleUpdateError> {
    after_commit(conn.transaction(async |conn| {
        let locked = conn.lock_user(id).await?;
        let now = conn.clock().await?;
        let from = match locked {
            Some(row) if row.deleted_at.is_some() => return Err(RoleUpdateError::Deleted),
            Some(row) if row.role == role => {
                return Ok(RoleUpdate::Unchanged(row.into()));
            }
            Some(row) => {
                conn.update_role(id, role, now).await?;
                Some(row.role)
            }
            None if create_missing => {
                conn.insert_user(&NewUser::bare(id, role, now)).await?;
                None
            }
            None => return Err(RoleUpdateError::NotFound),
        };
        conn.move_count(id, from, Some(role)).await?;
        record_change(conn, id, from, role, source, actor, now).await?;
        conn.enqueue_push(id, role).await?;
        let user = conn
            .find_user(id)
            .await?
            .ok_or(diesel::result::Error::NotFound)?;
        Ok(RoleUpdate::Changed {
            user: user.into(),
            from,
        })
    }))
    .await
}

/// One role an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    pub user_id: ClerkUserId,
    pub role: Role,
}

/// Why an admin's change was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AdminChangeError {
    #[error("no user {0}")]
    NotFound(ClerkUserId),
    #[error("the last admin cannot be demoted")]
    LastAdmin,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AdminChangeError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(error.into())
    }
}

/// Applies an admin's role changes all-or-nothing, in one transaction: for
/// each user whose role changes, the user, an audit row (`admin_api`, the
/// admin as actor), the counters and a queued push to Clerk. A role the user
/// already has changes nothing. Refused as a whole when a user is unknown or
/// deleted, or when no admin would remain. Returns the users as they are now.
pub async fn change_roles<C: Store>(
    conn: &mut C,
    changes: &[RoleChange],
    admin: &ClerkUserId,
) -> Result<Vec<(UserRow, Option<SyncRow>)>, AdminChangeError> {
    after_commit(conn.transaction(async |conn| {
        // Lock order, the same everywhere: user rows (by id), then counter
        // rows by (role, shard). Every other transaction touches one user and
        // then its counters in that order, so none can wait on us while
        // holding what we wait for.
        let mut ids: Vec<&ClerkUserId> = changes.iter().map(|c| &c.user_id).collect();
        ids.sort();
        let mut current = std::collections::HashMap::new();
        for id in ids {
            let row = conn
                .lock_user(id)
                .await?
                .filter(|row| row.deleted_at.is_none())
                .ok_or_else(|| AdminChangeError::NotFound(id.clone()))?;
            current.insert(id, row.role);
        }
        let demotes_an_admin = changes
            .iter()
            .any(|c| current.get(&c.user_id) == Some(&Role::Admin) && c.role != Role::Admin);
        if demotes_an_admin {
            // Two demotions at once must not both remove "the other" admin.
            conn.lock_admin_count().await?;
        }
        let now = conn.clock().await?;
        let mut counts = CountDeltas::default();
        // In id order, like the user rows: the outbox rows are taken in the
        // same order by every transaction.
        let mut in_order: Vec<&RoleChange> = changes.iter().collect();
        in_order.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        for change in in_order {
            let id = &change.user_id;
            let Some(&from) = current.get(id) else {
                continue;
            };
            if from == change.role {
                continue;
            }
            conn.update_role(id, change.role, now).await?;
            record_change(
                conn,
                id,
                Some(from),
                change.role,
                RoleSource::AdminApi,
                Some(admin.as_str()),
                now,
            )
            .await?;
            conn.enqueue_push(id, change.role).await?;
            counts.add(id.shard(COUNT_SHARDS), Some(from), Some(change.role));
        }
        for (role, shard, delta) in counts.in_lock_order() {
            conn.adjust_role_count(role, shard, delta).await?;
        }
        if demotes_an_admin && conn.role_stats().await?.admins == 0 {
            return Err(AdminChangeError::LastAdmin);
        }
        let mut users = Vec::with_capacity(changes.len());
        for change in changes {
            let user = conn
                .find_user_with_sync(&change.user_id)
                .await?
                .ok_or_else(|| AdminChangeError::NotFound(change.user_id.clone()))?;
            users.push(user);
        }
        Ok(users)
    }))
    .await
}
