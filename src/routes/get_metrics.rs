//! `GET /metrics`: Prometheus metrics.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::Utc;

use super::AppState;
use super::health::readiness;
use crate::db::{DbError, Queries as _};
use crate::error::{ApiError, Problem};
use crate::with_conn;

/// How long a scrape waits for the database's queue figures.
const QUEUE_STATS_WAIT: Duration = Duration::from_millis(500);

/// Marks the app that serves only `/metrics` (on `METRICS_BIND_ADDR`).
pub struct MetricsListener;

/// Prometheus metrics (text exposition format).
///
/// Webhooks by type and outcome, refusals by reason, push attempts by
/// result, pending pushes and the age of the oldest, and HTTP requests by
/// route and status with latency histograms.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Metrics in Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, description = "Served on METRICS_BIND_ADDR instead", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/metrics")]
pub async fn get_metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // With METRICS_BIND_ADDR set, the public port does not have them.
    if !state.metrics_on_main_port && request.app_data::<web::Data<MetricsListener>>().is_none() {
        return Err(ApiError::NotFound("no resource at this path".into()));
    }
    state
        .metrics
        .clerk_instance_confirmed
        .set(i64::from(state.clerk_instance.is_confirmed()));
    let now = Utc::now().naive_utc();
    // The queue gauges are read fresh; without a database (or while it is
    // slow to answer) they keep their last values, and the scrape is served.
    let queue = tokio::time::timeout(QUEUE_STATS_WAIT, async {
        with_conn!(state.db, conn => Ok::<_, DbError>(conn.push_queue_stats().await?))
    });
    // `clerk_role_sync_ready` is worked out meanwhile, as `/readyz` does. The
    // scrape waits for it no longer than for the queue: a check still
    // waiting for the database then finishes on its own (within `/readyz`'s
    // timeout) and the next scrape shows it.
    let ready = {
        let state = state.clone();
        actix_web::rt::spawn(async move { readiness(&state).await.is_ok() })
    };
    let (queue, _ready) = tokio::join!(queue, tokio::time::timeout(QUEUE_STATS_WAIT, ready));
    if let Ok(Ok((pending, oldest))) = queue {
        state.metrics.push_pending.set(pending);
        let age = oldest.map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0));
        state.metrics.push_oldest_pending.set(age);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
