//! A small client for Clerk's Backend API: the calls this service makes.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::ClerkUser;
use crate::domain::{ClerkUserId, Role};
use crate::secret::Secret;

/// Talks to `CLERK_API_URL` with `CLERK_SECRET_KEY`, pinned to one API version.
#[derive(Clone)]
pub struct ClerkClient {
    http: reqwest::Client,
    base: Url,
    secret: Secret,
    api_version: String,
}

/// Why a call to Clerk did not succeed, sorted by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// 429: slow down; retry after the given delay (when Clerk named one).
    #[error("rate limited by Clerk (429)")]
    RateLimited { retry_after: Option<Duration> },
    /// No answer (a timeout or a connection failure): retry later. The
    /// request may or may not have taken effect.
    #[error("{0}")]
    Unavailable(String),
    /// 5xx: retry later.
    #[error("Clerk answered {status}: {message}")]
    ServerError { status: u16, message: String },
    /// Any other 4xx: retrying the same request cannot help.
    #[error("Clerk refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// A 2xx whose body is not what Clerk documents.
    #[error("unexpected answer from Clerk: {0}")]
    Malformed(String),
}

impl ClerkError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Unavailable(_)
                | Self::ServerError { .. }
                | Self::Malformed(_)
        )
    }

    /// Whether the request may have taken effect in Clerk: no answer came,
    /// or a success whose body we could not read. An error Clerk answered
    /// with changed nothing.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Malformed(_))
    }
}

/// Clerk's error body: `{"errors":[{"message","long_message","code"}],
/// "clerk_trace_id"}`. The long message and the trace id are what Clerk's
/// support asks for, so both are kept in the error.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
    #[serde(default)]
    clerk_trace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    long_message: Option<String>,
}

impl ErrorBody {
    /// `code: message (long message) [trace …]`, each part when present.
    fn describe(self) -> Option<String> {
        let entry = self.errors.into_iter().next()?;
        let mut text = format!("{}: {}", entry.code, entry.message);
        if let Some(long) = entry.long_message.filter(|long| !long.is_empty()) {
            text.push_str(&format!(" ({long})"));
        }
        if let Some(trace) = self.clerk_trace_id.filter(|trace| !trace.is_empty()) {
            text.push_str(&format!(" [clerk_trace_id {trace}]"));
        }
        Some(text)
    }
}

/// Clerk's JSON Web Key Set.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One RSA signing key of the set.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub n: String,
    #[serde(default)]
    pub e: String,
}

/// The Clerk instance a secret key belongs to (`GET /v1/instance`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClerkInstance {
    /// `ins_…`.
    pub id: String,
    /// `development` or `production`.
    pub environment_type: String,
}

/// Where Clerk's Backend API is and how to call it.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub api_url: &'a Url,
    pub secret_key: &'a Secret,
    /// The `Clerk-API-Version` date every request is pinned to.
    pub api_version: &'a str,
    /// Longest time one request may take, connecting included.
    pub timeout: Duration,
    pub user_agent: &'a str,
}

impl ClerkClient {
    /// A client for one instance. It fails only when no HTTP client can be
    /// built on this machine (its TLS backend cannot start).
    pub fn new(connection: Connection<'_>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(connection.timeout)
            .connect_timeout(connection.timeout)
            .user_agent(connection.user_agent)
            .build()?;
        Ok(Self {
            http,
            base: connection.api_url.clone(),
            secret: connection.secret_key.clone(),
            api_version: connection.api_version.to_owned(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ClerkError> {
        self.base
            .join(path)
            .map_err(|e| ClerkError::Malformed(format!("bad URL {path}: {e}")))
    }

    /// Sets `public_metadata.role`, leaving every other metadata key as it
    /// is (Clerk deep-merges the patch). Returns the user as Clerk now has it.
    /// The request gives up after `within`.
    pub async fn set_role(
        &self,
        id: &ClerkUserId,
        role: Role,
        within: std::time::Duration,
    ) -> Result<ClerkUser, ClerkError> {
        let url = self.url(&format!("v1/users/{id}/metadata"))?;
        let request = self
            .http
            .patch(url)
            .timeout(within)
            .json(&json!({ "public_metadata": { "role": role.as_str() } }));
        about(id, self.send(request).await?)
    }

    /// A user as Clerk has it now; `None` when Clerk does not know it.
    pub async fn get_user(&self, id: &ClerkUserId) -> Result<Option<ClerkUser>, ClerkError> {
        let url = self.url(&format!("v1/users/{id}"))?;
        match self.send(self.http.get(url)).await {
            Ok(user) => about(id, user).map(Some),
            Err(ClerkError::Refused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One page of users, oldest first, after the user `starting_after`
    /// (a cursor, never an offset: deep pages cost Clerk the same).
    pub async fn list_users(
        &self,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Vec<ClerkUser>, ClerkError> {
        let mut url = self.url("v1/users")?;
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("order_by", "created_at");
        if let Some(after) = starting_after {
            url.query_pairs_mut().append_pair("starting_after", after);
        }
        self.send(self.http.get(url)).await
    }

    /// How many users the instance has.
    pub async fn user_count(&self) -> Result<u64, ClerkError> {
        #[derive(Deserialize)]
        struct Count {
            total_count: u64,
        }
        let url = self.url("v1/users/count")?;
        let count: Count = self.send(self.http.get(url)).await?;
        Ok(count.total_count)
    }

    /// The instance this client's secret key belongs to.
    pub async fn get_instance(&self) -> Result<ClerkInstance, ClerkError> {
        let url = self.url("v1/instance")?;
        let instance: ClerkInstance = self.send(self.http.get(url)).await?;
        if instance.id.is_empty() {
            return Err(ClerkError::Malformed("the instance has no id".into()));
        }
        Ok(instance)
    }

    /// The instance's signing keys for session tokens.
    pub async fn jwks(&self) -> Result<Jwks, ClerkError> {
        let url = self.url("v1/jwks")?;
        self.send(self.http.get(url)).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClerkError> {
        let response = request
            .header(AUTHORIZATION, format!("Bearer {}", self.secret.expose()))
            .header("Clerk-API-Version", &self.api_version)
            .send()
            .await
            .map_err(|e| ClerkError::Unavailable(transport_error(&e)))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<T>()
                .await
                .map_err(|e| ClerkError::Malformed(e.to_string()));
        }
        let retry_after = retry_after(response.headers());
        let message = response
            .json::<ErrorBody>()
            .await
            .ok()
            .and_then(ErrorBody::describe)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ClerkError::RateLimited { retry_after },
            status if status.is_server_error() => ClerkError::ServerError {
                status: status.as_u16(),
                message,
            },
            status => ClerkError::Refused {
                status: status.as_u16(),
                message,
            },
        })
    }
}

/// `user`, when it is the user `id` that was asked for: an answer about
/// anyone else is malformed, never applied to `id`.
fn about(id: &ClerkUserId, user: ClerkUser) -> Result<ClerkUser, ClerkError> {
    if user.id == id.as_str() {
        Ok(user)
    } else {
        Err(ClerkError::Malformed(format!(
            "asked for user {id}, Clerk answered about {}",
            user.id
        )))
    }
}

/// A transport failure, described without the URL (which is ours, but long).
fn transport_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "Clerk did not answer in time".into()
    } else if error.is_connect() {
        "could not connect to Clerk".into()
    } else {
        "the request to Clerk failed".into()
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn clerk_errors_keep_the_long_message_and_the_trace_id() {
        let body: ErrorBody = serde_json::from_value(serde_json::json!({
            "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "User not found"}],
            "clerk_trace_id": "abc123"
        }))
        .expect("an error body");
        assert_eq!(
            body.describe().as_deref(),
            Some("resource_not_found: not found (User not found) [clerk_trace_id abc123]")
        );
        let bare: ErrorBody =
            serde_json::from_value(serde_json::json!({"errors": [{"code": "x", "message": "y"}]}))
                .expect("an error body");
        assert_eq!(bare.describe().as_deref(), Some("x: y"));
    }

    #[test]
    fn an_answer_about_another_user_is_malformed_and_never_applied() {
        let asked = ClerkUserId::parse("user_asked").expect("an id");
        let answer = |id: &str| -> ClerkUser {
            serde_json::from_value(serde_json::json!({"id": id, "updated_at": 1})).expect("a user")
        };
        assert_eq!(
            about(&asked, answer("user_asked"))
                .expect("the same user")
                .id,
            "user_asked"
        );
        let error = about(&asked, answer("user_other")).expect_err("another user");
        assert!(matches!(error, ClerkError::Malformed(_)), "{error:?}");
        assert!(
            error.may_have_applied(),
            "a push whose answer is unreadable is judged again"
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(ClerkError::RateLimited { retry_after: None }.is_retryable());
        assert!(ClerkError::Unavailable("timed out".into()).is_retryable());
        let server_error = ClerkError::ServerError {
            status: 503,
            message: "down".into(),
        };
        assert!(server_error.is_retryable());
        assert_eq!(server_error.to_string(), "Clerk answered 503: down");
        assert!(
            !ClerkError::Refused {
                status: 404,
                message: String::new()
            }
            .is_retryable()
        );
    }

    #[test]
    fn only_a_missing_or_unreadable_answer_may_have_applied() {
        assert!(ClerkError::Unavailable("timed out".into()).may_have_applied());
        assert!(ClerkError::Malformed("not JSON".into()).may_have_applied());
        for answered in [
            ClerkError::RateLimited { retry_after: None },
            ClerkError::ServerError {
                status: 500,
                message: String::new(),
            },
            ClerkError::Refused {
                status: 422,
                message: String::new(),
            },
        ] {
            assert!(!answered.may_have_applied(), "{answered}");
        }
    }
}
