//! `GET /api/admin/sync/status`: whether both sides agree, at a glance.

use actix_web::{get, web};

use super::AppState;
use super::auth::Admin;
use super::dto::{DriftAuditStatus, SyncStatusResponse, UnsettledPush, WebhookEventResponse};
use super::refusals::AdminReadRefusals;
use crate::db::{DbError, Queries as _};
use crate::error::ApiError;
use crate::with_conn;

/// Pushes listed at most (the oldest first); `outbox` counts them all.
pub const MAX_UNSETTLED: i64 = 50;
/// Changes waiting for confirmation listed at most (by user id).
pub const MAX_HELD: i64 = 50;

/// Show where synchronisation stands.
///
/// The outbox (pushes to Clerk pending or failing, the oldest 50 with their
/// last error), the last webhook message processed, the drift audit:
/// whether this replica runs it, the run in progress if any and the last
/// finished run with what it found and repaired, and what it waits for an
/// operator to confirm (deletions and ADMIN demotions past its budget, the
/// first 50 users concerned); and the Clerk instance the database is bound
/// to: whether this replica's key is confirmed as belonging to it.
/// `inSync` sums it up.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Where synchronisation stands", body = SyncStatusResponse),
        AdminReadRefusals,
    )
)]
#[get("/api/admin/sync/status")]
pub async fn get_sync_status(
    _admin: Admin,
    state: web::Data<AppState>,
) -> Result<web::Json<SyncStatusResponse>, ApiError> {
    let (outbox, pushes, last_webhook, running, last, holder) = with_conn!(state.db, conn => {
        Ok::<_, DbError>((
            conn.outbox_summary().await?,
            conn.unsettled_pushes(MAX_UNSETTLED).await?,
            conn.last_webhook_event().await?,
            conn.unfinished_drift_audit().await?,
            conn.last_drift_audit(false).await?,
            conn.walk_lease_holder().await?,
        ))
    })?;
    let waiting = match last.as_ref().filter(|run| run.waiting.is_some()) {
        Some(run) => Some(with_conn!(state.db, conn => {
            Ok::<_, DbError>((
                conn.count_held_drift_changes(run.id).await?,
                conn.held_drift_changes(run.id, None, MAX_HELD).await?,
            ))
        })?),
        None => None,
    };
    Ok(web::Json(SyncStatusResponse::new(
        outbox,
        pushes.into_iter().map(UnsettledPush::from).collect(),
        last_webhook.map(WebhookEventResponse::from),
        DriftAuditStatus::new(state.drift_audit_interval, running, last, holder, waiting),
        state.clerk_instance.state().into(),
    )))
}
