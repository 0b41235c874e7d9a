//! The one place where PostgreSQL and SQLite need different SQL.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use chrono::NaiveDateTime;
use diesel::sql_types::{BigInt, Text, Timestamp};

use super::SqliteConn;
use super::clerk_sync::SyncRow;
use super::clerk_write::{ClerkWrite, OneStatement, write_in_steps};
use super::schema::{role_counts, users};
use super::users::UserRow;
use crate::domain::Role;

/// Backend-specific statements, used by [`super::Store`] code.
#[async_trait::async_trait]
pub trait Dialect {
    /// Loads a user (deleted ones too) and holds its row until the
    /// transaction ends, so concurrent changes to one user serialize.
    async fn lock_user(&mut self, id: &str) -> QueryResult<Option<UserRow>>;

    /// Writes a decided Clerk state; `false`, having written nothing, when
    /// its message was already recorded. Must run inside a transaction.
    async fn write_clerk_state(&mut self, write: &ClerkWrite<'_>) -> QueryResult<bool>;

    /// Live admins, holding the admin counters until the transaction ends so
    /// that two concurrent demotions cannot both remove "the other" admin.
    /// Take it after the user rows (see `users::change_roles`).
    async fn lock_admin_count(&mut self) -> QueryResult<i64>;

    /// Takes the maintenance lock until the transaction ends; `false` when
    /// another replica holds it (PostgreSQL). SQLite's write lock already
    /// lets one writer at a time through.
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool>;

    /// Takes up to `limit` due, unclaimed pushes for `owner` until
    /// `lease_until`, counting an attempt for each. On PostgreSQL rows that
    /// another replica is claiming at the same moment are skipped, not waited for.
    async fn claim_due_pushes(
        &mut self,
        owner: &str,
        now: NaiveDateTime,
        lease_until: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<SyncRow>>;
}

/// The claim, written for both backends; PostgreSQL adds the row locks.
/// Placeholders are numbered in the order they appear, which is how SQLite
/// binds them.
fn claim_sql(locking: &str) -> String {
    format!(
        "UPDATE clerk_sync SET claimed_until = $1, claimed_by = $2, attempts = attempts + 1, \
             taken_over = (claimed_by IS NOT NULL) \
         WHERE user_id IN ( \
             SELECT user_id FROM clerk_sync \
             WHERE next_attempt_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY next_attempt_at LIMIT $4 {locking}) \
         RETURNING user_id, desired_role, version, attempts, next_attempt_at, last_error, claimed_until, queued_at, claimed_by, seen_clerk_updated_at, taken_over, unrecorded_roles, unrecorded_until"
    )
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
impl Dialect for AsyncPgConnection {
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
            .filter(role_counts::role.eq(Role::Admin.as_str()))
            .order(role_counts::shard)
            .select(role_counts::count)
            .for_update()
            .load::<i64>(self)
            .await
            .map(|shards| shards.into_iter().sum())
    }

    async fn claim_due_pushes(
        &mut self,
        owner: &str,
        now: NaiveDateTime,
        lease_until: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<SyncRow>> {
        diesel::sql_query(claim_sql("FOR UPDATE SKIP LOCKED"))
            .bind::<Timestamp, _>(lease_until)
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load(self)
            .await
    }

    async fn lock_user(&mut self, id: &str) -> QueryResult<Option<UserRow>> {
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
impl Dialect for SqliteConn {
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool> {
        Ok(true)
    }

    async fn lock_admin_count(&mut self) -> QueryResult<i64> {
        // The write lock taken by `lock_user` already serializes writers.
        admin_count(self).await
    }

    async fn claim_due_pushes(
        &mut self,
        owner: &str,
        now: NaiveDateTime,
        lease_until: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<SyncRow>> {
        diesel::sql_query(claim_sql(""))
            .bind::<Timestamp, _>(lease_until)
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load(self)
            .await
    }

    async fn lock_user(&mut self, id: &str) -> QueryResult<Option<UserRow>> {
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
        .filter(role_counts::role.eq(Role::Admin.as_str()))
        .select(role_counts::count)
        .load::<i64>(conn)
        .await
        .map(|shards| shards.into_iter().sum())
}
