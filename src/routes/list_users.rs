//! `GET /api/admin/users`: a page of users for the admin panel.

use actix_web::{get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Admin;
use super::cursor::{self, one_page};
use super::dto::{UserPage, UserResponse, page_limit, parse_role};
use super::refusals::{AdminReadRefusals, MalformedQuery};
use crate::db::Queries as _;
use crate::db::rows::{UserFilter, search_pattern};
use crate::domain::Role;
use crate::error::{ApiError, Problem, ProblemType};
use crate::with_conn;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
const MAX_SEARCH_LEN: usize = 200;

// The bounds in the `#[param]`s below are literals (utoipa takes no
// constants): keep them equal to MAX_SEARCH_LEN and MAX_LIMIT.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only users with this role (STUDENT, INSTRUCTOR or ADMIN).
    // Parsed by the handler, so that another value is a 422 listing the three.
    #[param(value_type = Option<Role>)]
    role: Option<String>,
    /// Case-insensitive, literal substring of the email, first, last or full name.
    #[param(max_length = 200, pattern = "^[^\\x00]*$")]
    search: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// List users, newest first.
///
/// Keyset pagination: pass the previous page's `nextCursor` as `cursor`.
/// Deleted users are not listed.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of users", body = UserPage),
        (status = 422, description = "A role outside the three (`/problems/invalid-role`), a limit outside 1..=100, or a search over 200 characters or with a NUL character (`/problems/invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        AdminReadRefusals,
        MalformedQuery,
    )
)]
#[get("/api/admin/users")]
pub async fn list_users(
    _admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<UserPage>, ApiError> {
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_LEN) {
        return Err(ApiError::typed(
            ProblemType::InvalidParameter,
            format!("search must be at most {MAX_SEARCH_LEN} characters"),
        ));
    }
    // PostgreSQL text cannot hold NUL, so there the query would fail (a 500);
    // refused alike on both backends.
    if search.is_some_and(|s| s.contains('\0')) {
        return Err(ApiError::typed(
            ProblemType::InvalidParameter,
            "search must not contain NUL characters",
        ));
    }
    let filter = UserFilter {
        role: query.role.as_deref().map(parse_role).transpose()?,
        search_pattern: search.map(search_pattern),
        after: cursor::USERS.decode(query.cursor.as_deref())?,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let rows = with_conn!(state.db, conn => {
        Ok::<_, crate::db::DbError>(conn.list_users(&filter).await?)
    })?;
    let (rows, next_cursor) = one_page(rows, limit, |(user, _)| {
        cursor::USERS.encode(&(user.created_at, user.id.to_string()))
    });
    let data = rows
        .into_iter()
        .map(|(user, sync)| UserResponse::from_rows(user, sync.as_ref()))
        .collect();
    Ok(web::Json(UserPage { data, next_cursor }))
}
