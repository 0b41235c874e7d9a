//! `POST /api/admin/users/roles`: an admin sets several roles at once.

use std::collections::HashSet;

use actix_web::{HttpRequest, post, web};

use super::auth::Admin;
use super::body::{self, JSON_LIMIT};
use super::dto::{BulkRoleRequest, UserList, parse_role};
use super::refusals::AdminWriteRefusals;
use super::{AppState, apply_role_changes};
use crate::app::change_roles::RoleChange;
use crate::domain::ClerkUserId;
use crate::error::{ApiError, Problem, ProblemType};

/// Most changes one request may carry.
pub const MAX_BULK_CHANGES: usize = 500;

/// Set several users' roles, all or nothing.
///
/// Every entry is validated first; then all are applied in one transaction.
/// One bad entry, an unknown user, or a result with no admin left changes
/// nothing at all.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = BulkRoleRequest,
    responses(
        (status = 200, description = "The users as stored now, in the order asked", body = UserList),
        (status = 404, description = "A user does not exist, or was deleted (`/problems/user-not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An entry's role is not one of the three (`/problems/invalid-role`) or its user id cannot be a Clerk id (`/problems/invalid-user-id`), a user appears twice (`/problems/duplicate-user`), or there are no or too many changes (`/problems/change-count`)", body = Problem, content_type = "application/problem+json"),
        AdminWriteRefusals,
    )
)]
#[post("/api/admin/users/roles")]
pub async fn bulk_update_user_roles(
    admin: Admin,
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<UserList>, ApiError> {
    let body: BulkRoleRequest = body::json_object(&request, payload, JSON_LIMIT).await?;
    if body.changes.is_empty() || body.changes.len() > MAX_BULK_CHANGES {
        return Err(ApiError::typed(
            ProblemType::ChangeCount,
            format!("changes must hold 1 to {MAX_BULK_CHANGES} entries"),
        ));
    }
    let mut seen = HashSet::new();
    let mut changes = Vec::with_capacity(body.changes.len());
    for (index, entry) in body.changes.iter().enumerate() {
        let user_id = ClerkUserId::parse(entry.user_id.as_str()).map_err(|_| {
            ApiError::typed(
                ProblemType::InvalidUserId,
                format!("changes[{index}].userId is not a Clerk user id"),
            )
        })?;
        let role = parse_role(&entry.role).map_err(|_| {
            ApiError::typed(
                ProblemType::InvalidRole,
                format!("changes[{index}].role must be one of STUDENT, INSTRUCTOR, ADMIN"),
            )
        })?;
        if !seen.insert(user_id.clone()) {
            return Err(ApiError::typed(
                ProblemType::DuplicateUser,
                format!("changes[{index}]: user {user_id} appears more than once"),
            ));
        }
        changes.push(RoleChange { user_id, role });
    }
    let data = apply_role_changes(&state, &admin, changes).await?;
    Ok(web::Json(UserList { data }))
}
