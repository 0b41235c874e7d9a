//! Users, their role changes and the role counters, kept consistent with
//! each other: every role change touches all three in one transaction.

use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};
use diesel::prelude::*;

use super::clerk_sync::SyncRow;
use super::clerk_write::count_deltas;
use super::schema::{role_changes, users};
use super::store::after_commit;
use super::{DbError, Store};
use crate::domain::{ClerkUserId, Role, RoleSource};

/// Counter shards per role (see the `role_counts` migration).
pub const COUNT_SHARDS: u16 = 16;

/// A `users` row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub role: String,
    pub clerk_updated_at: Option<i64>,
    pub clerk_role: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
    /// The newest Clerk state came from our own push's answer.
    pub clerk_from_push: bool,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub image_url: Option<&'a str>,
    pub role: &'a str,
    pub clerk_updated_at: Option<i64>,
    pub clerk_role: Option<&'a str>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A `role_changes` row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = role_changes)]
pub struct RoleChangeRow {
    pub id: i64,
    pub user_id: String,
    pub old_role: Option<String>,
    pub new_role: String,
    pub source: String,
    pub actor: Option<String>,
    pub changed_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = role_changes)]
pub struct NewRoleChange<'a> {
    pub user_id: &'a str,
    pub old_role: Option<&'a str>,
    pub new_role: &'a str,
    pub source: &'a str,
    pub actor: Option<&'a str>,
    pub changed_at: NaiveDateTime,
}

/// Which live users a page holds.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    /// A `LIKE` pattern over lower-cased email and names (see [`search_pattern`]).
    pub search_pattern: Option<String>,
    /// Keyset cursor: the `(created_at, id)` of the last user of the previous page.
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// A case-insensitive, literal substring pattern: `%` and `_` in the search
/// match themselves, not anything.
pub fn search_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A user as the rest of the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: ClerkUserId,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl TryFrom<UserRow> for User {
    type Error = DbError;

    fn try_from(row: UserRow) -> Result<Self, DbError> {
        Ok(Self {
            id: ClerkUserId::parse(row.id).map_err(corrupt)?,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            image_url: row.image_url,
            role: row.role.parse().map_err(corrupt)?,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            deleted_at: row.deleted_at.map(|at| at.and_utc()),
        })
    }
}

/// A stored value the constraints should have kept out.
pub(crate) fn corrupt(error: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Query(diesel::result::Error::DeserializationError(Box::new(error)))
}

/// The current time as stored: UTC, microsecond precision on both backends.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

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
        let now = now();
        let from = match conn.lock_user(id.as_str()).await? {
            Some(row) if row.deleted_at.is_some() => return Err(RoleUpdateError::Deleted),
            Some(row) if row.role == role.as_str() => {
                return Ok(RoleUpdate::Unchanged(row.try_into()?));
            }
            Some(row) => {
                let from: Role = row.role.parse().map_err(corrupt)?;
                conn.update_role(id.as_str(), role.as_str(), now).await?;
                Some(from)
            }
            None if create_missing => {
                conn.insert_user(&NewUser {
                    id: id.as_str(),
                    email: None,
                    first_name: None,
                    last_name: None,
                    image_url: None,
                    role: role.as_str(),
                    clerk_updated_at: None,
                    clerk_role: None,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
                None
            }
            None => return Err(RoleUpdateError::NotFound),
        };
        conn.move_count(id, from, Some(role)).await?;
        conn.record_change(id, from, role, source, actor, now)
            .await?;
        conn.enqueue_push(id.as_str(), role.as_str(), now).await?;
        let user = conn
            .find_user(id.as_str())
            .await?
            .ok_or(diesel::result::Error::NotFound)?;
        Ok(RoleUpdate::Changed {
            user: user.try_into()?,
            from,
        })
    }))
    .await
}

/// Live users per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleStats {
    pub students: i64,
    pub instructors: i64,
    pub admins: i64,
}

impl RoleStats {
    pub fn total(&self) -> i64 {
        self.students + self.instructors + self.admins
    }
}

/// Sums the counter shards: a constant 48 rows, whatever the number of users.
pub async fn role_stats<C: Store>(conn: &mut C) -> Result<RoleStats, DbError> {
    let mut stats = RoleStats::default();
    for (role, count) in conn.role_count_shards().await? {
        match role.parse().map_err(corrupt)? {
            Role::Student => stats.students += count,
            Role::Instructor => stats.instructors += count,
            Role::Admin => stats.admins += count,
        }
    }
    Ok(stats)
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
                .lock_user(id.as_str())
                .await?
                .filter(|row| row.deleted_at.is_none())
                .ok_or_else(|| AdminChangeError::NotFound(id.clone()))?;
            let role: Role = row.role.parse().map_err(corrupt)?;
            current.insert(id, role);
        }
        let demotes_an_admin = changes
            .iter()
            .any(|c| current.get(&c.user_id) == Some(&Role::Admin) && c.role != Role::Admin);
        if demotes_an_admin {
            // Two demotions at once must not both remove "the other" admin.
            conn.lock_admin_count().await?;
        }
        let now = now();
        let mut counters = std::collections::BTreeMap::new();
        for change in changes {
            let id = &change.user_id;
            let Some(&from) = current.get(id) else {
                continue;
            };
            if from == change.role {
                continue;
            }
            conn.update_role(id.as_str(), change.role.as_str(), now)
                .await?;
            conn.record_change(
                id,
                Some(from),
                change.role,
                RoleSource::AdminApi,
                Some(admin.as_str()),
                now,
            )
            .await?;
            conn.enqueue_push(id.as_str(), change.role.as_str(), now)
                .await?;
            for (role, delta) in count_deltas(Some(from), Some(change.role)) {
                *counters
                    .entry((role.as_str(), id.shard(COUNT_SHARDS)))
                    .or_insert(0) += delta;
            }
        }
        for ((role, shard), delta) in counters {
            if delta != 0 {
                conn.adjust_role_count(role, shard, delta).await?;
            }
        }
        if demotes_an_admin && role_stats(conn).await?.admins == 0 {
            return Err(AdminChangeError::LastAdmin);
        }
        let mut users = Vec::with_capacity(changes.len());
        for change in changes {
            let user = conn
                .find_user_with_sync(change.user_id.as_str())
                .await?
                .ok_or_else(|| AdminChangeError::NotFound(change.user_id.clone()))?;
            users.push(user);
        }
        Ok(users)
    }))
    .await
}
