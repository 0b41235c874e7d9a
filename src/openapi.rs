//! The OpenAPI 3.1 document, generated from the handlers themselves.
//! `openapi.yaml` at the repository root is [`yaml`]'s output, and a test
//! fails when the two differ.

use actix_web::App;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt as _;

use crate::error::Problem;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clerk-role-sync",
        description = "Keeps each user's role (STUDENT, INSTRUCTOR, ADMIN) identical in our \
                       database and in Clerk's `public_metadata.role`, in both directions. \
                       Errors are RFC 9457 problem documents (`application/problem+json`).",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(Problem)),
    tags(
        (name = "health", description = "Liveness and readiness probes"),
        (name = "webhooks", description = "Clerk → DB: Svix-signed events from Clerk"),
    )
)]
struct ApiDoc;

/// The full document: the static parts above plus every registered route.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, document) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    document
}

/// The document as YAML, exactly as committed in `openapi.yaml`.
pub fn yaml() -> Result<String, serde_json::Error> {
    let document = document();
    document.to_yaml().map_err(serde::ser::Error::custom)
}
