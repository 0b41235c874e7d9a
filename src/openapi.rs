//! The OpenAPI 3.1 document, generated from the handlers themselves.
//! `openapi.yaml` at the repository root is [`yaml`]'s output, and a test
//! fails when the two differ.

use actix_web::App;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
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
        (url = "/", description = "The service this document is served from"),
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "admin", description = "For the admin panel: a Clerk session token of a user who is ADMIN here"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "problems", description = "What each kind of problem (a problem document's `type`) means"),
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
        for operation in operations(openapi) {
            operation.security.get_or_insert_with(Vec::new);
        }
    }
}

/// Names every operation in lowerCamelCase (`update_user_role` becomes
/// `updateUserRole`), as generated clients expect, while each handler keeps
/// its Rust name.
struct CamelCaseOperationIds;

impl Modify for CamelCaseOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            if let Some(id) = operation.operation_id.as_mut() {
                *id = lower_camel_case(id);
            }
        }
    }
}

fn lower_camel_case(snake: &str) -> String {
    let mut words = snake.split('_');
    let first = words.next().unwrap_or_default().to_owned();
    words.fold(first, |mut id, word| {
        let mut chars = word.chars();
        if let Some(head) = chars.next() {
            id.extend(head.to_uppercase());
            id.push_str(chars.as_str());
        }
        id
    })
}

/// Declares the response headers clients read: `X-Request-Id` on every
/// answer, `WWW-Authenticate` on every 401, and `Retry-After` on the 503s
/// that may carry it (Clerk's signing keys unavailable, too many webhooks
/// at once).
struct ResponseHeaders;

impl Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let declared = [
            (
                "RequestId",
                "The request's id: the caller's `X-Request-Id` when it is sane, else one made \
                 up; the service's log lines for the request carry it",
            ),
            (
                "WwwAuthenticate",
                "`Bearer`: the scheme the admin API asks for",
            ),
            (
                "RetryAfter",
                "Seconds to wait before trying again: sent when Clerk's signing keys are \
                 unavailable (`/problems/keys-unavailable`) or too many webhooks arrive at once \
                 (`/problems/webhooks-busy`)",
            ),
        ];
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in declared {
            let header = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(description))
                .build();
            components.headers.insert(name.into(), RefOr::T(header));
        }
        let refer = |name: &str| RefOr::Ref(Ref::new(format!("#/components/headers/{name}")));
        for operation in operations(openapi) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let headers = &mut response.headers;
                headers.insert("X-Request-Id".into(), refer("RequestId"));
                match status.as_str() {
                    "401" => {
                        headers.insert("WWW-Authenticate".into(), refer("WwwAuthenticate"));
                    }
                    "503" => {
                        headers.insert("Retry-After".into(), refer("RetryAfter"));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
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
    CamelCaseOperationIds.modify(&mut document);
    ResponseHeaders.modify(&mut document);
    document
}

/// The document as YAML, exactly as committed in `openapi.yaml`.
pub fn yaml() -> Result<String, serde_json::Error> {
    let document = document();
    document.to_yaml().map_err(serde::ser::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::lower_camel_case;

    #[test]
    fn operation_ids_read_in_lower_camel_case() {
        assert_eq!(lower_camel_case("update_user_role"), "updateUserRole");
        assert_eq!(lower_camel_case("healthz"), "healthz");
        assert_eq!(
            lower_camel_case("get_user_role_history"),
            "getUserRoleHistory"
        );
    }
}
