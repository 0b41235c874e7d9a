//! `GET /api/admin/users/{userId}`: one user with its sync state.

use actix_web::{get, web};

use super::AppState;
use super::auth::Admin;
use super::dto::{UserResponse, not_found, parse_user_id};
use crate::db::{DbError, Queries as _};
use crate::error::{ApiError, Problem};
use crate::with_conn;

/// Get one user, with where its role stands with Clerk.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("userId" = String, Path, description = "Clerk user id", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC")),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an ADMIN", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user (or deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/api/admin/users/{userId}")]
pub async fn get_user(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<UserResponse>, ApiError> {
    let id = parse_user_id(&path)?;
    let found = with_conn!(state.db, conn => {
        Ok::<_, DbError>(conn.find_user_with_sync(&id).await?)
    })?;
    let (user, sync) = found
        .filter(|(user, _)| user.deleted_at.is_none())
        .ok_or_else(not_found)?;
    Ok(web::Json(UserResponse::from_rows(user, sync.as_ref())))
}
