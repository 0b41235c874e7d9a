//! `GET /api/admin/users/{userId}/role-history`: a user's audit rows.

use actix_web::{get, web};

use super::AppState;
use super::auth::Admin;
use super::dto::{RoleChangeResponse, RoleHistory, not_found, parse_user_id};
use crate::db::{DbError, Store as _};
use crate::error::{ApiError, Problem};
use crate::with_conn;

/// Get a user's role changes, newest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("userId" = String, Path, description = "Clerk user id", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC")),
    responses(
        (status = 200, description = "The audit rows, newest first", body = RoleHistory),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an ADMIN", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user (or deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/api/admin/users/{userId}/role-history")]
pub async fn get_user_role_history(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<RoleHistory>, ApiError> {
    let id = parse_user_id(&path)?;
    let rows = with_conn!(state.db, conn => {
        match conn.find_user(id.as_str()).await? {
            Some(user) if user.deleted_at.is_none() => {
                Ok::<_, DbError>(Some(conn.role_history(id.as_str()).await?))
            }
            _ => Ok(None),
        }
    })?
    .ok_or_else(not_found)?;
    let data = rows
        .into_iter()
        .map(RoleChangeResponse::try_from)
        .collect::<Result<_, _>>()?;
    Ok(web::Json(RoleHistory { data }))
}
