//! The refusals several admin endpoints share, documented once: each type
//! here stands for a set of problem responses in `#[utoipa::path]`'s
//! `responses(...)`, beside the endpoint's own.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{IntoResponses, ToSchema as _};

use crate::error::Problem;

const NOT_ADMIN: (u16, &str) = (403, "The caller is not an ADMIN");
const UNAVAILABLE: (u16, &str) = (
    503,
    "The database is unavailable or busy (`/problems/database-unavailable`), admin \
     authentication is not configured (`/problems/auth-not-configured`), or Clerk's signing \
     keys cannot be fetched (`/problems/keys-unavailable`, with `Retry-After`)",
);
const NO_TOKEN: (u16, &str) = (
    401,
    "Missing, invalid or expired token, or its user is not known here \
     (`/problems/unknown-caller`)",
);

/// What every admin read may answer: no token, no admin, no database.
pub struct AdminReadRefusals;

impl IntoResponses for AdminReadRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems([NO_TOKEN, NOT_ADMIN, UNAVAILABLE])
    }
}

/// What every admin write may answer before and besides its own refusals:
/// the body's, the token's (the caller must also be a user here) and the
/// last-admin rule's.
pub struct AdminWriteRefusals;

impl IntoResponses for AdminWriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems([
            (400, "Malformed JSON, or a body that is not a JSON object"),
            NO_TOKEN,
            NOT_ADMIN,
            (408, "The body did not arrive within the body deadline"),
            (409, "It would leave no admin (`/problems/last-admin`)"),
            (413, "Body too large"),
            UNAVAILABLE,
        ])
    }
}

/// A `{userId}` that names no live user.
pub struct UserNotFound;

impl IntoResponses for UserNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems([(404, "No such user, or deleted (`/problems/user-not-found`)")])
    }
}

/// A query string or cursor that does not parse.
pub struct MalformedQuery;

impl IntoResponses for MalformedQuery {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems([(400, "Malformed query or cursor")])
    }
}

/// `application/problem+json` responses with these statuses and descriptions.
fn problems<const N: usize>(list: [(u16, &str); N]) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", content)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}
