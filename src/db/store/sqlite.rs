//! [`Store`] on SQLite: no row locks, one writer at a time (the database's
//! write lock), and a transaction's statements run on the connection's own
//! thread in one call.

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, TransactionManager as _};

use super::{LockedRows, Store, WriteSet};
use crate::db::pool::SqliteConn;
use crate::db::rows::UserRow;
use crate::db::schema::{role_counts, users};
use crate::domain::{ClerkUserId, Role};

/// SQLite's transactions, as diesel-async runs them.
type SqliteTransactions = <SqliteConn as diesel_async::AsyncConnection>::TransactionManager;

#[async_trait::async_trait]
impl Store for SqliteConn {
    async fn refresh_user_statistics(&mut self) -> QueryResult<()> {
        // No `ANALYZE`: its statistics would change the plans of every
        // query, which are written for SQLite's planner without them.
        Ok(())
    }

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

    async fn lock_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        let ids = ids.to_vec();
        let messages: Vec<String> = messages.iter().map(|&id| id.to_owned()).collect();
        // One call on the connection's thread for all of it.
        self.spawn_blocking(move |conn| on_thread::lock_users(conn, &ids, &messages))
            .await
    }

    async fn write_changes(&mut self, write: WriteSet) -> QueryResult<()> {
        self.spawn_blocking(move |conn| on_thread::write_changes(conn, &write))
            .await
    }

    async fn begin_locking_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        let ids = ids.to_vec();
        let messages: Vec<String> = messages.iter().map(|&id| id.to_owned()).collect();
        self.spawn_blocking(move |conn| on_thread::begin_locking_users(conn, &ids, &messages))
            .await
    }

    async fn write_and_commit(&mut self, write: WriteSet) -> QueryResult<()> {
        // One call on the connection's thread.
        self.spawn_blocking(move |conn| on_thread::write_and_commit(conn, &write))
            .await
    }

    async fn roll_back(&mut self) -> QueryResult<()> {
        let status = SqliteTransactions::transaction_manager_status_mut(self);
        if status.transaction_depth()?.is_none() {
            return Ok(());
        }
        SqliteTransactions::rollback_transaction(self).await
    }
}

/// The batch statements of SQLite, run on the connection's own thread: one
/// hand-over for a whole batch rather than one per statement. SQLite is
/// in-process, so each statement is cheap; each is prepared once and reused.
mod on_thread {
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    use diesel::prelude::*;
    use diesel::{RunQueryDsl, SqliteConnection};

    use super::{LockedRows, WriteSet};
    use crate::db::rows::{OutboxRow, UserRow};
    use crate::db::schema::{clerk_sync, role_changes, role_counts, users, webhook_events};
    use crate::domain::ClerkUserId;

    pub fn lock_users(
        conn: &mut SqliteConnection,
        ids: &[ClerkUserId],
        messages: &[String],
    ) -> QueryResult<LockedRows> {
        // A write first takes the database's write lock (see `lock_user`),
        // even when it matches no row.
        diesel::update(users::table.filter(users::id.eq_any(ids)))
            .set(users::id.eq(users::id))
            .execute(conn)?;
        read_locked(conn, ids, messages)
    }

    /// Begins a transaction holding the write lock (`BEGIN IMMEDIATE`
    /// waits out `busy_timeout` for it, as a first write would) and reads
    /// what `lock_users` reads.
    pub fn begin_locking_users(
        conn: &mut SqliteConnection,
        ids: &[ClerkUserId],
        messages: &[String],
    ) -> QueryResult<LockedRows> {
        AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")?;
        read_locked(conn, ids, messages)
    }

    /// Writes applied Clerk states and commits.
    pub fn write_and_commit(conn: &mut SqliteConnection, write: &WriteSet) -> QueryResult<()> {
        write_changes(conn, write)?;
        AnsiTransactionManager::commit_transaction(conn)
    }

    fn read_locked(
        conn: &mut SqliteConnection,
        ids: &[ClerkUserId],
        messages: &[String],
    ) -> QueryResult<LockedRows> {
        Ok(LockedRows {
            users: users::table
                .filter(users::id.eq_any(ids))
                .order(users::id)
                .select(UserRow::as_select())
                .load(conn)?,
            outbox: clerk_sync::table
                .filter(clerk_sync::user_id.eq_any(ids))
                .select(OutboxRow::as_select())
                .load(conn)?,
            recorded: webhook_events::table
                .filter(webhook_events::svix_id.eq_any(messages))
                .select(webhook_events::svix_id)
                .load(conn)?,
            now: diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamp>(
                crate::db::queries::sqlite::CLOCK,
            ))
            .get_result(conn)?,
        })
    }

    pub fn write_changes(conn: &mut SqliteConnection, write: &WriteSet) -> QueryResult<()> {
        for row in &write.created {
            diesel::insert_into(users::table)
                .values(row)
                .execute(conn)?;
        }
        for row in &write.updated {
            diesel::update(users::table.find(&row.id))
                .set(row)
                .execute(conn)?;
        }
        diesel::update(
            clerk_sync::table
                .filter(clerk_sync::user_id.eq_any(&write.cleared_push_errors))
                .filter(clerk_sync::next_attempt_at.is_null()),
        )
        .set(clerk_sync::last_error.eq(None::<String>))
        .execute(conn)?;
        let enqueue = crate::db::outbox::enqueue_sql(crate::db::queries::sqlite::NOW);
        for (id, role) in &write.queued {
            diesel::sql_query(&enqueue)
                .bind::<diesel::sql_types::Text, _>(id)
                .bind::<diesel::sql_types::Text, _>(role)
                .execute(conn)?;
        }
        for audit in &write.audits {
            diesel::insert_into(role_changes::table)
                .values(audit)
                .execute(conn)?;
        }
        for (role, shard, delta) in write.counts.in_lock_order() {
            diesel::update(role_counts::table.find((role, shard)))
                .set(role_counts::count.eq(role_counts::count + delta))
                .execute(conn)?;
        }
        for message in &write.messages {
            diesel::insert_into(webhook_events::table)
                .values(message)
                .execute(conn)?;
        }
        Ok(())
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
