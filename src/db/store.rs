//! The queries of the service, written once for both backends.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::SqliteConn;
use super::clerk_sync::SyncRow;
use super::dialect::Dialect;
use super::schema::{clerk_sync, role_changes, role_counts, users, webhook_events};
use super::users::{NewRoleChange, NewUser, RoleChangeRow, UserRow};
use super::webhooks::{ClerkChanges, NewWebhookEvent};

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

    /// Writes a user's Clerk-side columns (profile, Clerk state, role).
    fn apply_clerk_changes(
        &mut self,
        id: &str,
        changes: &ClerkChanges<'_>,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Marks a user deleted.
    fn tombstone_user(
        &mut self,
        id: &str,
        now: chrono::NaiveDateTime,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Records a processed Svix message; `false` when its id was already there.
    fn record_webhook_event(
        &mut self,
        event: &NewWebhookEvent<'_>,
    ) -> impl Future<Output = QueryResult<bool>> + Send;

    /// A user's outbox row, if any.
    fn find_sync(
        &mut self,
        user_id: &str,
    ) -> impl Future<Output = QueryResult<Option<SyncRow>>> + Send;

    /// Removes a user's outbox row, if any.
    fn delete_sync(&mut self, user_id: &str) -> impl Future<Output = QueryResult<()>> + Send;

    /// A user's audit rows, newest first.
    fn role_history(
        &mut self,
        user_id: &str,
    ) -> impl Future<Output = QueryResult<Vec<RoleChangeRow>>> + Send;
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

            async fn apply_clerk_changes(&mut self, id: &str, changes: &ClerkChanges<'_>) -> QueryResult<()> {
                diesel::update(users::table.find(id))
                    .set(changes)
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn tombstone_user(&mut self, id: &str, now: chrono::NaiveDateTime) -> QueryResult<()> {
                diesel::update(users::table.find(id))
                    .set((users::deleted_at.eq(now), users::updated_at.eq(now)))
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn record_webhook_event(&mut self, event: &NewWebhookEvent<'_>) -> QueryResult<bool> {
                diesel::insert_into(webhook_events::table)
                    .values(event)
                    .on_conflict_do_nothing()
                    .execute(self)
                    .await
                    .map(|inserted| inserted == 1)
            }

            async fn find_sync(&mut self, user_id: &str) -> QueryResult<Option<SyncRow>> {
                clerk_sync::table
                    .find(user_id)
                    .select(SyncRow::as_select())
                    .first(self)
                    .await
                    .optional()
            }

            async fn delete_sync(&mut self, user_id: &str) -> QueryResult<()> {
                diesel::delete(clerk_sync::table.find(user_id))
                    .execute(self)
                    .await
                    .map(drop)
            }

            async fn role_history(&mut self, user_id: &str) -> QueryResult<Vec<RoleChangeRow>> {
                role_changes::table
                    .filter(role_changes::user_id.eq(user_id))
                    .order(role_changes::id.desc())
                    .select(RoleChangeRow::as_select())
                    .load(self)
                    .await
            }
        }
    )+};
}

impl_store!(AsyncPgConnection, SqliteConn);
