//! `PATCH /api/admin/users/{userId}`: an admin sets one user's role.

use actix_web::{HttpRequest, patch, web};

use super::auth::Admin;
use super::body::{self, JSON_LIMIT};
use super::dto::{RoleRequest, UserIdPath, UserResponse, parse_role};
use super::refusals::{AdminWriteRefusals, UserNotFound};
use super::{AppState, apply_role_changes};
use crate::app::change_roles::RoleChange;
use crate::error::{ApiError, Problem};

/// Set a user's role.
///
/// Stores the role, an audit row and a queued push to Clerk in one
/// transaction and answers at once; the push follows right away and is
/// retried until Clerk has the role (see `sync`). Setting the role the user
/// already has changes nothing. Demoting the last admin is refused.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(UserIdPath),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The user as stored now", body = UserResponse),
        (status = 422, description = "Not one of the three roles (`/problems/invalid-role`; `allowedValues` lists them)", body = Problem, content_type = "application/problem+json"),
        AdminWriteRefusals,
        UserNotFound,
    )
)]
#[patch("/api/admin/users/{userId}")]
pub async fn update_user_role(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<UserIdPath>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<UserResponse>, ApiError> {
    let body: RoleRequest = body::json_object(&request, payload, JSON_LIMIT).await?;
    let change = RoleChange {
        user_id: path.user_id()?,
        role: parse_role(&body.role)?,
    };
    let mut users = apply_role_changes(&state, &admin, vec![change]).await?;
    users
        .pop()
        .map(web::Json)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a change returned no user")))
}
