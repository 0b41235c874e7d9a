//! [`Store`]: every query of the service, for either backend's connection:
//! the [`Queries`] that read the same on both, and here, the one place where
//! PostgreSQL and SQLite need different statements (row locks, the counter
//! lock, the maintenance lock, the one-statement write of a Clerk state).

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::clerk_write::{ClerkWrite, OneStatement};
use super::pool::SqliteConn;
use super::queries::Queries;
use super::rows::{NewRoleChange, NewUser, UserRow};
use super::schema::{role_counts, users};
use crate::domain::{ClerkUserId, Role};

/// Every query of the service: what differs between the backends, on top of
/// the [`Queries`] that do not. Use-cases are generic over `C: Store`.
#[async_trait::async_trait]
pub trait Store: Queries {
    /// Loads a user (deleted ones too) and holds its row until the
    /// transaction ends, so concurrent changes to one user serialize.
    async fn lock_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>>;

    /// Writes a decided Clerk state; `false`, having written nothing, when
    /// its message was already recorded. Must run inside a transaction.
    async fn write_clerk_state(&mut self, write: &ClerkWrite<'_>) -> QueryResult<bool>;

    /// Live admins, holding the admin counters until the transaction ends so
    /// that two concurrent demotions cannot both remove "the other" admin.
    /// Take it after the user rows (see `app::change_roles`).
    async fn lock_admin_count(&mut self) -> QueryResult<i64>;

    /// Takes the maintenance lock until the transaction ends; `false` when
    /// another replica holds it (PostgreSQL). SQLite's write lock already
    /// lets one writer at a time through.
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool>;
}

/// The advisory lock key of maintenance rounds (see `Db::migrate` for the
/// migration lock's).
const MAINTENANCE_LOCK: i64 = 7_243_018;

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

#[async_trait::async_trait]
impl Store for AsyncPgConnection {
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool> {
        diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind::<BigInt, _>(MAINTENANCE_LOCK)
            .get_result::<Locked>(self)
            .await
            .map(|row| row.locked)
    }

    async fn lock_admin_count(&mut self) -> QueryResult<i64> {
        // In shard order, like every transaction that takes counter rows.
        role_counts::table
            .filter(role_counts::role.eq(Role::Admin))
            .order(role_counts::shard)
            .select(role_counts::count)
            .for_update()
            .load::<i64>(self)
            .await
            .map(|shards| shards.into_iter().sum())
    }

    async fn lock_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>> {
        users::table
            .find(id)
            .select(UserRow::as_select())
            .for_update()
            .first(self)
            .await
            .optional()
    }

    async fn write_clerk_state(&mut self, write: &ClerkWrite<'_>) -> QueryResult<bool> {
        OneStatement::new(write).get_result(self).await
    }
}

#[async_trait::async_trait]
impl Store for SqliteConn {
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool> {
        Ok(true)
    }

    async fn lock_admin_count(&mut self) -> QueryResult<i64> {
        // The write lock taken by `lock_user` already serializes writers.
        admin_count(self).await
    }

    async fn lock_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>> {
        // SQLite has no row locks. A write as the transaction's first statement
        // takes the database's write lock (waiting out `busy_timeout`), which
        // serializes writers across processes just as FOR UPDATE would; a read
        // first would instead fail with SQLITE_BUSY when it tried to upgrade.
        diesel::update(users::table.find(id))
            .set(users::id.eq(users::id))
            .execute(self)
            .await?;
        users::table
            .find(id)
            .select(UserRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn write_clerk_state(&mut self, write: &ClerkWrite<'_>) -> QueryResult<bool> {
        write_in_steps(self, write).await
    }
}

async fn admin_count(conn: &mut SqliteConn) -> QueryResult<i64> {
    role_counts::table
        .filter(role_counts::role.eq(Role::Admin))
        .select(role_counts::count)
        .load::<i64>(conn)
        .await
        .map(|shards| shards.into_iter().sum())
}

/// Writes `write` one statement at a time; `false` (having written nothing)
/// when its message was already recorded. Must run inside a transaction.
async fn write_in_steps(conn: &mut SqliteConn, write: &ClerkWrite<'_>) -> QueryResult<bool> {
    if let Some(message) = &write.message
        && !conn.record_webhook_event(message).await?
    {
        return Ok(false);
    }
    let id = write.id;
    let changes = &write.changes;
    if write.is_new {
        conn.insert_user(&NewUser {
            id,
            email: changes.email,
            first_name: changes.first_name,
            last_name: changes.last_name,
            image_url: changes.image_url,
            role: changes.role,
            clerk_updated_at: changes.clerk_updated_at,
            clerk_role: changes.clerk_role,
            created_at: changes.created_at,
            updated_at: changes.updated_at,
        })
        .await?;
    } else {
        conn.apply_clerk_changes(id, changes).await?;
        if write.clear_sync_error {
            conn.clear_sync_error(id).await?;
        }
    }
    if let Some(role_move) = &write.role_move {
        conn.move_count(id, role_move.from, Some(role_move.to))
            .await?;
        conn.insert_role_change(&NewRoleChange {
            user_id: id,
            old_role: role_move.from,
            new_role: role_move.to,
            source: role_move.source,
            actor: Some(role_move.actor),
            changed_at: changes.updated_at,
        })
        .await?;
    }
    Ok(true)
}
