//! Role changes made here (an admin's PATCH, the CLI): each writes the
//! user, an audit row, the counters and a queued push in one transaction.

use super::audit::after_commit;
use super::unit_of_work::{RoleChanged, UnitOfWork};
use crate::db::rows::{OutboxRow, User, UserRow};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, Role, RoleSource};

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
        let mut unit = UnitOfWork::take(conn, [id], &[]).await?;
        let from = match unit.change_role(id, role, source, actor, create_missing) {
            RoleChanged::Changed { from } => from,
            RoleChanged::Unchanged => {
                let row = unit.row(id).cloned().ok_or(RoleUpdateError::NotFound)?;
                return Ok(RoleUpdate::Unchanged(row.into()));
            }
            RoleChanged::NotFound => return Err(RoleUpdateError::NotFound),
            RoleChanged::Deleted => return Err(RoleUpdateError::Deleted),
        };
        unit.write(conn).await?;
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
) -> Result<Vec<(UserRow, Option<OutboxRow>)>, AdminChangeError> {
    after_commit(conn.transaction(async |conn| {
        // Lock order, the same everywhere: user rows (by id), then counter
        // rows by (role, shard).
        let mut unit = UnitOfWork::take(conn, changes.iter().map(|c| &c.user_id), &[]).await?;
        let mut demotes_an_admin = false;
        for change in changes {
            let id = &change.user_id;
            match unit.row(id) {
                Some(row) if row.deleted_at.is_none() => {
                    demotes_an_admin |= row.role == Role::Admin && change.role != Role::Admin;
                }
                _ => return Err(AdminChangeError::NotFound(id.clone())),
            }
        }
        if demotes_an_admin {
            // Two demotions at once must not both remove "the other" admin.
            conn.lock_admin_count().await?;
        }
        for change in changes {
            unit.change_role(
                &change.user_id,
                change.role,
                RoleSource::AdminApi,
                Some(admin.as_str()),
                false,
            );
        }
        unit.write(conn).await?;
        if demotes_an_admin && conn.role_stats().await?.admins == 0 {
            return Err(AdminChangeError::LastAdmin);
        }
        let mut users = Vec::with_capacity(changes.len());
        for change in changes {
            let user = conn
                .find_user_with_outbox_row(&change.user_id)
                .await?
                .ok_or_else(|| AdminChangeError::NotFound(change.user_id.clone()))?;
            users.push(user);
        }
        Ok(users)
    }))
    .await
}
