//! `PATCH /api/admin/users/{userId}`: an admin sets one user's role.

use actix_web::{HttpRequest, patch, web};

use super::auth::Admin;
use super::body::{self, JSON_LIMIT};
use super::dto::{RoleRequest, UserResponse, parse_role, parse_user_id};
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
    params(("userId" = String, Path, description = "Clerk user id", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC")),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The user as stored now", body = UserResponse),
        (status = 400, description = "Malformed JSON, or a body that is not a JSON object", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token, or an unknown user", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an ADMIN", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user (or deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body deadline", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not one of the three roles (the problem lists them)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/api/admin/users/{userId}")]
pub async fn update_user_role(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<UserResponse>, ApiError> {
    let body: RoleRequest = body::json_object(&request, payload, JSON_LIMIT).await?;
    let change = RoleChange {
        user_id: parse_user_id(&path)?,
        role: parse_role(&body.role)?,
    };
    let mut users = apply_role_changes(&state, &admin, vec![change]).await?;
    users
        .pop()
        .map(web::Json)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a change returned no user")))
}
