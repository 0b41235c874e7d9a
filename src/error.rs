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

use crate::db::DbError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Always `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// For a refused role: the values that would have been accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Vec<String>>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            allowed_values: None,
        }
    }
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
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, but not with this method; `allow` lists its methods.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed { allow: String },
    /// 408: the request body did not arrive within the body deadline.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 409: the change would break an invariant.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than this endpoint accepts.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 422: well-formed, but a value is outside what is allowed.
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        allowed_values: Option<Vec<String>>,
    },
    /// 503: a dependency (the database, a secret) is missing right now.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: try again after that many seconds.
    #[error("{detail}")]
    RetryLater { detail: String, after_secs: u64 },
    /// 500: a bug or an unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
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
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::RetryLater { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let status = self.status_code();
        let mut problem = Problem::new(status, self.to_string());
        if let Self::Unprocessable { allowed_values, .. } = self {
            problem.allowed_values.clone_from(allowed_values);
        }
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
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            error if error.is_timeout() => {
                tracing::warn!(%error, "a database statement timed out");
                Self::Unavailable("the database is busy; retry shortly".into())
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
