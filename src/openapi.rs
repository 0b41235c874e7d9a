//! The OpenAPI 3.1 document, generated from the handlers themselves.
//! `openapi.yaml` at the repository root is [`yaml`]'s output, and a test
//! fails when the two differ.

use actix_web::App;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
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
    servers(
        (url = "http://127.0.0.1:8080", description = "The default BIND_ADDR; a deployment serves the same paths at its own origin"),
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "admin", description = "For the admin panel: a Clerk session token of a user who is ADMIN here"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "webhooks", description = "Clerk → DB: Svix-signed events from Clerk"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` scheme the admin paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A Clerk session token (RS256)"))
                    .build(),
            ),
        );
    }
}

/// Marks every operation that asks for no token with `security: []`, so
/// that tools need not guess whether a missing requirement means "public".
struct PublicOperations;

impl Modify for PublicOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security.get_or_insert_with(Vec::new);
            }
        }
    }
}

/// The full document: the static parts above plus every registered route.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut document) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    // After the routes: their operations exist only now.
    PublicOperations.modify(&mut document);
    document
}

/// The document as YAML, exactly as committed in `openapi.yaml`.
pub fn yaml() -> Result<String, serde_json::Error> {
    let document = document();
    document.to_yaml().map_err(serde::ser::Error::custom)
}
