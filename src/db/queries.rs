//! The queries of the service, written once for both backends.

use diesel::prelude::*;
use diesel_async::AsyncConnection;

use super::rows::{
    BoundInstance, DriftAuditRow, OutboxRow, OutboxSummary, Progress, RoleChangeRow, RoleStats,
    Sending, UserFilter, UserRow, WebhookEventFilter, WebhookEventRow,
};
use crate::domain::{ClerkUserId, Role, UnrecordedPushes};

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
/// connection.
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

    /// Removes a user's outbox row, if any.
    async fn delete_outbox_row(&mut self, user_id: &ClerkUserId) -> QueryResult<()>;

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

    /// Queues a push of `role`, due and queued at the database's clock,
    /// replacing any role not yet sent (a push in flight keeps its lease;
    /// the new version waits for it).
    async fn enqueue_push(&mut self, user_id: &ClerkUserId, role: Role) -> QueryResult<()>;

    /// Marks version `version` as landed.
    async fn mark_synced(&mut self, user_id: &ClerkUserId, version: i64) -> QueryResult<()>;

    /// Schedules another try of `version`, `retry_in_ms` after the
    /// database's clock (`None`: stop retrying), if `owner` still claims it
    /// (else another replica is sending it, and records its own result).
    async fn reschedule_push(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        retry_in_ms: Option<i64>,
        error: &str,
        owner: &str,
    ) -> QueryResult<()>;

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

    /// Lets any worker take the row again, if `owner` claims it.
    async fn release_claim(&mut self, user_id: &ClerkUserId, owner: &str) -> QueryResult<()>;

    /// Sets the roles a user's pushes may have written to Clerk unrecorded:
    /// once Clerk's answer or a read of Clerk is recorded, nothing older can
    /// be the newest Clerk state, so only a push about to be sent counts.
    async fn set_unrecorded_pushes(
        &mut self,
        user_id: &ClerkUserId,
        pushes: UnrecordedPushes,
    ) -> QueryResult<()>;

    /// Hands back every claim `owner` holds (at its start, and as it stops);
    /// how many there were.
    async fn release_claims_of(&mut self, owner: &str) -> QueryResult<usize>;

    /// Extends the leases `owner` still holds on `user_ids` to `lease_ms`
    /// after the database's clock; how many it still held.
    async fn renew_claims(
        &mut self,
        owner: &str,
        user_ids: &[ClerkUserId],
        lease_ms: i64,
    ) -> QueryResult<usize>;

    /// Right before sending version `version`: notes that its pushes may
    /// write `roles` unrecorded until `may_apply_ms` after the database's
    /// clock (or `earlier_until`, if later), and extends `owner`'s lease to
    /// `lease_ms` after it (long enough to outlast the request), only if
    /// `owner` still holds a live claim on that version of a pending push.
    /// Returns the database's clock (ms since the epoch) it noted at;
    /// `None`: the claim was lost (expired and taken over, or the push
    /// settled), and the push must not be sent.
    async fn note_before_sending(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: &str,
        sending: Sending,
        lease_ms: i64,
    ) -> QueryResult<Option<i64>>;

    /// Cancels version `version` of a user's push if it is still pending
    /// and no live claim (other than `owner`'s) is sending it; whether it did.
    /// A live claim sending an older version stays: that push is in flight,
    /// and its answer is recorded when it comes.
    /// Claims are live by the database's clock.
    async fn cancel_push(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: Option<&str>,
    ) -> QueryResult<bool>;

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

    /// Forgets finished runs but the newest `keep`.
    async fn prune_drift_audits(&mut self, keep: i64) -> QueryResult<()>;

    /// Up to `limit` live users, by id after `after`, that existed before
    /// `started_at` and that the run started then has not found in Clerk's
    /// list.
    async fn unaudited_users(
        &mut self,
        started_at: chrono::NaiveDateTime,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<ClerkUserId>>;

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

    /// Takes up to `limit` due, unclaimed pushes for `owner` for `lease_ms`,
    /// due and leased by the database's clock, counting an attempt for each.
    /// On PostgreSQL rows that another replica is claiming at the same
    /// moment are skipped, not waited for (each backend's `CLAIM_LOCK`).
    async fn claim_due_pushes(
        &mut self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> QueryResult<Vec<OutboxRow>>;
}

/// The claim, written for both backends; each backend adds its `CLAIM_LOCK`,
/// its clock `now` and the lease's end `lease_until` (from `$1`, in ms).
/// Placeholders are numbered in the order they appear, which is how SQLite
/// binds them.
fn claim_sql(locking: &str, now: &str, lease_until: &str) -> String {
    format!(
        "UPDATE clerk_sync SET claimed_until = {lease_until}, claimed_by = $2, \
             attempts = attempts + 1, \
             taken_over = (claimed_by IS NOT NULL), claimed_version = version \
         WHERE user_id IN ( \
             SELECT user_id FROM clerk_sync \
             WHERE next_attempt_at <= {now} AND (claimed_until IS NULL OR claimed_until < {now}) \
             ORDER BY next_attempt_at LIMIT $3 {locking}) \
         RETURNING user_id, desired_role, version, attempts, next_attempt_at, last_error, claimed_until, queued_at, claimed_by, seen_clerk_updated_at, taken_over, unrecorded_roles, unrecorded_until, claimed_version"
    )
}

/// Queues a push of role `$2` for user `$1`: a new version of its outbox
/// row, due now, noting the Clerk state the user holds (what the race rule
/// compares Clerk's later states with). `now` is the backend's clock.
pub(super) fn enqueue_sql(now: &str) -> String {
    format!(
        "INSERT INTO clerk_sync (user_id, desired_role, version, attempts, next_attempt_at, \
             queued_at, seen_clerk_updated_at) \
         VALUES ($1, $2, 1, 0, {now}, {now}, \
             (SELECT clerk_updated_at FROM users WHERE id = $1)) \
         ON CONFLICT (user_id) DO UPDATE SET desired_role = excluded.desired_role, \
             version = clerk_sync.version + 1, attempts = 0, \
             next_attempt_at = excluded.next_attempt_at, last_error = NULL, \
             queued_at = excluded.queued_at, \
             seen_clerk_updated_at = excluded.seen_clerk_updated_at"
    )
}

// The implementation, `queries/shared.rs`, compiled once per connection type.
pub(super) mod postgres;
pub(super) mod sqlite;
