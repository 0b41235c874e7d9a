//! Liveness and readiness probes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::db::Backend;
use crate::error::{ApiError, Problem, ProblemType};
use crate::jobs::clerk_instance::InstanceState;

/// How long readiness waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    pub status: Alive,
}

/// Always `ok` while the process serves requests.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Alive {
    Ok,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyStatus {
    pub status: Ready,
    /// Which database answered.
    pub database: Backend,
    #[serde(rename = "clerkPush")]
    pub clerk_push: PushWorker,
}

/// `ready` when the database answers and the push worker is alive.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    Ready,
}

/// Whether role changes reach Clerk.
#[derive(Debug, Serialize, ToSchema)]
pub enum PushWorker {
    /// The push worker's heartbeat is fresh.
    #[serde(rename = "running")]
    Running,
    /// No secret key: role changes wait instead of reaching Clerk.
    #[serde(rename = "waiting_for_secret_key")]
    NoSecretKey,
    /// Clerk has not confirmed the key's instance as the database's yet:
    /// role changes wait.
    #[serde(rename = "waiting_for_instance")]
    InstanceUnconfirmed,
    /// The key belongs to another Clerk instance than the database's: no
    /// role change is pushed.
    #[serde(rename = "other_instance")]
    OtherInstance,
}

/// Liveness: the process is up and serving requests.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The service is alive", body = HealthStatus))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: Alive::Ok })
}

/// Readiness: the database is reachable and the push worker alive.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyStatus),
        (status = 503, description = "The database is unreachable (`/problems/database-unavailable`) or did not answer in time, the push worker has stopped going round its loop, or the service is shutting down (`/problems/not-ready`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let clerk_push = readiness(&state).await?;
    Ok(HttpResponse::Ok().json(ReadyStatus {
        status: Ready::Ready,
        database: state.db.backend(),
        clerk_push,
    }))
}

/// What `/readyz` answers: whether pushes run or why they wait, or why the
/// service is not ready. Notes the answer in `clerk_role_sync_ready`, which
/// `/metrics` works out the same way at each scrape.
pub(super) async fn readiness(state: &AppState) -> Result<PushWorker, ApiError> {
    let ready = check_readiness(state).await;
    state.metrics.ready.set(i64::from(ready.is_ok()));
    ready
}

async fn check_readiness(state: &AppState) -> Result<PushWorker, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::typed(
            ProblemType::NotReady,
            "the service is shutting down",
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => {
            return Err(ApiError::typed(
                ProblemType::NotReady,
                "the database did not answer in time",
            ));
        }
    }
    match &state.push_worker {
        None => Ok(PushWorker::NoSecretKey),
        Some(worker) => match worker.stalled_for() {
            None => Ok(match state.clerk_instance.state() {
                InstanceState::Unconfirmed { .. } => PushWorker::InstanceUnconfirmed,
                InstanceState::Mismatch { .. } => PushWorker::OtherInstance,
                InstanceState::Confirmed(_) | InstanceState::NotConfigured { .. } => {
                    PushWorker::Running
                }
            }),
            Some(silent) => Err(ApiError::typed(
                ProblemType::NotReady,
                format!(
                    "the push worker has not gone round its loop for {} s",
                    silent.as_secs()
                ),
            )),
        },
    }
}
