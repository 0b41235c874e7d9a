//! [`Store`]: every query of the service, for either backend's connection:
//! the [`Queries`] that read the same on both, and here, the one place where
//! PostgreSQL and SQLite need different statements (row locks, the counter
//! lock, the maintenance lock, the set-based write of applied Clerk states).

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::{try_join_all, try_join3, try_join4};

use super::clerk_write::{StatesWrite, pg};
use super::pool::SqliteConn;
use super::queries::Queries;
use super::rows::{SyncRow, UserRow};
use super::schema::{clerk_sync, role_counts, users};
use crate::domain::{ClerkUserId, Role};

/// Users locked for a transaction, with what was read once the locks were
/// held.
#[derive(Debug, Default)]
pub struct LockedRows {
    /// The users that exist (deleted ones too), by id.
    pub users: Vec<UserRow>,
    /// Their outbox rows, as the locks' previous holders left them.
    pub syncs: Vec<SyncRow>,
    /// The Svix message ids asked about that are already recorded.
    pub recorded: Vec<String>,
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

    /// Writes applied Clerk states; how many of its messages were recorded
    /// (fewer than given: another transaction recorded one meanwhile). Must
    /// run inside the transaction that locked the users.
    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<usize>;

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
        let ids: Vec<&str> = ids.iter().map(ClerkUserId::as_str).collect();
        // Pipelined: sent together, run by the server one after another in
        // the order they are polled (`try_join` polls in order). The reads
        // are statements of their own, after the lock: under READ COMMITTED
        // a statement sees what was committed when it started, so a read
        // inside the locking statement would miss what the lock's previous
        // holder wrote.
        let conn: &AsyncPgConnection = self;
        // Every statement of a batch is written to be planned once, an index
        // lookup per key whatever the tables' sizes (see `clerk_write`).
        // Left to itself PostgreSQL would plan each again for its arrays
        // (custom plans), which costs more than running it.
        let generic_plans =
            diesel::select(set_config("plan_cache_mode", "force_generic_plan", true))
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
        let (_, users, syncs, recorded) = try_join4(generic_plans, users, syncs, recorded).await?;
        Ok(LockedRows {
            users,
            syncs,
            recorded,
        })
    }

    async fn mark_audited(
        &mut self,
        ids: &[ClerkUserId],
        at: chrono::NaiveDateTime,
    ) -> QueryResult<()> {
        let ids: Vec<&str> = ids.iter().map(ClerkUserId::as_str).collect();
        pg::MarkAudited::new(&ids, at).execute(self).await.map(drop)
    }

    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<usize> {
        let statements = pg::Statements::of(&write);
        // Pipelined: sent together, run by the server one after another in
        // the order they are polled here (`try_join` polls in order), which
        // is the lock order: users (the new ones inserted before anything
        // else is taken) and messages, outbox rows, counters by role and
        // shard last.
        let conn: &AsyncPgConnection = self;
        let users = async {
            let Some(users) = &statements.users else {
                return Ok(0);
            };
            let (updated, recorded): (i64, i64) = users.get_result(&mut &*conn).await?;
            // Every user written here was locked: each must be found.
            match (usize::try_from(updated), usize::try_from(recorded)) {
                (Ok(updated), Ok(recorded)) if updated == users.updates() => Ok(recorded),
                _ => Err(diesel::result::Error::NotFound),
            }
        };
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
        let counts = run(statements.counts.as_ref().map(|q| q.execute(&mut &*conn)));
        let (recorded, ..) = try_join3(users, cleared, counts).await?;
        Ok(recorded)
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

    async fn write_states(&mut self, write: StatesWrite) -> QueryResult<usize> {
        self.spawn_blocking(move |conn| sqlite::write_states(conn, &write))
            .await
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
        })
    }

    pub fn write_states(conn: &mut SqliteConnection, write: &StatesWrite) -> QueryResult<usize> {
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
        let mut recorded = 0;
        for message in &write.messages {
            recorded += diesel::insert_into(webhook_events::table)
                .values(message)
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        Ok(recorded)
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
