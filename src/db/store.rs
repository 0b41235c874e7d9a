//! [`Store`]: every query of the service, for either backend's connection:
//! the [`Queries`] and the [`Outbox`], written once for both backends, and
//! here what PostgreSQL (`postgres.rs`) and SQLite (`sqlite.rs`) do
//! differently: row locks, the counter lock, the maintenance lock, and the
//! transaction that changes users, begun with its locks and committed with
//! its [`WriteSet`].
//!
//! A [`WriteSet`] is decided before anything is written, so it is written in
//! a few set-based statements whatever the number of users: on PostgreSQL
//! each statement takes its rows as arrays (`unnest`), so its text never
//! varies and it is prepared once per connection; SQLite, in-process,
//! writes it row by row in the same transaction.

use diesel::QueryResult;

use super::outbox::Outbox;
use super::queries::Queries;
use super::rows::{NewRoleChange, NewWebhookEvent, OutboxRow, UserRow};
use crate::domain::{ClerkUserId, CountDeltas, Role};

mod postgres;
mod sqlite;

/// Users locked for a transaction, with what was read once the locks were
/// held.
#[derive(Debug)]
pub struct LockedRows {
    /// The users that exist (deleted ones too), by id.
    pub users: Vec<UserRow>,
    /// Their outbox rows, as the locks' previous holders left them.
    pub outbox: Vec<OutboxRow>,
    /// The Svix message ids asked about that are already recorded.
    pub recorded: Vec<String>,
    /// The database's clock once the locks were held.
    pub now: chrono::NaiveDateTime,
}

/// Every query of the service: what differs between the backends, on top of
/// the [`Queries`] and the [`Outbox`] writes that do not. Use-cases are
/// generic over `C: Store`.
#[async_trait::async_trait]
pub trait Store: Queries + Outbox {
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
    async fn write_changes(&mut self, write: WriteSet) -> QueryResult<()>;

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

    /// Writes applied Clerk states as [`write_changes`] does and commits the
    /// transaction [`begin_locking_users`] began, in one round trip on
    /// PostgreSQL (COMMIT goes out with the writes, and ends the
    /// transaction as ROLLBACK when a write failed).
    ///
    /// [`write_changes`]: Store::write_changes
    /// [`begin_locking_users`]: Store::begin_locking_users
    async fn write_and_commit(&mut self, write: WriteSet) -> QueryResult<()>;

    /// Rolls back the transaction [`begin_locking_users`] began, if it is
    /// still open; the connection is usable again once this succeeds.
    ///
    /// [`begin_locking_users`]: Store::begin_locking_users
    async fn roll_back(&mut self) -> QueryResult<()>;

    /// Live admins, holding the admin counters until the transaction ends so
    /// that two concurrent demotions cannot both remove "the other" admin.
    /// Take it after the user rows (see `app::change_roles`).
    async fn lock_admin_count(&mut self) -> QueryResult<i64>;

    /// Refreshes the planner's statistics of `users` after a bulk load (a
    /// backfill): until autovacuum gets to it, PostgreSQL would plan the
    /// walks over a million users it thinks are a few (a full scan and a
    /// sort per batch of the drift audit's scan, not an index range).
    /// SQLite plans without statistics: nothing to do.
    async fn refresh_user_statistics(&mut self) -> QueryResult<()>;

    /// Takes the maintenance lock until the transaction ends; `false` when
    /// another replica holds it (PostgreSQL). SQLite's write lock already
    /// lets one writer at a time through.
    async fn try_lock_maintenance(&mut self) -> QueryResult<bool>;
}

/// What a unit of work writes at its end: the users as they end, the
/// outbox rows that lose a superseded error, the pushes queued, the audit
/// rows, the counter moves and the Svix messages with their outcomes; in
/// the order it is written (the order every transaction takes its locks in:
/// users, then the outbox rows of those users, then counters by role name
/// and shard). Outbox rows that go (users deleted in Clerk) or whose push is
/// cancelled are written as the states are judged, in id order, before
/// this.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Users new to the database, as they end (tombstones included).
    pub created: Vec<UserRow>,
    /// Users already here, as they end.
    pub updated: Vec<UserRow>,
    /// Users whose push Clerk refused for good, now superseded by Clerk's
    /// state: the error is cleared. In id order.
    pub cleared_push_errors: Vec<ClerkUserId>,
    /// Pushes to queue once the users are written (a queued push notes the
    /// Clerk state its user holds), by user id.
    pub queued: Vec<(ClerkUserId, Role)>,
    /// One audit row per role change, in the order the changes were made.
    pub audits: Vec<NewRoleChange>,
    pub counts: CountDeltas,
    /// The Svix messages applied, with their outcomes, by svix id. A message
    /// recorded meanwhile by another transaction is skipped (the caller
    /// compares the count written with the count given).
    pub messages: Vec<NewWebhookEvent>,
}
