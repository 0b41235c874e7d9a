//! The rows of the service's tables as stored, and the values written into
//! them.

use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};
use diesel::prelude::*;

use super::schema::{
    backfill_progress, clerk_instance, clerk_sync, drift_audits, role_changes, users,
    webhook_events,
};
use crate::domain::{ClerkUserId, Role, RoleSource};

/// Counter shards per role (see the `role_counts` migration).
pub const COUNT_SHARDS: u16 = 16;

/// A `users` row as stored, and as written whole when a Clerk state is
/// applied (the id is never changed).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct UserRow {
    pub id: ClerkUserId,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub role: Role,
    pub clerk_updated_at: Option<i64>,
    pub clerk_role: Option<Role>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
    /// The newest Clerk state came from our own push's answer.
    pub clerk_from_push: bool,
    /// The tombstone came from Clerk's own `user.deleted`: nothing brings
    /// the user back. (One the drift audit or `reconcile` made is undone
    /// when Clerk shows the user again.)
    pub deletion_final: bool,
}

impl UserRow {
    /// A user known only by id and role (no profile, no Clerk state yet).
    pub fn bare(id: &ClerkUserId, role: Role, now: NaiveDateTime) -> Self {
        Self {
            id: id.clone(),
            email: None,
            first_name: None,
            last_name: None,
            image_url: None,
            role,
            clerk_updated_at: None,
            clerk_role: None,
            clerk_from_push: false,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            deletion_final: false,
        }
    }
}

/// A `role_changes` row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = role_changes)]
pub struct RoleChangeRow {
    pub id: i64,
    pub user_id: ClerkUserId,
    pub old_role: Option<Role>,
    /// `None`: the user was deleted.
    pub new_role: Option<Role>,
    pub source: RoleSource,
    pub actor: Option<String>,
    pub changed_at: NaiveDateTime,
}

/// An audit row to append.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = role_changes)]
pub struct NewRoleChange {
    pub user_id: ClerkUserId,
    /// `None`: the user was new here, or comes back from a tombstone.
    pub old_role: Option<Role>,
    /// `None`: the user was deleted.
    pub new_role: Option<Role>,
    pub source: RoleSource,
    pub actor: Option<String>,
    pub changed_at: NaiveDateTime,
}

/// Which live users a page holds.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    /// A `LIKE` pattern over lower-cased email and names (see [`search_pattern`]).
    pub search_pattern: Option<String>,
    /// Keyset cursor: the `(created_at, id)` of the last user of the previous page.
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// A case-insensitive, literal substring pattern: `%` and `_` in the search
/// match themselves, not anything.
pub fn search_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The Clerk instance the database is bound to: its one `clerk_instance` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = clerk_instance)]
pub struct BoundInstance {
    /// Clerk's `ins_…` id.
    pub instance_id: String,
    /// `development` or `production`.
    pub environment_type: String,
    pub bound_at: NaiveDateTime,
}

/// A user as the rest of the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: ClerkUserId,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            image_url: row.image_url,
            role: row.role,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            deleted_at: row.deleted_at.map(|at| at.and_utc()),
        }
    }
}

/// This replica's current time as stored: UTC, microsecond precision on
/// both backends. Only for notes no rule reads (when the instance was
/// bound, when a backfill started): leases, due times, claim expiry and
/// the times of changes are the database's clock, in the statements
/// themselves or read with [`Queries::clock`](super::Queries::clock).
///
/// `CLOCK_OFFSET_SECS`, read only when set, moves this clock by that many
/// seconds (negative: back). It is for tests of replicas whose clocks
/// differ, not for production.
pub fn now() -> NaiveDateTime {
    (Utc::now() + clock_offset()).naive_utc().trunc_subsecs(6)
}

/// The test-only offset of [`now`]: `CLOCK_OFFSET_SECS`, or none.
fn clock_offset() -> chrono::TimeDelta {
    static OFFSET: std::sync::OnceLock<chrono::TimeDelta> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|secs| secs.trim().parse::<i64>().ok())
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or_default()
    })
}

/// Live users per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleStats {
    pub students: i64,
    pub instructors: i64,
    pub admins: i64,
}

impl RoleStats {
    pub fn total(&self) -> i64 {
        self.students + self.instructors + self.admins
    }
}

/// A `clerk_sync` row as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = clerk_sync)]
pub struct OutboxRow {
    pub user_id: ClerkUserId,
    pub desired_role: Role,
    pub version: i64,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub claimed_until: Option<NaiveDateTime>,
    pub queued_at: Option<NaiveDateTime>,
    pub claimed_by: Option<String>,
    /// Clerk's `updated_at` of the newest state known at the commit.
    pub seen_clerk_updated_at: Option<i64>,
    /// This claim took the row over from an owner whose lease expired.
    pub taken_over: bool,
    /// Roles its pushes may have written to Clerk unrecorded
    /// ([`RoleSet`](crate::domain::RoleSet) bits).
    pub unrecorded_roles: i32,
    /// The latest time (ms) Clerk could have applied one of them.
    pub unrecorded_until: Option<i64>,
    /// The version the claim is sending (`None`: the current one).
    pub claimed_version: Option<i64>,
}

/// What a push about to be sent may write to Clerk without its answer
/// being recorded, as [`Outbox::note_before_sending`] stores it.
///
/// [`Outbox::note_before_sending`]: super::Outbox::note_before_sending
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// The roles the user's pushes may have written, this one's included.
    pub roles: crate::domain::RoleSet,
    /// The latest time (ms) Clerk could have applied an earlier one.
    pub earlier_until: Option<i64>,
    /// How long after the database's clock Clerk may apply this one: the
    /// request's timeout.
    pub may_apply_ms: i64,
}

impl OutboxRow {
    /// Whether a live claim is sending the current version: then Clerk's
    /// order settles it. Sending starts with the note before the request
    /// (`unrecorded_until`, the latest time Clerk could apply it, is still
    /// ahead); a push claimed and waiting for its slot, or for a pause of the
    /// budget to end, is not in flight, and a newer intent still cancels
    /// it. A newer version queued behind an older one in flight is not in
    /// flight itself.
    pub fn in_flight(&self, now: NaiveDateTime) -> bool {
        self.claimed_until.is_some_and(|until| until >= now)
            && self
                .claimed_version
                .is_none_or(|claimed| claimed >= self.version)
            && self
                .unrecorded_until
                .is_some_and(|until| until >= now.and_utc().timestamp_millis())
    }
}

impl OutboxRow {
    /// Still to be sent. Retrying stops (`next_attempt_at` cleared) when the
    /// push landed, or after a refusal from Clerk that a retry cannot fix.
    pub fn is_pending(&self) -> bool {
        self.next_attempt_at.is_some()
    }

    /// Pending, or refused by Clerk for good: the push, not Clerk's state,
    /// is to settle the user's role.
    pub fn is_unsettled(&self) -> bool {
        self.is_pending() || self.last_error.is_some()
    }
}

/// Where a user's role stands with Clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Clerk has the role (or there was never anything to push).
    Synced,
    /// A push is queued or in flight.
    Pending,
    /// The last push failed; see `last_error` (`next_attempt_at` says whether
    /// it will be retried).
    Failing,
}

/// The sync state shown with a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub status: SyncStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl SyncState {
    pub fn of(row: Option<&OutboxRow>) -> Self {
        let Some(row) = row else {
            return Self {
                status: SyncStatus::Synced,
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
            };
        };
        let status = match (&row.last_error, row.next_attempt_at) {
            (Some(_), _) => SyncStatus::Failing,
            (None, Some(_)) => SyncStatus::Pending,
            (None, None) => SyncStatus::Synced,
        };
        Self {
            status,
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            next_attempt_at: row.next_attempt_at.map(|at| at.and_utc()),
        }
    }
}

/// A processed Svix message to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent {
    pub svix_id: String,
    pub event_type: String,
    pub user_id: Option<ClerkUserId>,
    pub outcome: &'static str,
    pub received_at: NaiveDateTime,
    /// Clerk's `updated_at` of the user state the message carried.
    pub clerk_updated_at: Option<i64>,
}

/// A processed Svix message as recorded.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct WebhookEventRow {
    pub svix_id: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub outcome: String,
    pub received_at: NaiveDateTime,
    pub clerk_updated_at: Option<i64>,
}

/// Which recorded messages a page holds, newest first.
#[derive(Debug, Clone, Default)]
pub struct WebhookEventFilter {
    pub user_id: Option<ClerkUserId>,
    pub event_type: Option<String>,
    pub outcome: Option<String>,
    /// Received at or after.
    pub since: Option<NaiveDateTime>,
    /// Received before.
    pub until: Option<NaiveDateTime>,
    /// Keyset cursor: the `(received_at, svix_id)` of the last message of
    /// the previous page.
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// Pushes waiting or failing, in the shared outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Queued or retrying.
    pub pending: i64,
    /// Whose last attempt failed (retrying, or given up on).
    pub failing: i64,
    /// When the oldest pending push was queued.
    pub oldest_pending: Option<NaiveDateTime>,
}

/// One drift audit run: where it stands, what it found by kind, and how
/// much of that it repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, AsChangeset)]
#[diesel(table_name = drift_audits, treat_none_as_null = true)]
pub struct DriftAuditRow {
    #[diesel(skip_update)]
    pub id: i64,
    #[diesel(skip_update)]
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub owner: String,
    /// The walk of Clerk's list: the last user of the last page done.
    pub after_user_id: Option<String>,
    /// The walk is done; live users it did not find are being looked up.
    pub walked: bool,
    pub after_local_id: Option<String>,
    pub checked: i64,
    pub found_missing_here: i64,
    pub found_role_differs: i64,
    pub found_outdated: i64,
    pub found_missing_in_clerk: i64,
    /// Of what was found, what was repaired.
    pub repaired: i64,
    pub error: Option<String>,
    /// `audit` (inside `serve`), or `report` or `fix` (`reconcile`).
    pub mode: String,
    /// Why the run ended waiting for an operator's confirmation, if it did.
    pub waiting: Option<String>,
}

/// The progress row: where to resume and the running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = backfill_progress, treat_none_as_null = true)]
pub struct Progress {
    #[diesel(skip_insertion)]
    pub id: i32,
    /// The last user of the last finished page: the next page starts after it.
    pub last_user_id: Option<String>,
    pub pages: i64,
    /// Users read from Clerk.
    pub seen: i64,
    /// Users new to our database.
    pub created: i64,
    /// Users already here whose profile (and maybe role) was refreshed.
    pub updated: i64,
    /// Users already here whose role changed.
    pub role_changes: i64,
    /// Pushes queued for users without a role in Clerk (`--write-defaults`).
    pub defaults_queued: i64,
    /// Pushes queued to keep our role (`--prefer db`).
    pub pushes_queued: i64,
    /// Users whose `public_metadata.role` holds a value we do not know.
    pub unknown_roles: i64,
    /// Users left alone: deleted here, or older than what we have.
    pub skipped: i64,
    pub started_at: NaiveDateTime,
}

/// A slot of the Clerk budget, as [`Queries::take_clerk_slot`] takes it:
/// µs by the database's clock until it starts (0 or less: at once), and
/// until the budget's pause ends (0 or less: none).
///
/// [`Queries::take_clerk_slot`]: super::Queries::take_clerk_slot
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct ClerkSlot {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub wait_us: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub paused_us: i64,
}

/// A push noted before it is sent ([`Outbox::note_before_sending`]): the
/// database's clock then (ms since the epoch), and µs until the Clerk
/// budget's pause ends (0 or less: none, the push may go).
///
/// [`Outbox::note_before_sending`]: super::Outbox::note_before_sending
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Noted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub now_ms: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub paused_us: i64,
}
