//! [`Store`]: every query of the service, for either backend's connection:
//! the [`Queries`] that read the same on both, and here, the one place where
//! PostgreSQL and SQLite need different statements (row locks, the counter
//! lock, the maintenance lock, the set-based write of applied Clerk states).

use diesel::connection::TransactionManagerStatus;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AnsiTransactionManager, TransactionManager as _};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::{join, try_join, try_join_all, try_join4, try_join5};

use super::clerk_write::{StatesWrite, pg};
use super::pool::SqliteConn;
use super::queries::{Queries, enqueue_sql, postgres};
use super::rows::{SyncRow, UserRow};
use super::schema::{clerk_sync, role_counts, users};
use crate::domain::{ClerkUserId, Role};

/// Users locked for a transaction, with what was read once the locks were
/// held.
#[derive(Debug)]
pub struct LockedRows {
    /// The users that exist (deleted ones too), by id.
    pub users: Vec<UserRow>,
    /// Their outbox rows, as the locks' previous holders left them.
    pub syncs: Vec<SyncRow>,
    /// The Svix message ids asked about that are already recorded.
    pub recorded: Vec<String>,
    /// The database's clock once the locks were held.
    pub now: chrono::NaiveDateTime,
}

/// Every query of the service: what differs between the backends, on top of
/// the [`Queries`] that do not. Use-cases are generic over `C: Store`.
#[async_trait::async_trait]
pub trait Store: Queries {
    /// Loads a user (deleted ones too) and holds its row until the
    /// transaction ends, so concurrent changes to one user serialize.
    async fn lock_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>>;

    /// Locks users `ids` (sorted: the order every transaction takes user
    /// rows in) until the transaction ends, then reads their outbox rows and
    /// which of the Svix `messages` are already recorded. Absent users lock
    /// nothing.
    async fn lock_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows>;

    /// Writes applied Clerk states. Must run inside the transaction that
    /// locked the users. A Svix message another transaction recorded
    /// meanwhile fails it with a unique violation.
    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<()>;

    /// Begins a transaction and locks users as [`lock_users`] does, in one
    /// round trip on PostgreSQL (BEGIN goes out with the locking
    /// statements) and one call on SQLite's connection thread. End it with [`write_and_commit`] or [`roll_back`];
    /// until then the connection counts as broken, so that one whose future
    /// was dropped midway is closed by the pool rather than handed out in
    /// the middle of a transaction. Not for use inside another transaction.
    ///
    /// [`lock_users`]: Store::lock_users
    /// [`write_and_commit`]: Store::write_and_commit
    /// [`roll_back`]: Store::roll_back
    async fn begin_locking_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows>;

    /// Writes applied Clerk states as [`write_states`] does and commits the
    /// transaction [`begin_locking_users`] began, in one round trip on
    /// PostgreSQL (COMMIT goes out with the writes, and ends the
    /// transaction as ROLLBACK when a write failed). `written` is called once
    /// the writes are done, before the commit is (on SQLite, after it).
    ///
    /// [`write_states`]: Store::write_states
    /// [`begin_locking_users`]: Store::begin_locking_users
    async fn write_and_commit(
        &mut self,
        write: StatesWrite,
        written: &mut (dyn FnMut() + Send),
    ) -> QueryResult<()>;

    /// Rolls back the transaction [`begin_locking_users`] began, if it is
    /// still open; the connection is usable again once this succeeds.
    ///
    /// [`begin_locking_users`]: Store::begin_locking_users
    async fn roll_back(&mut self) -> QueryResult<()>;

    /// Notes that the drift audit run started at `at` found users `ids` in
    /// Clerk's list. Must run inside the transaction that locked them.
    async fn mark_audited(
        &mut self,
        ids: &[ClerkUserId],
        at: chrono::NaiveDateTime,
    ) -> QueryResult<()>;

    /// Live admins, holding the admin counters until the transaction ends so
    /// that two concurrent demotions cannot both remove "the other" admin.
    /// Take it after the user rows (see `app::change_roles`).
    async fn lock_admin_count(&mut self) -> QueryResult<i64>;

    /// Takes the maintenance lock until the transaction ends; `false` when
    /// another replica holds it (PostgreSQL). SQLite's write lock already
    /// lets one writer at a time through.
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool>;
}

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(name, value, is_local)`.
    fn set_config(
        name: diesel::sql_types::Text,
        value: diesel::sql_types::Text,
        is_local: diesel::sql_types::Bool,
    ) -> diesel::sql_types::Text;
}

/// SQLite's transactions, as diesel-async runs them.
type SqliteTransactions = <SqliteConn as diesel_async::AsyncConnection>::TransactionManager;

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

    async fn lock_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        locked_rows(self, ids, messages).await
    }

    async fn begin_locking_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        // Broken until COMMIT or ROLLBACK (see `finish_batch`): diesel's
        // transaction manager does not know of this transaction, and a
        // connection given back broken is closed (`ClosedIfAbandoned`).
        AnsiTransactionManager::transaction_manager_status_mut(self).set_in_error();
        let conn: &AsyncPgConnection = self;
        // BEGIN is polled first, so it goes out first: statements take
        // their turn at the connection's statement cache in the order polled.
        let begin = pg::Begin.execute(&mut &*conn);
        let (_, locked) = try_join(begin, locked_rows(conn, ids, messages)).await?;
        Ok(locked)
    }

    async fn mark_audited(
        &mut self,
        ids: &[ClerkUserId],
        at: chrono::NaiveDateTime,
    ) -> QueryResult<()> {
        let ids: Vec<&str> = ids.iter().map(ClerkUserId::as_str).collect();
        pg::MarkAudited::new(&ids, at).execute(self).await.map(drop)
    }

    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<()> {
        write_pipelined(self, &write).await
    }

    async fn write_and_commit(
        &mut self,
        write: StatesWrite,
        written: &mut (dyn FnMut() + Send),
    ) -> QueryResult<()> {
        let conn: &AsyncPgConnection = self;
        let writes = async {
            write_pipelined(conn, &write).await?;
            written();
            Ok(())
        };
        // COMMIT goes out after the writes (polled after them). When one of
        // them failed, the transaction is aborted and COMMIT ends it as
        // ROLLBACK, so both futures run to the end whatever the writes did.
        let commit = pg::Commit.execute(&mut &*conn);
        let (writes, commit): (QueryResult<()>, _) = join(writes, commit).await;
        writes?;
        commit?;
        finish_batch(self);
        Ok(())
    }

    async fn roll_back(&mut self) -> QueryResult<()> {
        // Also when the transaction has ended already (PostgreSQL only
        // warns): it is open no longer once this succeeds.
        pg::Rollback.execute(&mut *self).await?;
        finish_batch(self);
        Ok(())
    }
}

/// The connection is out of the transaction `begin_locking_users` began.
fn finish_batch(conn: &mut AsyncPgConnection) {
    *AnsiTransactionManager::transaction_manager_status_mut(conn) =
        TransactionManagerStatus::default();
}

/// Locks users `ids` and reads what [`LockedRows`] holds (see
/// [`Store::lock_users`]).
async fn locked_rows(
    conn: &AsyncPgConnection,
    ids: &[ClerkUserId],
    messages: &[&str],
) -> QueryResult<LockedRows> {
    let ids: Vec<&str> = ids.iter().map(ClerkUserId::as_str).collect();
    // Pipelined: sent together, run by the server one after another in the
    // order they are polled (`try_join` polls in order). The reads are
    // statements of their own, after the lock: under READ COMMITTED a
    // statement sees what was committed when it started, so a read inside
    // the locking statement would miss what the lock's previous holder
    // wrote.
    //
    // Every statement of a batch is written to be planned once, an index
    // lookup per key whatever the tables' sizes (see `clerk_write`). Left to
    // itself PostgreSQL would plan each again for its arrays (custom plans),
    // which costs more than running it.
    let generic_plans = diesel::select(set_config("plan_cache_mode", "force_generic_plan", true))
        .execute(&mut &*conn);
    let users = async {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        pg::LockUsers::new(&ids).load(&mut &*conn).await
    };
    let syncs = async {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        pg::SyncsOf::new(&ids).load(&mut &*conn).await
    };
    let recorded = async {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        pg::Recorded::new(messages).load(&mut &*conn).await
    };
    let now = pg::Clock.get_result(&mut &*conn);
    let (_, users, syncs, recorded, now) =
        try_join5(generic_plans, users, syncs, recorded, now).await?;
    Ok(LockedRows {
        users,
        syncs,
        recorded,
        now,
    })
}

/// Writes applied Clerk states (see [`Store::write_states`]).
async fn write_pipelined(conn: &AsyncPgConnection, write: &StatesWrite) -> QueryResult<()> {
    let statements = pg::Statements::of(write);
    // Pipelined: sent together, run by the server one after another in the
    // order they are polled here (`try_join` polls in order), which is the
    // lock order: users (the new ones inserted before anything else is
    // taken) and messages, outbox rows, counters by role and shard last.
    let users = run(statements.users.as_ref().map(|q| q.execute(&mut &*conn)));
    // Rare (a push Clerk refused for good): one statement each.
    let cleared = try_join_all(write.cleared_sync_errors.iter().map(|id| {
        diesel::update(
            clerk_sync::table
                .find(id)
                .filter(clerk_sync::next_attempt_at.is_null()),
        )
        .set(clerk_sync::last_error.eq(None::<String>))
        .execute(&mut &*conn)
    }));
    let enqueue = enqueue_sql(postgres::NOW);
    let queued = try_join_all(write.queued.iter().map(|(id, role)| {
        diesel::sql_query(&enqueue)
            .bind::<Text, _>(id)
            .bind::<Text, _>(role)
            .execute(&mut &*conn)
    }));
    let counts = run(statements.counts.as_ref().map(|q| q.execute(&mut &*conn)));
    try_join4(users, cleared, queued, counts).await.map(drop)
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

    async fn lock_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        let ids = ids.to_vec();
        let messages: Vec<String> = messages.iter().map(|&id| id.to_owned()).collect();
        // One call on the connection's thread for all of it.
        self.spawn_blocking(move |conn| sqlite::lock_users(conn, &ids, &messages))
            .await
    }

    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<()> {
        self.spawn_blocking(move |conn| sqlite::write_states(conn, &write))
            .await
    }

    async fn begin_locking_users(
        &mut self,
        ids: &[ClerkUserId],
        messages: &[&str],
    ) -> QueryResult<LockedRows> {
        let ids = ids.to_vec();
        let messages: Vec<String> = messages.iter().map(|&id| id.to_owned()).collect();
        self.spawn_blocking(move |conn| sqlite::begin_locking_users(conn, &ids, &messages))
            .await
    }

    async fn write_and_commit(
        &mut self,
        write: StatesWrite,
        written: &mut (dyn FnMut() + Send),
    ) -> QueryResult<()> {
        // One call on the connection's thread: the one writer of SQLite has
        // no other writer to hand the queue to before its commit.
        self.spawn_blocking(move |conn| sqlite::write_and_commit(conn, &write))
            .await?;
        written();
        Ok(())
    }

    async fn roll_back(&mut self) -> QueryResult<()> {
        let status = SqliteTransactions::transaction_manager_status_mut(self);
        if status.transaction_depth()?.is_none() {
            return Ok(());
        }
        SqliteTransactions::rollback_transaction(self).await
    }

    async fn mark_audited(
        &mut self,
        ids: &[ClerkUserId],
        at: chrono::NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(users::table.filter(users::id.eq_any(ids)))
            .set(users::audited_at.eq(Some(at)))
            .execute(self)
            .await
            .map(drop)
    }
}

/// The batch statements of SQLite, run on the connection's own thread: one
/// hand-over for a whole batch rather than one per statement. SQLite is
/// in-process, so each statement is cheap; each is prepared once and reused.
mod sqlite {
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    use diesel::prelude::*;
    use diesel::{RunQueryDsl, SqliteConnection};

    use super::LockedRows;
    use crate::db::clerk_write::StatesWrite;
    use crate::db::rows::{SyncRow, UserRow};
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
    pub fn write_and_commit(conn: &mut SqliteConnection, write: &StatesWrite) -> QueryResult<()> {
        write_states(conn, write)?;
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
            syncs: clerk_sync::table
                .filter(clerk_sync::user_id.eq_any(ids))
                .select(SyncRow::as_select())
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

    pub fn write_states(conn: &mut SqliteConnection, write: &StatesWrite) -> QueryResult<()> {
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
                .filter(clerk_sync::user_id.eq_any(&write.cleared_sync_errors))
                .filter(clerk_sync::next_attempt_at.is_null()),
        )
        .set(clerk_sync::last_error.eq(None::<String>))
        .execute(conn)?;
        let enqueue = crate::db::queries::enqueue_sql(crate::db::queries::sqlite::NOW);
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

/// Runs a statement that has rows to write, if there is one.
async fn run(statement: Option<impl Future<Output = QueryResult<usize>>>) -> QueryResult<()> {
    match statement {
        Some(statement) => statement.await.map(drop),
        None => Ok(()),
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
