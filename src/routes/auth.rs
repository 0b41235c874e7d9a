//! Who is calling: an admin, proven by a Clerk session token.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::AppState;
use crate::clerk::jwt::AuthError;
use crate::db::{DbError, Queries as _};
use crate::domain::{ClerkUserId, Role};
use crate::error::{ApiError, ProblemType};
use crate::with_conn;

/// The caller, verified: a live user with role ADMIN in our database.
/// As the first parameter of a handler, it refuses before the body is read.
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: ClerkUserId,
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.to_str().map(str::to_owned));
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            let verifier = state.session_verifier.as_ref().ok_or_else(|| {
                ApiError::typed(
                    ProblemType::AuthNotConfigured,
                    "admin authentication is not configured (CLERK_JWT_KEY or CLERK_SECRET_KEY)",
                )
            })?;
            let token = match header {
                None => return Err(refusal(AuthError::Missing)),
                Some(Err(_)) => return Err(refusal(AuthError::Invalid)),
                Some(Ok(value)) => bearer_token(&value).ok_or(refusal(AuthError::Invalid))?,
            };
            let session = verifier.verify(&token).await.map_err(refusal)?;
            let user = with_conn!(state.db, conn => {
                Ok::<_, DbError>(conn.find_user(&session.user_id).await?)
            })?
            .filter(|user| user.deleted_at.is_none())
            .ok_or_else(|| {
                ApiError::typed(
                    ProblemType::UnknownCaller,
                    "the token's user is not known here",
                )
            })?;
            if user.role != Role::Admin {
                return Err(ApiError::Forbidden("this needs the ADMIN role"));
            }
            Ok(Admin {
                id: session.user_id,
            })
        })
    }
}

/// `Bearer <token>`, the scheme in any case.
fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

fn refusal(error: AuthError) -> ApiError {
    match error {
        AuthError::Missing => ApiError::Unauthorized("missing bearer token"),
        AuthError::Expired => ApiError::Unauthorized("the session token has expired"),
        AuthError::Invalid => ApiError::Unauthorized("invalid session token"),
        AuthError::KeysUnavailable { retry_after } => ApiError::RetryLater {
            kind: ProblemType::KeysUnavailable,
            detail: "session tokens cannot be verified right now: Clerk's signing keys are \
                     unavailable"
                .into(),
            after_secs: retry_after.as_secs().max(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_in_any_case() {
        assert_eq!(bearer_token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(bearer_token("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
