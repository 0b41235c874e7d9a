//! Liveness and readiness probes.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, Problem};

/// How long readiness waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok` while the process serves requests.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyStatus {
    /// `ready` when the database answers.
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    /// `running` (the push worker's heartbeat is fresh), or why role changes
    /// are waiting instead of reaching Clerk.
    #[serde(rename = "clerkPush")]
    pub clerk_push: &'static str,
}

/// Liveness: the process is up and serving requests.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The service is alive", body = HealthStatus))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

/// Readiness: the database is reachable and the push worker alive.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyStatus),
        (status = 503, description = "The database is unreachable, or the push worker has stopped going round its loop", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => {
            return Err(ApiError::Unavailable(
                "the database did not answer in time".into(),
            ));
        }
    }
    let clerk_push = match &state.push_worker {
        None => "waiting: CLERK_SECRET_KEY is not set",
        Some(worker) => match worker.stalled_for() {
            None => "running",
            Some(silent) => {
                return Err(ApiError::Unavailable(format!(
                    "the push worker has not gone round its loop for {} s",
                    silent.as_secs()
                )));
            }
        },
    };
    Ok(HttpResponse::Ok().json(ReadyStatus {
        status: "ready",
        database: match state.db.backend() {
            crate::db::Backend::Postgres => "postgres",
            crate::db::Backend::Sqlite => "sqlite",
        },
        clerk_push,
    }))
}
