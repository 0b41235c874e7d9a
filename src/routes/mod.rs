//! HTTP handlers, one per file, each named by its OpenAPI operation id.

mod health;
mod receive_clerk_webhook;

use actix_web::web;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::db::Db;
use crate::error::ApiError;
use crate::webhooks::svix::Verifier;

pub use health::{HealthStatus, ReadyStatus};
pub use receive_clerk_webhook::{WEBHOOK_BODY_LIMIT, WebhookAck};

/// What every handler may use.
pub struct AppState {
    pub db: Db,
    /// `None` when no webhook secret is configured: the webhook answers 503.
    pub webhook_verifier: Option<Verifier>,
}

/// Registers every documented route (used by the server and by the OpenAPI
/// generator alike, so the document cannot miss a route).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(receive_clerk_webhook::receive_clerk_webhook);
}

/// Turns actix's JSON, path and query extraction failures into problems.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _| {
            use actix_web::error::JsonPayloadError as E;
            match error {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => {
                    ApiError::PayloadTooLarge { limit }.into()
                }
                E::ContentType => {
                    ApiError::BadRequest("expected a body of type application/json".into()).into()
                }
                E::Deserialize(error) => {
                    ApiError::BadRequest(format!("malformed JSON body: {error}")).into()
                }
                _ => ApiError::BadRequest("the request body could not be read".into()).into(),
            }
        })
}

/// Query strings that do not parse are a 400 problem.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _| {
        ApiError::BadRequest(format!("invalid query string: {error}")).into()
    })
}
