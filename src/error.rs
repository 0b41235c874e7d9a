//! One error envelope for every status: RFC 9457 `application/problem+json`.
//!
//! Handlers return [`ApiError`]; infrastructure errors are mapped to it once,
//! here. Errors that actix produces on its own (unknown route, oversized
//! body, wrong method) are rewritten into the same envelope by
//! [`problem_for_bare_errors`]. Security refusals carry fixed messages, and
//! no internal error text ever reaches a client.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaFormat, Type};

use crate::db::DbError;
use crate::domain::Role;
pub use crate::problem_type::{ABOUT_BLANK, ProblemType};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(json!({
    "type": "/problems/last-admin",
    "title": "It would leave no admin",
    "status": 409,
    "detail": "this would leave no admin: promote another user first"
})))]
pub struct Problem {
    /// What kind of problem: `/problems/{kind}` (a URI reference under the
    /// service, which serves it as a short description) where a client may
    /// switch on it, `about:blank` where the status says it all.
    #[serde(rename = "type")]
    #[schema(schema_with = problem_type_schema)]
    pub kind: String,
    /// The kind's title (the HTTP status phrase for `about:blank`).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a human.
    pub detail: String,
    /// For `/problems/invalid-role`: the roles that would have been accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub allowed_values: Option<Vec<Role>>,
}

impl Problem {
    /// A problem whose status says it all.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: ABOUT_BLANK.into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            allowed_values: None,
        }
    }

    /// A problem of a kind a client may switch on.
    pub fn of(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.uri(),
            title: kind.title().into(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            allowed_values: (kind == ProblemType::InvalidRole).then(|| Role::ALL.to_vec()),
        }
    }
}

/// `type`'s schema: every kind's URI, and `about:blank`.
fn problem_type_schema() -> Object {
    let kinds = ProblemType::ALL
        .iter()
        .map(|kind| format!("`{}` ({})", kind.uri(), kind.title()))
        .collect::<Vec<_>>()
        .join(", ");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri-reference".into())))
        .enum_values(Some(
            ProblemType::ALL
                .iter()
                .map(|kind| kind.uri())
                .chain([ABOUT_BLANK.to_owned()]),
        ))
        .description(Some(format!(
            "One of {kinds}, or `about:blank` where the status says it all. Each \
             `/problems/…` is served by the service as a short description."
        )))
        .build()
}

/// Everything a handler can refuse or fail with. Each variant names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request could not be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or invalid credentials (fixed messages only).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: valid credentials without the right to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: nothing at this path.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, but not with this method; `allow` lists its methods.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed { allow: String },
    /// 408: the request body did not arrive within the body deadline.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 413: the body is larger than this endpoint accepts.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A problem a client may switch on: its kind decides the status.
    #[error("{detail}")]
    Typed { kind: ProblemType, detail: String },
    /// A typed problem with `Retry-After`: try again after that many seconds.
    #[error("{detail}")]
    RetryLater {
        kind: ProblemType,
        detail: String,
        after_secs: u64,
    },
    /// 500: a bug or an unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A problem of `kind`, with what went wrong this time.
    pub fn typed(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self::Typed {
            kind,
            detail: detail.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Typed { kind, .. } | Self::RetryLater { kind, .. } => kind.status(),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let status = self.status_code();
        let problem = match self {
            Self::Typed { kind, detail } | Self::RetryLater { kind, detail, .. } => {
                Problem::of(*kind, detail.as_str())
            }
            _ => Problem::new(status, self.to_string()),
        };
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        if let Self::RetryLater { after_secs, .. } = self {
            response.insert_header((header::RETRY_AFTER, after_secs.to_string()));
        }
        response.json(problem)
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(reason) => {
                tracing::warn!(reason, "database unavailable");
                Self::typed(
                    ProblemType::DatabaseUnavailable,
                    "the database is unavailable; retry shortly",
                )
            }
            error if error.is_timeout() => {
                tracing::warn!(%error, "a database statement timed out");
                Self::typed(
                    ProblemType::DatabaseUnavailable,
                    "the database is busy; retry shortly",
                )
            }
            other => Self::Internal(other.into()),
        }
    }
}

/// Rewrites error responses that did not come from [`ApiError`] (actix's own
/// 404, 405, 413 and the like) into problem documents, keeping their status
/// and headers.
pub fn problem_for_bare_errors<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let body = serde_json::to_vec(&Problem::new(status, bare_detail(status)))?;
    let (request, mut response) = response.into_parts();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let response = response.set_body(body).map_into_boxed_body();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, response).map_into_right_body(),
    ))
}

fn bare_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no resource at this path",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this path",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        StatusCode::REQUEST_TIMEOUT => "the request did not arrive in time",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the request body has an unsupported content type",
        status if status.is_client_error() => "the request could not be processed",
        _ => "internal error",
    }
}
