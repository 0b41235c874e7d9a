//! The queries of the service, written once for both backends.

use diesel::prelude::*;
use diesel_async::AsyncConnection;

use super::rows::{
    BoundInstance, ClerkSlot, DriftAuditRow, OutboxRow, OutboxSummary, Progress, RoleChangeRow,
    RoleStats, UserFilter, UserRow, WebhookEventFilter, WebhookEventRow,
};
use crate::domain::{ClerkUserId, Role};

diesel::define_sql_function! {
    /// SQL `lower()`, on both backends.
    fn lower(value: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

diesel::define_sql_function! {
    /// `first_name || ' ' || last_name`, so "Ada Lovelace" finds her.
    #[sql_name = "concat_ws"]
    fn concat_name_ws(
        separator: diesel::sql_types::Text,
        first: diesel::sql_types::Nullable<diesel::sql_types::Text>,
        last: diesel::sql_types::Nullable<diesel::sql_types::Text>,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// Every query that reads the same on both backends, for either backend's
/// connection, but the outbox's writes ([`Outbox`](super::Outbox)): reads
/// of every table, and writes of the tables no unit of work holds (the
/// instance binding, backfill progress, the walk lease, drift audit runs,
/// pruning of processed webhooks).
///
/// Each method is one statement; transactions are composed by the
/// use-cases (`app/`), generic over `C: Store`.
#[async_trait::async_trait]
pub trait Queries: AsyncConnection + Send {
    /// The database's clock, now (SQLite's on SQLite): the time every
    /// transaction that changes a user stamps and judges claims by, so that
    /// replicas whose own clocks differ agree.
    async fn clock(&mut self) -> QueryResult<chrono::NaiveDateTime>;

    /// A user by id, deleted ones included.
    async fn find_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>>;

    /// Every counter shard as `(role, count)`: 48 rows, whatever the user count.
    async fn role_count_shards(&mut self) -> QueryResult<Vec<(Role, i64)>>;

    /// Live users per role, summed from the counter shards: a constant 48
    /// rows, whatever the number of users.
    async fn role_stats(&mut self) -> QueryResult<RoleStats> {
        let mut stats = RoleStats::default();
        for (role, count) in self.role_count_shards().await? {
            match role {
                Role::Student => stats.students += count,
                Role::Instructor => stats.instructors += count,
                Role::Admin => stats.admins += count,
            }
        }
        Ok(stats)
    }

    /// A user's outbox row, if any.
    async fn find_outbox_row(&mut self, user_id: &ClerkUserId) -> QueryResult<Option<OutboxRow>>;

    /// Up to `limit` of a user's audit rows, newest first, older than the
    /// row `before` when given.
    async fn role_history(
        &mut self,
        user_id: &ClerkUserId,
        before: Option<i64>,
        limit: i64,
    ) -> QueryResult<Vec<RoleChangeRow>>;

    /// A user with its outbox row.
    async fn find_user_with_outbox_row(
        &mut self,
        id: &ClerkUserId,
    ) -> QueryResult<Option<(UserRow, Option<OutboxRow>)>>;

    /// One page of live users, newest first, after `filter.after`.
    async fn list_users(
        &mut self,
        filter: &UserFilter,
    ) -> QueryResult<Vec<(UserRow, Option<OutboxRow>)>>;

    /// Pushes queued or retrying, and when the oldest of them was queued.
    async fn push_queue_stats(&mut self) -> QueryResult<(i64, Option<chrono::NaiveDateTime>)>;

    /// Every live user as `(id, role)`.
    async fn live_user_roles(&mut self) -> QueryResult<Vec<(ClerkUserId, Role)>>;

    /// The Clerk instance the database is bound to, if any.
    async fn bound_instance(&mut self) -> QueryResult<Option<BoundInstance>>;

    /// Binds the database to `instance` unless it is bound already; whether
    /// it did (two replicas binding at once: one of them does).
    async fn bind_instance(&mut self, instance: &BoundInstance) -> QueryResult<bool>;

    /// Binds the database to `instance`, whatever it was bound to.
    async fn rebind_instance(&mut self, instance: &BoundInstance) -> QueryResult<()>;

    /// Up to `limit` live users, newest first: the admins, or (`admins`
    /// false) everyone else.
    async fn live_user_ids(&mut self, admins: bool, limit: i64) -> QueryResult<Vec<ClerkUserId>>;

    /// The unfinished backfill, if any.
    async fn load_backfill_progress(&mut self) -> QueryResult<Option<Progress>>;

    /// Records how far the backfill got.
    async fn save_backfill_progress(&mut self, progress: &Progress) -> QueryResult<()>;

    /// Forgets the backfill's progress (it finished, or starts over).
    async fn delete_backfill_progress(&mut self) -> QueryResult<()>;

    /// Deletes up to `batch` processed messages received before `cutoff`;
    /// how many.
    async fn prune_webhook_events(
        &mut self,
        cutoff: chrono::NaiveDateTime,
        batch: i64,
    ) -> QueryResult<usize>;

    /// How long (ms, by the database's clock) until the next unclaimed push
    /// falls due, if any is queued; 0 or less when one is due.
    async fn next_push_due_in(&mut self) -> QueryResult<Option<i64>>;

    /// Takes the lease on walking Clerk's user list for `owner` for
    /// `lease_ms` from the database's clock: free, expired, or already
    /// `owner`'s (a renewal); whether it did.
    async fn take_walk_lease(&mut self, owner: &str, lease_ms: i64) -> QueryResult<bool>;

    /// Gives the walk lease back, if `owner` holds it.
    async fn release_walk_lease(&mut self, owner: &str) -> QueryResult<()>;

    /// Who holds the walk lease now (by the database's clock), and until
    /// when.
    async fn walk_lease_holder(&mut self) -> QueryResult<Option<(String, chrono::NaiveDateTime)>>;

    /// The drift audit run of `serve` not finished yet, if any (a
    /// `reconcile` run is never resumed).
    async fn unfinished_drift_audit(&mut self) -> QueryResult<Option<DriftAuditRow>>;

    /// The newest finished run, if any; `reports`: `reconcile`'s report-only
    /// runs count too.
    async fn last_drift_audit(&mut self, reports: bool) -> QueryResult<Option<DriftAuditRow>>;

    /// Starts a run of `mode` (`audit`, `report` or `fix`).
    async fn start_drift_audit(
        &mut self,
        owner: &str,
        started_at: chrono::NaiveDateTime,
        mode: &str,
    ) -> QueryResult<DriftAuditRow>;

    /// Holds back a change of `kind` to user `user_id` until the end of
    /// run `run_id`; `false` when it is held already.
    async fn hold_drift_change(
        &mut self,
        run_id: i64,
        user_id: &ClerkUserId,
        kind: &str,
    ) -> QueryResult<bool>;

    /// How many changes run `run_id` holds back.
    async fn count_held_drift_changes(&mut self, run_id: i64) -> QueryResult<i64>;

    /// Up to `limit` of the changes run `run_id` holds back, by user id
    /// after `after`, as `(user, kind)`.
    async fn held_drift_changes(
        &mut self,
        run_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<(ClerkUserId, String)>>;

    /// Records where a run stands and what it found.
    async fn save_drift_audit(&mut self, run: &DriftAuditRow) -> QueryResult<()>;

    /// Records why run `run_id` stopped, and nothing else of it.
    async fn note_drift_audit_error(&mut self, run_id: i64, error: &str) -> QueryResult<()>;

    /// Forgets finished runs but the newest `keep`.
    async fn prune_drift_audits(&mut self, keep: i64) -> QueryResult<()>;

    /// The sketch of the live users run `run_id`'s walk found in Clerk's
    /// list so far (see `domain::IdSketch`), as stored.
    async fn drift_audit_sketch(&mut self, run_id: i64) -> QueryResult<Option<Vec<u8>>>;

    /// Stores run `run_id`'s sketch.
    async fn save_drift_audit_sketch(&mut self, run_id: i64, listed: &[u8]) -> QueryResult<()>;

    /// Forgets run `run_id`'s sketch (its walk starts over).
    async fn forget_drift_audit_sketch(&mut self, run_id: i64) -> QueryResult<()>;

    /// Up to `limit` live users, by id after `after`.
    async fn live_users(
        &mut self,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<ClerkUserId>>;

    /// Users `ids` as they stand (deleted ones too; absent ones left out),
    /// with their outbox rows, read without locking them.
    async fn users_with_outbox_rows(
        &mut self,
        ids: &[ClerkUserId],
    ) -> QueryResult<Vec<(UserRow, Option<OutboxRow>)>>;

    /// One page of processed Svix messages, newest first.
    async fn list_webhook_events(
        &mut self,
        filter: &WebhookEventFilter,
    ) -> QueryResult<Vec<WebhookEventRow>>;

    /// The newest processed Svix message, if any.
    async fn last_webhook_event(&mut self) -> QueryResult<Option<WebhookEventRow>>;

    /// How many pushes are pending and failing, and since when the oldest
    /// pending one waits.
    async fn outbox_summary(&mut self) -> QueryResult<OutboxSummary>;

    /// Up to `limit` pushes pending or failing, oldest queued first.
    async fn unsettled_pushes(&mut self, limit: i64) -> QueryResult<Vec<OutboxRow>>;

    /// Takes the next slot of the Clerk budget every replica shares, one
    /// `interval_us` long: it starts when the budget's next slot does, or
    /// when a pause ends, or now, whichever is latest (slots nobody took
    /// are not saved up), but never more than `horizon_us` ahead of now
    /// (the database's clock stepping back must not hold every sender for
    /// as long). Returns how long (µs, the database's clock) until the
    /// slot starts, 0 or less for at once, and until the pause ends.
    async fn take_clerk_slot(
        &mut self,
        interval_us: i64,
        horizon_us: i64,
    ) -> QueryResult<ClerkSlot>;

    /// Takes the next slot of the Clerk budget only if it has come and no
    /// pause holds it (nobody is waiting for one: what pushes leave);
    /// `None` when it has, else how long (µs) until it might.
    async fn take_idle_clerk_slot(&mut self, interval_us: i64) -> QueryResult<Option<i64>>;

    /// Pauses every request of the Clerk budget for `pause_us` from now (or
    /// longer, if a pause already holds it).
    async fn pause_clerk(&mut self, pause_us: i64) -> QueryResult<()>;
}

// The implementation, `queries/shared.rs`, compiled once per connection type.
pub(super) mod postgres;
pub(super) mod sqlite;
