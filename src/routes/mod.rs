//! HTTP handlers, one per file, each named by its OpenAPI operation id.

mod auth;
pub mod body;
mod bulk_update_user_roles;
mod cursor;
pub mod dto;
pub mod get_metrics;
mod get_problem_type;
mod get_role_stats;
mod get_sync_status;
mod get_user;
mod get_user_role_history;
pub mod head;
pub mod headers;
mod health;
mod list_users;
mod list_webhook_events;
pub mod observe;
mod receive_clerk_webhook;
mod refusals;
mod update_user_role;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_web::{HttpResponse, Resource, web};
use tokio::sync::Semaphore;
use utoipa::openapi::path::Paths;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::change_roles::{RoleChange, change_roles};
use crate::clerk::ClerkClient;
use crate::clerk::jwt::SessionVerifier;
use crate::db::Db;
use crate::error::ApiError;
use crate::jobs::WorkerLink;
use crate::jobs::clerk_instance::InstanceGate;
use crate::jobs::ingest::Ingest;
use crate::metrics::Metrics;
use crate::webhooks::svix::Verifier;
use crate::with_conn;

pub use auth::Admin;
pub use health::{HealthStatus, ReadyStatus};
pub use receive_clerk_webhook::{WEBHOOK_BODY_LIMIT, WebhookAck};

/// What every handler may use.
pub struct AppState {
    pub db: Db,
    /// `None` when no webhook secret is configured: the webhook answers 503.
    pub webhook_verifier: Option<Verifier>,
    /// `None` when neither `CLERK_JWT_KEY` nor `CLERK_SECRET_KEY` is set:
    /// the admin API answers 503.
    pub session_verifier: Option<SessionVerifier>,
    /// Clerk's Backend API; `None` without `CLERK_SECRET_KEY`.
    pub clerk: Option<ClerkClient>,
    /// The push worker; `None` when pushes wait for `CLERK_SECRET_KEY`.
    pub push_worker: Option<WorkerLink>,
    pub metrics: Arc<Metrics>,
    /// Longest time a request body may take to arrive.
    pub body_timeout: Duration,
    /// Webhook bodies that may be buffered at once (and so events that may
    /// wait for the ingest writer).
    pub webhook_bodies: Semaphore,
    /// The ingest writer, which applies verified webhook events in batches.
    pub ingest: Ingest,
    /// The race rule's clock-skew allowance, in milliseconds.
    pub clock_skew_allowance_ms: i64,
    /// Time between two drift audits; `None` when this replica does not
    /// audit (`RECONCILE_INTERVAL=0`, or no `CLERK_SECRET_KEY`).
    pub drift_audit_interval: Option<Duration>,
    /// `/metrics` is served on the main port (no `METRICS_BIND_ADDR`).
    pub metrics_on_main_port: bool,
    /// The Clerk instance the database is bound to, and whether the key's
    /// is confirmed as it (kept in memory: webhooks compare with it).
    pub clerk_instance: InstanceGate,
    /// Set once the service has been told to stop (SIGTERM): `/readyz`
    /// answers 503 from then on, while requests in flight drain.
    pub stopping: Arc<AtomicBool>,
}

/// Registers every documented route (used by the server and by the OpenAPI
/// generator alike, so the document cannot miss a route).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(get_metrics::get_metrics)
        .service(receive_clerk_webhook::receive_clerk_webhook)
        .service(bulk_update_user_roles::bulk_update_user_roles)
        .service(list_users::list_users)
        .service(get_user::get_user)
        .service(update_user_role::update_user_role)
        .service(get_user_role_history::get_user_role_history)
        .service(get_role_stats::get_role_stats)
        .service(list_webhook_events::list_webhook_events)
        .service(get_sync_status::get_sync_status)
        .service(get_problem_type::get_problem_type);
}

/// For each documented path, a resource to register after the real ones: a
/// method the path does not have answers 405 with the methods it does have in
/// `Allow`, rather than the 404 of a path that does not exist.
pub fn method_not_allowed(paths: &Paths) -> Vec<Resource> {
    paths
        .paths
        .iter()
        .map(|(path, item)| {
            let allow = [
                ("GET", item.get.is_some()),
                // Answered as GET (see `head`).
                ("HEAD", item.get.is_some() || item.head.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
                ("OPTIONS", item.options.is_some()),
                ("PATCH", item.patch.is_some()),
                ("TRACE", item.trace.is_some()),
            ]
            .into_iter()
            .filter_map(|(method, present)| present.then_some(method))
            .collect::<Vec<_>>()
            .join(", ");
            web::resource(path.as_str()).to(move || {
                let allow = allow.clone();
                async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
            })
        })
        .collect()
}

/// Applies an admin's changes in one transaction, then wakes the push worker.
async fn apply_role_changes(
    state: &AppState,
    admin: &Admin,
    changes: Vec<RoleChange>,
) -> Result<Vec<dto::UserResponse>, ApiError> {
    let rows = with_conn!(state.db, conn => change_roles(conn, &changes, &admin.id).await)?;
    if let Some(worker) = &state.push_worker {
        worker.wake();
    }
    Ok(rows
        .into_iter()
        .map(|(user, sync)| dto::UserResponse::from_rows(user, sync.as_ref()))
        .collect())
}

/// Query strings that do not parse are a 400 problem.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _| {
        ApiError::BadRequest(format!("invalid query string: {error}")).into()
    })
}
