//! [`Outbox`]: the writes to the outbox (`clerk_sync`), one row per user
//! with a role to push to Clerk. The unit of work queues, cancels, lands and
//! reschedules pushes; the push use-case takes, renews and hands back its
//! claims and notes a push before it is sent. Nothing else writes it (the
//! layout test holds that).

use diesel::QueryResult;

use super::rows::{Noted, OutboxRow, Sending};
use crate::domain::{ClerkUserId, Role, UnrecordedPushes};

/// The outbox's writes, for either backend's connection: declared here,
/// written once in `queries/outbox.rs`.
#[async_trait::async_trait]
pub trait Outbox: Send {
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
    /// Returns the database's clock it noted at, and the Clerk budget's
    /// pause; during a pause it notes nothing (the push is not sent yet) and
    /// only extends the lease. `None`: the claim was lost (expired and taken
    /// over, or the push settled or cancelled by a newer intent), and the
    /// push must not be sent.
    async fn note_before_sending(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: &str,
        sending: Sending,
        lease_ms: i64,
    ) -> QueryResult<Option<Noted>>;

    /// Sets the roles a user's pushes may have written to Clerk unrecorded:
    /// once Clerk's answer or a read of Clerk is recorded, nothing older can
    /// be the newest Clerk state, so only a push about to be sent counts.
    async fn set_unrecorded_pushes(
        &mut self,
        user_id: &ClerkUserId,
        pushes: UnrecordedPushes,
    ) -> QueryResult<()>;

    /// Lets any worker take the row again, if `owner` claims it.
    async fn release_claim(&mut self, user_id: &ClerkUserId, owner: &str) -> QueryResult<()>;

    /// Hands back every claim `owner` holds (at its start, and as it stops);
    /// how many there were.
    async fn release_claims_of(&mut self, owner: &str) -> QueryResult<usize>;

    /// Queues a push of `role`, due and queued at the database's clock,
    /// replacing any role not yet sent (a push in flight keeps its lease;
    /// the new version waits for it).
    async fn enqueue_push(&mut self, user_id: &ClerkUserId, role: Role) -> QueryResult<()>;

    /// Cancels version `version` of a user's push if it is still pending
    /// and no live claim (other than `owner`'s) is sending it (a claim sends
    /// from its note before the request: one that waits for its slot or a
    /// pause is cancelled with the push, and its note then finds it gone);
    /// whether it did.
    /// A live claim sending an older version stays: that push is in flight,
    /// and its answer is recorded when it comes.
    /// Claims are live by the database's clock.
    async fn cancel_push(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: Option<&str>,
    ) -> QueryResult<bool>;

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

    /// Removes a user's outbox row, if any.
    async fn delete_outbox_row(&mut self, user_id: &ClerkUserId) -> QueryResult<()>;
}

/// The claim, written for both backends; each backend adds its `CLAIM_LOCK`,
/// its clock `now` and the lease's end `lease_until` (from `$1`, in ms).
/// Placeholders are numbered in the order they appear, which is how SQLite
/// binds them.
pub(super) fn claim_sql(locking: &str, now: &str, lease_until: &str) -> String {
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
