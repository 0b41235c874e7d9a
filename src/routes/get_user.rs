//! `GET /api/admin/users/{userId}`: one user with its sync state.

use actix_web::{get, web};

use super::AppState;
use super::auth::Admin;
use super::dto::{UserIdPath, UserResponse, not_found};
use super::refusals::{AdminReadRefusals, UserNotFound};
use crate::db::{DbError, Queries as _};
use crate::error::ApiError;
use crate::with_conn;

/// Get one user, with where its role stands with Clerk.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(UserIdPath),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        AdminReadRefusals,
        UserNotFound,
    )
)]
#[get("/api/admin/users/{userId}")]
pub async fn get_user(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<UserIdPath>,
) -> Result<web::Json<UserResponse>, ApiError> {
    let id = path.user_id()?;
    let found = with_conn!(state.db, conn => {
        Ok::<_, DbError>(conn.find_user_with_outbox_row(&id).await?)
    })?;
    let (user, sync) = found
        .filter(|(user, _)| user.deleted_at.is_none())
        .ok_or_else(not_found)?;
    Ok(web::Json(UserResponse::from_rows(user, sync.as_ref())))
}
