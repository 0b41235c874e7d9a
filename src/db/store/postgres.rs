//! [`Store`] on PostgreSQL. A transaction that changes users is two round
//! trips whatever its size: BEGIN goes out with the locking reads and the
//! clock, COMMIT with the writes ([`statements`]).

use diesel::connection::TransactionManagerStatus;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager as _,
};
use futures_util::future::{join, try_join, try_join_all, try_join4, try_join5};

use super::{LockedRows, Store, WriteSet};
use crate::db::outbox::enqueue_sql;
use crate::db::queries::postgres;
use crate::db::rows::UserRow;
use crate::db::schema::{clerk_sync, role_counts, users};
use crate::domain::{ClerkUserId, Role};

mod statements;

use statements as pg;

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(name, value, is_local)`.
    fn set_config(
        name: diesel::sql_types::Text,
        value: diesel::sql_types::Text,
        is_local: diesel::sql_types::Bool,
    ) -> diesel::sql_types::Text;
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
    async fn refresh_user_statistics(&mut self) -> QueryResult<()> {
        diesel::sql_query("ANALYZE users")
            .execute(self)
            .await
            .map(drop)
    }

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

    async fn write_changes(&mut self, write: WriteSet) -> QueryResult<()> {
        write_pipelined(self, &write).await
    }

    async fn write_and_commit(&mut self, write: WriteSet) -> QueryResult<()> {
        let conn: &AsyncPgConnection = self;
        let writes = write_pipelined(conn, &write);
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
    // lookup per key whatever the tables' sizes (see `statements`). Left to
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
    let outbox = async {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        pg::OutboxOf::new(&ids).load(&mut &*conn).await
    };
    let recorded = async {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        pg::Recorded::new(messages).load(&mut &*conn).await
    };
    let now = pg::Clock.get_result(&mut &*conn);
    let (_, users, outbox, recorded, now) =
        try_join5(generic_plans, users, outbox, recorded, now).await?;
    Ok(LockedRows {
        users,
        outbox,
        recorded,
        now,
    })
}

/// Writes applied Clerk states (see [`Store::write_changes`]).
async fn write_pipelined(conn: &AsyncPgConnection, write: &WriteSet) -> QueryResult<()> {
    let statements = pg::Statements::of(write);
    // Pipelined: sent together, run by the server one after another in the
    // order they are polled here (`try_join` polls in order), which is the
    // lock order: users (the new ones inserted before anything else is
    // taken) and messages, outbox rows, counters by role and shard last.
    let users = run(statements.users.as_ref().map(|q| q.execute(&mut &*conn)));
    // Rare (a push Clerk refused for good): one statement each.
    let cleared = try_join_all(write.cleared_push_errors.iter().map(|id| {
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

/// Runs a statement that has rows to write, if there is one.
async fn run(statement: Option<impl Future<Output = QueryResult<usize>>>) -> QueryResult<()> {
    match statement {
        Some(statement) => statement.await.map(drop),
        None => Ok(()),
    }
}
