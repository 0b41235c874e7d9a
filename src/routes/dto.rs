//! The JSON shapes of the admin API (camelCase, timestamps in RFC 3339 UTC).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike as _, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::rows::{RoleChangeRow, RoleStats, SyncRow, SyncState, SyncStatus, User, UserRow};
use crate::domain::{ClerkUserId, Role, RoleSource};
use crate::error::ApiError;

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
    /// `null` when the user was created with `newRole`.
    #[schema(required = true)]
    pub old_role: Option<Role>,
    pub new_role: Role,
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
