//! `POST /api/webhooks/clerk`: Clerk's Svix-signed user events.

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::body::{self, BodyError};
use crate::app::Outcome;
use crate::app::webhook_event;
use crate::clerk::ClerkClient;
use crate::domain::ClerkUserId;
use crate::error::{ApiError, Problem, ProblemType};
use crate::webhooks::events::{self, ClerkEvent};
use crate::webhooks::svix::{SignedHeaders, VerifyError};
use crate::with_conn;

/// Largest webhook body accepted (Clerk's user objects are a few KiB).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// What the service did with a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// What happened: `applied`, `unchanged`, `unknown_role`, `stale`,
    /// `conflict`, `deleted`, `user_deleted`, `missing_id`, `ignored` or
    /// `duplicate`.
    pub outcome: Outcome,
}

/// Receive a Clerk webhook (`user.created`, `user.updated`, `user.deleted`).
///
/// The raw body is verified against the Svix signature before anything in it
/// is read. Each Svix message id is applied once; a repeat answers 200 and
/// changes nothing. Any other event type is recorded and acknowledged. An
/// event whose envelope names another Clerk instance (`instance_id`) than
/// the one the database is bound to is refused (422) and never applied.
#[utoipa::path(
    tag = "webhooks",
    params(
        ("svix-id" = String, Header, description = "Message id (or `webhook-id`)", pattern = "^[!-~]{1,256}$"),
        ("svix-timestamp" = String, Header, description = "Unix seconds (or `webhook-timestamp`)", pattern = "^[0-9]{1,12}$"),
        ("svix-signature" = String, Header, description = "Space-separated `v1,<base64>` signatures (or `webhook-signature`)", pattern = "^[ -~]*[!-~][ -~]*$"),
    ),
    request_body(content = Object, description = "A Clerk event, exactly as Clerk sent it", content_type = "application/json",
        example = json!({
            "type": "user.updated",
            "object": "event",
            "instance_id": "ins_2NNEqL2nrIRdJ194ndJqAHwEfxC",
            "timestamp": 1765116131000_i64,
            "data": {
                "id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
                "object": "user",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "image_url": "https://img.clerk.com/ada.png",
                "primary_email_address_id": "idn_2NNEqOZ9bQ3pM3m6vT6nT8Cq1Yd",
                "email_addresses": [{"id": "idn_2NNEqOZ9bQ3pM3m6vT6nT8Cq1Yd", "email_address": "ada@example.com"}],
                "public_metadata": {"role": "INSTRUCTOR"},
                "created_at": 1756715400000_i64,
                "updated_at": 1765116130512_i64
            }
        })),
    responses(
        (status = 200, description = "Applied, or acknowledged without change", body = WebhookAck),
        (status = 400, description = "Missing or malformed Svix headers, or a verified body that is not a Clerk event", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Signature does not match, or timestamp outside ±5 minutes", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body deadline", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A verified event from another Clerk instance (its `instance_id`) than the one the database is bound to: not applied (`/problems/wrong-instance`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No webhook secret configured (`/problems/webhook-not-configured`), too many webhooks at once (`/problems/webhooks-busy`, with `Retry-After`), or the database failed (`/problems/database-unavailable`); Svix retries", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/api/webhooks/clerk")]
pub async fn receive_clerk_webhook(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    let Some(verifier) = state.webhook_verifier.as_ref() else {
        metrics.webhook_refused("not_configured");
        return Err(ApiError::typed(
            ProblemType::WebhookNotConfigured,
            "the webhook is not configured (CLERK_WEBHOOK_SECRET)",
        ));
    };
    let headers = SignedHeaders::from_lookup(|name| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    })
    .map_err(|error| {
        metrics.webhook_refused("missing_header");
        refusal(error)
    })?;
    // Bodies are buffered whole (the signature covers them), so how many are
    // buffered at once is bounded, and with it the memory they take.
    let Ok(_buffering) = state.webhook_bodies.try_acquire() else {
        metrics.webhook_refused("busy");
        return Err(ApiError::RetryLater {
            kind: ProblemType::WebhooksBusy,
            detail: "too many webhooks are being received at once; retry shortly".into(),
            after_secs: 1,
        });
    };
    let body = body::read(payload, WEBHOOK_BODY_LIMIT)
        .await
        .map_err(|error| {
            metrics.webhook_refused(match error {
                BodyError::TooLarge { .. } => "too_large",
                BodyError::TimedOut => "body_timeout",
                BodyError::Broken => "malformed_body",
            });
            ApiError::from(error)
        })?;
    verifier
        .verify(&headers, &body, chrono::Utc::now().timestamp())
        .map_err(|error| {
            metrics.webhook_refused(match error {
                VerifyError::MissingHeader(_) | VerifyError::MalformedHeader(_) => "missing_header",
                VerifyError::TimestampTooOld | VerifyError::TimestampInFuture => "timestamp",
                VerifyError::InvalidSignature => "bad_signature",
            });
            refusal(error)
        })?;

    let message = events::parse_message(&body).map_err(|error| {
        metrics.webhook_refused("malformed_body");
        ApiError::BadRequest(error.to_string())
    })?;
    if let Some(sender) = message.instance_id.as_deref()
        && let Some(bound) = state.clerk_instance.other_than_bound(sender)
    {
        metrics.webhook_refused("wrong_instance");
        let sender = shown_id(sender);
        tracing::warn!(
            svix.id = headers.id,
            event.instance = sender,
            instance.bound = %bound,
            "webhook from another Clerk instance refused, not applied"
        );
        return Err(ApiError::typed(
            ProblemType::WrongInstance,
            format!(
                "the event comes from Clerk instance {sender}, but this service's database is \
                 bound to Clerk instance {bound}: it was not applied"
            ),
        ));
    }
    let event = message.event;
    // Applied with the next batch; answered once that batch has committed.
    let (event, outcome) = state
        .ingest
        .apply(headers.id, event)
        .await
        .map_err(|error| {
            metrics.webhook_refused("database");
            tracing::error!(svix.id = headers.id, %error, "webhook not stored; Svix will retry");
            ApiError::typed(
                ProblemType::DatabaseUnavailable,
                "the event could not be stored; retry later",
            )
        })?;

    metrics.webhook(event.kind(), outcome);
    // A conflict, or a user deleted here (perhaps provisionally, by the
    // drift audit): only Clerk's state read now settles it. Clerk is read
    // into the database only once its instance is confirmed as the
    // database's.
    if matches!(outcome, Outcome::Conflict | Outcome::UserDeleted)
        && state.clerk_instance.is_confirmed()
        && let (ClerkEvent::UserUpserted { id, .. }, Some(clerk)) = (&event, &state.clerk)
    {
        reread(&state, clerk, id, headers.id).await;
    }

    tracing::info!(
        svix.id = headers.id,
        event.kind = event.kind(),
        outcome = outcome.as_str(),
        "webhook processed"
    );
    Ok(HttpResponse::Ok().json(WebhookAck { outcome }))
}

/// Settles a conflict, or brings back a user deleted provisionally, by
/// asking Clerk for the user's current state. Best effort: the message is
/// already recorded, and a failure here leaves the user as it was (the
/// drift audit repairs what remains).
async fn reread(state: &AppState, clerk: &ClerkClient, id: &ClerkUserId, svix_id: &str) {
    let user = match clerk.get_user(id).await {
        Ok(Some(user)) => user,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(user.id = %id, %error, "could not re-read a conflicting user from Clerk");
            return;
        }
    };
    let allowance = state.clock_skew_allowance_ms;
    let applied = with_conn!(state.db, conn => webhook_event::apply_reread(conn, id, &user, svix_id, allowance).await);
    match applied {
        Ok(outcome) => {
            tracing::info!(user.id = %id, outcome = outcome.as_str(), "user re-read from Clerk")
        }
        Err(error) => tracing::warn!(user.id = %id, %error, "could not apply a re-read user"),
    }
}

/// A Clerk id as sent, when it looks like one (`ins_…`: short, letters,
/// digits and `_`), for the log and the answer; else a placeholder.
fn shown_id(id: &str) -> &str {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { id } else { "(an unreadable id)" }
}

/// Fixed answers for refused messages: nothing of the request is echoed.
fn refusal(error: VerifyError) -> ApiError {
    tracing::warn!(reason = %error, "webhook refused");
    match error {
        VerifyError::MissingHeader(_) | VerifyError::MalformedHeader(_) => {
            ApiError::BadRequest("missing or malformed Svix signature headers".into())
        }
        VerifyError::TimestampTooOld | VerifyError::TimestampInFuture => {
            ApiError::Unauthorized("the webhook timestamp is outside the allowed window")
        }
        VerifyError::InvalidSignature => {
            ApiError::Unauthorized("the webhook signature does not match")
        }
    }
}
