//! The shapes of the user routes: a user and where its role stands with
//! Clerk, pages and lists of users, role changes asked for, the counts per
//! role, and the `{userId}` path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::rows::{OutboxRow, RoleStats, SyncState, SyncStatus, User, UserRow};
use crate::domain::{ClerkUserId, Role};
use crate::error::{ApiError, ProblemType};

/// A user, with where its role stands with Clerk.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(json!({
        "id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "imageUrl": "https://img.clerk.com/ada.png",
        "role": "INSTRUCTOR",
        "createdAt": "2026-09-01T08:30:00Z",
        "updatedAt": "2026-12-07T14:02:11Z",
        "sync": {"state": "pending", "attempts": 0, "lastError": null, "nextAttemptAt": "2026-12-07T14:02:11Z"}
})))]
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

impl From<SyncStatus> for SyncStateName {
    fn from(status: SyncStatus) -> Self {
        match status {
            SyncStatus::Synced => Self::Synced,
            SyncStatus::Pending => Self::Pending,
            SyncStatus::Failing => Self::Failing,
        }
    }
}

impl UserResponse {
    pub fn from_rows(user: UserRow, sync: Option<&OutboxRow>) -> Self {
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
                state: sync.status.into(),
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
#[schema(examples(json!({"role": "INSTRUCTOR"})))]
pub struct RoleRequest {
    /// One of STUDENT, INSTRUCTOR, ADMIN.
    #[schema(value_type = Role)]
    pub role: String,
}

/// `{"changes": [{"userId": …, "role": …}, …]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"changes": [
    {"userId": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", "role": "INSTRUCTOR"},
    {"userId": "user_2bVSt0H6z5aBdC9pPwHTgWeb1Re", "role": "STUDENT"}
]})))]
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

/// Live users per role.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(json!({"totalUsers": 1250, "adminCount": 3, "instructorCount": 47, "studentCount": 1200})))]
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
    value.parse().map_err(|_| {
        ApiError::typed(
            ProblemType::InvalidRole,
            "role must be one of STUDENT, INSTRUCTOR, ADMIN",
        )
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
    ApiError::typed(ProblemType::UserNotFound, "no such user")
}

impl From<crate::app::change_roles::AdminChangeError> for ApiError {
    fn from(error: crate::app::change_roles::AdminChangeError) -> Self {
        use crate::app::change_roles::AdminChangeError as E;
        match error {
            E::NotFound(id) => {
                ApiError::typed(ProblemType::UserNotFound, format!("no such user: {id}"))
            }
            E::LastAdmin => ApiError::typed(
                ProblemType::LastAdmin,
                "this would leave no admin: promote another user first",
            ),
            E::Db(error) => error.into(),
        }
    }
}
