//! The queries of the service, written once for both backends.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::SqliteConn;
use super::dialect::Dialect;
use super::schema::{role_changes, role_counts, users};
use super::users::{NewRoleChange, NewUser, UserRow};

/// Every query the service runs, for either backend's connection.
///
/// Each method is one statement; transactions are composed by the callers in
/// `users.rs` and friends, generic over `C: Store`.
pub trait Store: AsyncConnection + Dialect + Send {
    /// A user by id, deleted ones included.
    fn find_user(&mut self, id: &str) -> impl Future<Output = QueryResult<Option<UserRow>>> + Send;

    fn insert_user(&mut self, user: &NewUser<'_>) -> impl Future<Output = QueryResult<()>> + Send;

    /// Sets a user's role and `updated_at`.
    fn update_role(
        &mut self,
        id: &str,
        role: &str,
        now: chrono::NaiveDateTime,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    fn insert_role_change(
        &mut self,
        change: &NewRoleChange<'_>,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Adds `delta` to one shard of a role's live-user counter.
    fn adjust_role_count(
        &mut self,
        role: &str,
        shard: i16,
        delta: i64,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Every counter shard as `(role, count)`: 48 rows, whatever the user count.
    fn role_count_shards(&mut self)
    -> impl Future<Output = QueryResult<Vec<(String, i64)>>> + Send;
}

macro_rules! impl_store {
    ($($conn:ty),+) => {$(
        impl Store for $conn {
            async fn find_user(&mut self, id: &str) -> QueryResult<Option<UserRow>> {
                users::table
                    .find(id)
                    .select(UserRow::as_select())
                    .first(self)
                    .await
                    .optional()
            }

            async fn insert_user(&mut self, user: &NewUser<'_>) -> QueryResult<()> {
                diesel::insert_into(users::table)
                    .values(user)
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn update_role(
                &mut self,
                id: &str,
                role: &str,
                now: chrono::NaiveDateTime,
            ) -> QueryResult<()> {
                diesel::update(users::table.find(id))
                    .set((users::role.eq(role), users::updated_at.eq(now)))
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn insert_role_change(&mut self, change: &NewRoleChange<'_>) -> QueryResult<()> {
                diesel::insert_into(role_changes::table)
                    .values(change)
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn adjust_role_count(&mut self, role: &str, shard: i16, delta: i64) -> QueryResult<()> {
                diesel::update(role_counts::table.find((role, shard)))
                    .set(role_counts::count.eq(role_counts::count + delta))
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn role_count_shards(&mut self) -> QueryResult<Vec<(String, i64)>> {
                role_counts::table
                    .select((role_counts::role, role_counts::count))
                    .load(self)
                    .await
            }
        }
    )+};
}

impl_store!(AsyncPgConnection, SqliteConn);
