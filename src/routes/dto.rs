//! The JSON shapes of the admin API (camelCase, timestamps in RFC 3339 UTC).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike as _, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::Outcome;
use crate::db::rows::{
    DriftAuditRow, OutboxSummary, RoleChangeRow, RoleStats, SyncRow, SyncState, SyncStatus, User,
    UserRow, WebhookEventRow,
};
use crate::domain::{ClerkUserId, Role, RoleSource};
use crate::error::ApiError;
use crate::sync::clerk_instance::InstanceState;

/// A user, with where its role stands with Clerk.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserResponse {
    /// Clerk user id.
    // The pattern is what `ClerkUserId::parse` accepts.
    #[schema(example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC")]
    pub id: String,
    #[schema(required = true)]
    pub email: Option<String>,
    #[schema(required = true)]
    pub first_name: Option<String>,
    #[schema(required = true)]
    pub last_name: Option<String>,
    #[schema(required = true)]
    pub image_url: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sync: SyncResponse,
}

/// Whether Clerk has the role yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    pub state: SyncStateName,
    /// Pushes tried for the latest role.
    pub attempts: i32,
    /// Why the last push failed, when it did.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next push is due, while one is.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncStateName {
    Synced,
    Pending,
    Failing,
}

impl UserResponse {
    pub fn from_rows(user: UserRow, sync: Option<&SyncRow>) -> Self {
        let user = User::from(user);
        let sync = SyncState::of(sync);
        Self {
            id: user.id.to_string(),
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            image_url: user.image_url,
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
            sync: SyncResponse {
                state: match sync.status {
                    SyncStatus::Synced => SyncStateName::Synced,
                    SyncStatus::Pending => SyncStateName::Pending,
                    SyncStatus::Failing => SyncStateName::Failing,
                },
                attempts: sync.attempts,
                last_error: sync.last_error,
                next_attempt_at: sync.next_attempt_at,
            },
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    pub data: Vec<UserResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The users a bulk change touched, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub data: Vec<UserResponse>,
}

/// `{"role": "ADMIN"}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// One of STUDENT, INSTRUCTOR, ADMIN.
    #[schema(value_type = Role)]
    pub role: String,
}

/// `{"changes": [{"userId": …, "role": …}, …]}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkRoleRequest {
    /// 1 to 500 changes, each user at most once.
    #[schema(min_items = 1, max_items = 500)]
    pub changes: Vec<BulkRoleChange>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkRoleChange {
    /// Clerk user id.
    // The pattern is what `ClerkUserId::parse` accepts.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{1,128}$",
        example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"
    )]
    pub user_id: String,
    #[schema(value_type = Role)]
    pub role: String,
}

/// One audit row.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleChangeResponse {
    pub id: i64,
    pub user_id: String,
    /// `null` when the user was created with `newRole` (or came back
    /// from a provisional deletion).
    #[schema(required = true)]
    pub old_role: Option<Role>,
    /// `null` when the user was deleted.
    #[schema(required = true)]
    pub new_role: Option<Role>,
    pub source: RoleSource,
    /// The admin's Clerk id, the Svix message id, or `cli`.
    #[schema(required = true)]
    pub actor: Option<String>,
    pub changed_at: DateTime<Utc>,
}

impl From<RoleChangeRow> for RoleChangeResponse {
    fn from(row: RoleChangeRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id.into(),
            old_role: row.old_role,
            new_role: row.new_role,
            source: row.source,
            actor: row.actor,
            changed_at: row.changed_at.and_utc(),
        }
    }
}

/// A page of audit rows, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleHistory {
    pub data: Vec<RoleChangeResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Live users per role.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatsResponse {
    pub total_users: i64,
    pub admin_count: i64,
    pub instructor_count: i64,
    pub student_count: i64,
}

impl From<RoleStats> for RoleStatsResponse {
    fn from(stats: RoleStats) -> Self {
        Self {
            total_users: stats.total(),
            admin_count: stats.admins,
            instructor_count: stats.instructors,
            student_count: stats.students,
        }
    }
}

/// A role from a request: exactly one of the three names, else 422 listing them.
pub fn parse_role(value: &str) -> Result<Role, ApiError> {
    value.parse().map_err(|_| ApiError::Unprocessable {
        detail: "role must be one of STUDENT, INSTRUCTOR, ADMIN".into(),
        allowed_values: Some(Role::ALL.iter().map(|r| r.as_str().to_owned()).collect()),
    })
}

/// The `{userId}` of `/api/admin/users/{userId}…`, extracted and documented
/// once for every route under it.
#[derive(Deserialize, IntoParams)]
#[into_params(names("userId"), parameter_in = Path)]
pub struct UserIdPath(
    /// Clerk user id
    #[param(
        pattern = "^[A-Za-z0-9_-]{1,128}$",
        example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"
    )]
    String,
);

impl UserIdPath {
    /// The id; anything that cannot be a Clerk id is no user here (404).
    pub fn user_id(&self) -> Result<ClerkUserId, ApiError> {
        ClerkUserId::parse(self.0.as_str()).map_err(|_| not_found())
    }
}

pub fn not_found() -> ApiError {
    ApiError::NotFound("no such user".into())
}

/// The earliest and latest time a cursor may name: what both backends can
/// store. A crafted cursor outside is refused, not sent to the database.
const CURSOR_YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Keyset cursors of the user list: the `(created_at, id)` of the last user
/// of a page, opaque to clients.
pub fn encode_cursor(created_at: NaiveDateTime, id: &str) -> String {
    let micros = created_at.and_utc().timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"))
}

/// Reads a user-list cursor; `None` for an absent or empty one (the first
/// page, as frontends send `cursor=`).
pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<(NaiveDateTime, String)>, ApiError> {
    let Some(text) = cursor_text(cursor)? else {
        return Ok(None);
    };
    let (micros, id) = text.split_once(':').ok_or_else(invalid_cursor)?;
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|at| CURSOR_YEARS.contains(&at.year()))
        .ok_or_else(invalid_cursor)?;
    let id = ClerkUserId::parse(id).map_err(|_| invalid_cursor())?;
    Ok(Some((created_at.naive_utc(), id.to_string())))
}

/// Keyset cursors of a role history: the id of the last row of a page.
pub fn encode_history_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("h:{id}"))
}

/// Reads a role-history cursor; `None` for an absent or empty one.
pub fn decode_history_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = cursor_text(cursor)? else {
        return Ok(None);
    };
    text.strip_prefix("h:")
        .and_then(|id| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .map(Some)
        .ok_or_else(invalid_cursor)
}

fn cursor_text(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    match cursor.map(str::trim) {
        None | Some("") => Ok(None),
        Some(cursor) => URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(invalid_cursor),
    }
}

fn invalid_cursor() -> ApiError {
    ApiError::BadRequest("invalid cursor".into())
}

/// Cuts `rows`, read with one more than `limit` asked for, to one page;
/// the cursor of its last row when another page follows.
pub fn one_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl FnOnce(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = more.then(|| rows.last().map(cursor)).flatten();
    (rows, next_cursor)
}

/// A page size from a query: 1 to `max`, `default` when absent.
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::Unprocessable {
            detail: format!("limit must be between 1 and {max}"),
            allowed_values: None,
        })
    }
}

impl From<crate::app::change_roles::AdminChangeError> for ApiError {
    fn from(error: crate::app::change_roles::AdminChangeError) -> Self {
        use crate::app::change_roles::AdminChangeError as E;
        match error {
            E::NotFound(id) => ApiError::NotFound(format!("no such user: {id}")),
            E::LastAdmin => {
                ApiError::Conflict("this would leave no admin: promote another user first".into())
            }
            E::Db(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456)
            .expect("valid")
            .naive_utc();
        let cursor = encode_cursor(at, "user_1");
        assert_eq!(
            decode_cursor(Some(&cursor)).ok(),
            Some(Some((at, "user_1".into())))
        );
        for junk in ["!!", "bm90aGluZw", "MTI6dXNlciAx"] {
            assert!(decode_cursor(Some(junk)).is_err(), "{junk}");
        }
    }

    #[test]
    fn an_empty_cursor_is_the_first_page() {
        assert_eq!(decode_cursor(Some("")).ok(), Some(None));
        assert_eq!(decode_cursor(None).ok(), Some(None));
        assert_eq!(decode_history_cursor(Some(" ")).ok(), Some(None));
    }

    #[test]
    fn cursors_outside_what_the_database_stores_are_refused() {
        // Year -5000, and the largest microsecond count.
        for micros in [-219_915_000_000_000_000_i64, i64::MAX, i64::MIN] {
            let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}:user_1"));
            assert!(decode_cursor(Some(&cursor)).is_err(), "{micros}");
        }
    }

    #[test]
    fn history_cursors_round_trip_and_refuse_junk() {
        assert_eq!(
            decode_history_cursor(Some(&encode_history_cursor(42))).ok(),
            Some(Some(42))
        );
        for junk in ["!!", "aDow", "aDot", "MTI6dXNlciAx"] {
            assert!(decode_history_cursor(Some(junk)).is_err(), "{junk}");
        }
    }
}

/// A processed Svix message, as recorded (never its body).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventResponse {
    #[schema(example = "msg_2bVSt0H6z5aBdC9pPwHTgWeb1Re")]
    pub svix_id: String,
    /// Clerk's event type.
    #[serde(rename = "type")]
    #[schema(example = "user.updated")]
    pub event_type: String,
    /// The user it was about (`null`: not about a user we keep).
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// Clerk's `updated_at` of the user state it carried (`null` for
    /// deletions and other types).
    #[schema(required = true)]
    pub clerk_updated_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    #[schema(value_type = Outcome)]
    pub outcome: String,
}

impl From<WebhookEventRow> for WebhookEventResponse {
    fn from(row: WebhookEventRow) -> Self {
        Self {
            svix_id: row.svix_id,
            event_type: row.event_type,
            user_id: row.user_id,
            clerk_updated_at: row
                .clerk_updated_at
                .and_then(DateTime::from_timestamp_millis),
            received_at: row.received_at.and_utc(),
            outcome: row.outcome,
        }
    }
}

/// A page of processed Svix messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventPage {
    pub data: Vec<WebhookEventResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Longest Svix message id a cursor may carry (Svix's are 31 characters;
/// the webhook refuses ids over 256).
const MAX_SVIX_ID_LEN: usize = 256;

/// Keyset cursors of the webhook event list: the `(received_at, svix_id)`
/// of the last message of a page.
pub fn encode_event_cursor(received_at: NaiveDateTime, svix_id: &str) -> String {
    let micros = received_at.and_utc().timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("w:{micros}:{svix_id}"))
}

/// Reads a webhook-event cursor; `None` for an absent or empty one.
pub fn decode_event_cursor(
    cursor: Option<&str>,
) -> Result<Option<(NaiveDateTime, String)>, ApiError> {
    let Some(text) = cursor_text(cursor)? else {
        return Ok(None);
    };
    let (micros, svix_id) = text
        .strip_prefix("w:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(invalid_cursor)?;
    let received_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|at| CURSOR_YEARS.contains(&at.year()))
        .ok_or_else(invalid_cursor)?;
    let valid_id =
        !svix_id.is_empty() && svix_id.len() <= MAX_SVIX_ID_LEN && !svix_id.contains('\0');
    if !valid_id {
        return Err(invalid_cursor());
    }
    Ok(Some((received_at.naive_utc(), svix_id.to_owned())))
}

/// Where synchronisation stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusResponse {
    /// No push is pending or failing, the last finished drift audit (if
    /// one ran) left no drift unrepaired and waits for no confirmation, no
    /// run stopped on an error, and the Clerk instance is not unconfirmed
    /// or another: as far as the service can tell, both sides agree.
    pub in_sync: bool,
    pub outbox: OutboxResponse,
    /// The oldest 50 pushes pending or failing.
    pub unsettled_pushes: Vec<UnsettledPush>,
    /// The newest webhook message processed (`null`: none kept).
    #[schema(required = true)]
    pub last_webhook: Option<WebhookEventResponse>,
    pub drift_audit: DriftAuditStatus,
    pub clerk_instance: ClerkInstanceStatus,
}

impl SyncStatusResponse {
    pub fn new(
        outbox: OutboxSummary,
        unsettled_pushes: Vec<UnsettledPush>,
        last_webhook: Option<WebhookEventResponse>,
        drift_audit: DriftAuditStatus,
        clerk_instance: ClerkInstanceStatus,
    ) -> Self {
        let audit_clean = drift_audit.last.as_ref().is_none_or(|run| {
            run.found.total() == run.repaired && run.waiting_for_confirmation.is_none()
        }) && drift_audit
            .running
            .as_ref()
            .is_none_or(|run| run.error.is_none());
        let instance_known = matches!(
            clerk_instance.state,
            ClerkInstanceState::Confirmed | ClerkInstanceState::NotConfigured
        );
        Self {
            in_sync: outbox.pending == 0 && outbox.failing == 0 && audit_clean && instance_known,
            outbox: OutboxResponse {
                pending: outbox.pending,
                failing: outbox.failing,
                oldest_pending_at: outbox.oldest_pending.map(|at| at.and_utc()),
            },
            unsettled_pushes,
            last_webhook,
            drift_audit,
            clerk_instance,
        }
    }
}

/// The Clerk instance the database is bound to, and the key's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkInstanceStatus {
    pub state: ClerkInstanceState,
    /// The instance the database is bound to (`ins_…`; `null`: not bound
    /// yet).
    #[schema(required = true)]
    pub bound_id: Option<String>,
    /// The bound instance's `development` or `production`.
    #[schema(required = true)]
    pub environment_type: Option<String>,
    /// When the database was bound to it.
    #[schema(required = true)]
    pub bound_at: Option<DateTime<Utc>>,
    /// The instance of `CLERK_SECRET_KEY`, when it is not the bound one.
    #[schema(required = true)]
    pub current_id: Option<String>,
}

/// Whether the instance of `CLERK_SECRET_KEY` is the database's:
/// `confirmed` (pushes and the drift audit run), `unconfirmed` (Clerk has
/// not answered yet: they wait), `mismatch` (the key belongs to another
/// instance, or the unbound database's users are not in it: they stay
/// stopped), `not_configured` (no `CLERK_SECRET_KEY`: pushes wait for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClerkInstanceState {
    Confirmed,
    Unconfirmed,
    Mismatch,
    NotConfigured,
}

impl From<InstanceState> for ClerkInstanceStatus {
    fn from(state: InstanceState) -> Self {
        let (name, current_id) = match &state {
            InstanceState::Confirmed(_) => (ClerkInstanceState::Confirmed, None),
            InstanceState::Unconfirmed { .. } => (ClerkInstanceState::Unconfirmed, None),
            InstanceState::NotConfigured { .. } => (ClerkInstanceState::NotConfigured, None),
            InstanceState::Mismatch { current, .. } => {
                (ClerkInstanceState::Mismatch, Some(current.id.clone()))
            }
        };
        let bound = state.bound();
        Self {
            state: name,
            bound_id: bound.map(|bound| bound.instance_id.clone()),
            environment_type: bound.map(|bound| bound.environment_type.clone()),
            bound_at: bound.map(|bound| bound.bound_at.and_utc()),
            current_id,
        }
    }
}

/// Pushes to Clerk not landed yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxResponse {
    /// Queued or retrying.
    pub pending: i64,
    /// Whose last attempt failed (retrying, or given up on).
    pub failing: i64,
    /// When the oldest pending push was queued.
    #[schema(required = true)]
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// One push pending or failing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnsettledPush {
    pub user_id: String,
    /// The role to push.
    pub desired_role: Role,
    pub state: SyncStateName,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next attempt is due (`null`: given up on; a new change
    /// queues it again).
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub queued_at: Option<DateTime<Utc>>,
}

impl From<SyncRow> for UnsettledPush {
    fn from(row: SyncRow) -> Self {
        let state = SyncState::of(Some(&row));
        Self {
            user_id: row.user_id.to_string(),
            desired_role: row.desired_role,
            state: match state.status {
                SyncStatus::Synced => SyncStateName::Synced,
                SyncStatus::Pending => SyncStateName::Pending,
                SyncStatus::Failing => SyncStateName::Failing,
            },
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: state.next_attempt_at,
            queued_at: row.queued_at.map(|at| at.and_utc()),
        }
    }
}

/// The drift audit: whether this replica runs it, and its runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftAuditStatus {
    /// This replica audits (`RECONCILE_INTERVAL` is not 0 and
    /// `CLERK_SECRET_KEY` is set).
    pub enabled: bool,
    /// Seconds between two runs, when enabled.
    #[schema(required = true)]
    pub interval_seconds: Option<u64>,
    /// Who walks Clerk's users now (a replica's audit, or a backfill), if
    /// anyone.
    #[schema(required = true)]
    pub walking: Option<String>,
    /// The run not finished yet (walking now, or stopped and to resume).
    #[schema(required = true)]
    pub running: Option<DriftAuditRun>,
    /// The newest finished run.
    #[schema(required = true)]
    pub last: Option<DriftAuditRun>,
}

impl DriftAuditStatus {
    /// `held`: for a `last` run waiting for confirmation, how many changes
    /// it held back and the first of them.
    pub fn new(
        interval: Option<std::time::Duration>,
        running: Option<DriftAuditRow>,
        last: Option<DriftAuditRow>,
        walking: Option<(String, NaiveDateTime)>,
        held: Option<(i64, Vec<(ClerkUserId, String)>)>,
    ) -> Self {
        let mut last = last.map(DriftAuditRun::from);
        if let Some(waiting) = last
            .as_mut()
            .and_then(|last| last.waiting_for_confirmation.as_mut())
            && let Some((changes, users)) = held
        {
            waiting.changes = changes;
            waiting.users = users
                .into_iter()
                .map(|(user_id, kind)| HeldChange {
                    user_id: user_id.into(),
                    kind,
                })
                .collect();
        }
        Self {
            enabled: interval.is_some(),
            interval_seconds: interval.map(|interval| interval.as_secs()),
            walking: walking.map(|(owner, _)| owner),
            running: running.map(DriftAuditRun::from),
            last,
        }
    }
}

/// What a run would have deleted or demoted past its budget
/// (`RECONCILE_MAX_DELETIONS`), waiting for `clerk-role-sync reconcile
/// --fix --max-deletions N`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingConfirmation {
    /// Why nothing was made.
    pub reason: String,
    /// Deletions and ADMIN demotions held back.
    pub changes: i64,
    /// The first 50 of them, by user id.
    pub users: Vec<HeldChange>,
}

/// One change held back.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldChange {
    pub user_id: String,
    /// `missing_in_clerk` (a deletion) or `role_differs` (an ADMIN demotion).
    pub kind: String,
}

/// One drift audit run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftAuditRun {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The replica that last worked on it.
    pub owner: String,
    /// Users compared with Clerk.
    pub checked: i64,
    pub found: DriftCounts,
    /// Of what was found, what was repaired.
    pub repaired: i64,
    /// Why it last stopped before its end, if it did.
    #[schema(required = true)]
    pub error: Option<String>,
    /// `audit` (inside `serve`), `report` or `fix` (`reconcile`).
    pub mode: String,
    /// It ended making none of the deletions and ADMIN demotions it found,
    /// past its budget: what waits for an operator (`null`: nothing).
    #[schema(required = true)]
    pub waiting_for_confirmation: Option<AwaitingConfirmation>,
}

impl From<DriftAuditRow> for DriftAuditRun {
    fn from(row: DriftAuditRow) -> Self {
        Self {
            id: row.id,
            started_at: row.started_at.and_utc(),
            finished_at: row.finished_at.map(|at| at.and_utc()),
            owner: row.owner,
            checked: row.checked,
            found: DriftCounts {
                missing_here: row.found_missing_here,
                role_differs: row.found_role_differs,
                outdated: row.found_outdated,
                missing_in_clerk: row.found_missing_in_clerk,
            },
            repaired: row.repaired,
            error: row.error,
            mode: row.mode,
            waiting_for_confirmation: row.waiting.map(|reason| AwaitingConfirmation {
                reason,
                changes: 0,
                users: Vec::new(),
            }),
        }
    }
}

/// Drift found, by kind.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftCounts {
    /// In Clerk, not here (its `user.created` was lost): brought in.
    pub missing_here: i64,
    /// Another role in Clerk, no push pending (a dashboard edit's webhook
    /// was lost): settled by the race rule.
    pub role_differs: i64,
    /// A newer Clerk state, same role (a profile change was lost): applied.
    pub outdated: i64,
    /// Live here, gone from Clerk (its `user.deleted` was lost): deleted
    /// (provisionally, and within the run's budget).
    pub missing_in_clerk: i64,
}

impl DriftCounts {
    pub fn total(&self) -> i64 {
        self.missing_here + self.role_differs + self.outdated + self.missing_in_clerk
    }
}
