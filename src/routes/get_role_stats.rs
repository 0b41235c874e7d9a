//! `GET /api/admin/stats`: live users per role, for the dashboard.

use actix_web::{get, web};

use super::AppState;
use super::auth::Admin;
use super::dto::RoleStatsResponse;
use super::refusals::AdminReadRefusals;
use crate::db::Queries as _;
use crate::error::ApiError;
use crate::with_conn;

/// Count live users per role.
///
/// Read from counters kept in the same transaction as every role change:
/// as fast at a million users as at a thousand.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The counts", body = RoleStatsResponse),
        AdminReadRefusals,
    )
)]
#[get("/api/admin/stats")]
pub async fn get_role_stats(
    _admin: Admin,
    state: web::Data<AppState>,
) -> Result<web::Json<RoleStatsResponse>, ApiError> {
    let stats =
        with_conn!(state.db, conn => Ok::<_, crate::db::DbError>(conn.role_stats().await?))?;
    Ok(web::Json(stats.into()))
}
