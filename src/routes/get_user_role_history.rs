//! `GET /api/admin/users/{userId}/role-history`: a user's audit rows.

use actix_web::{get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Admin;
use super::cursor::{self, one_page};
use super::dto::{RoleChangeResponse, RoleHistory, UserIdPath, not_found, page_limit};
use super::list_users::{DEFAULT_LIMIT, MAX_LIMIT};
use super::refusals::{AdminReadRefusals, MalformedQuery};
use crate::db::{DbError, Queries as _};
use crate::error::{ApiError, Problem};
use crate::with_conn;

// The bounds below are literals (utoipa takes no constants): keep them
// equal to the user list's.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// Get a user's role changes, newest first.
///
/// Also for a deleted user (whose deletion is the newest row, with
/// `newRole` `null`). Keyset pagination, like the user list: pass the
/// previous page's `nextCursor` as `cursor`.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(
        UserIdPath,
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "A page of audit rows, newest first", body = RoleHistory),
        (status = 422, description = "A limit outside 1..=100 (`/problems/invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user; a deleted user's history is kept (`/problems/user-not-found`)", body = Problem, content_type = "application/problem+json"),
        AdminReadRefusals,
        MalformedQuery,
    )
)]
#[get("/api/admin/users/{userId}/role-history")]
pub async fn get_user_role_history(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<UserIdPath>,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<RoleHistory>, ApiError> {
    let id = path.user_id()?;
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = cursor::ROLE_HISTORY.decode(query.cursor.as_deref())?;
    let rows = with_conn!(state.db, conn => {
        match conn.find_user(&id).await? {
            // Deleted users too: the audit outlives the user.
            Some(_) => {
                // One more than asked tells whether another page follows.
                let rows = conn.role_history(&id, before, limit + 1).await?;
                Ok::<_, DbError>(Some(rows))
            }
            _ => Ok(None),
        }
    })?
    .ok_or_else(not_found)?;
    let (rows, next_cursor) = one_page(rows, limit, |row| cursor::ROLE_HISTORY.encode(&row.id));
    let data = rows.into_iter().map(RoleChangeResponse::from).collect();
    Ok(web::Json(RoleHistory { data, next_cursor }))
}
