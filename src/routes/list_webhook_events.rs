//! `GET /api/admin/webhook-events`: what the service did with each Svix
//! message it processed, for operators asking "did my dashboard change
//! arrive?".

use actix_web::{get, web};
use chrono::{DateTime, Datelike as _, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Admin;
use super::cursor::{self, one_page};
use super::dto::{WebhookEventPage, WebhookEventResponse, page_limit};
use super::refusals::{AdminReadRefusals, MalformedQuery};
use crate::app::Outcome;
use crate::db::Queries as _;
use crate::db::rows::WebhookEventFilter;
use crate::domain::ClerkUserId;
use crate::error::{ApiError, Problem, ProblemType};
use crate::with_conn;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// Times a filter may name: what both backends store.
const TIME_YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;
/// Longest event type a filter may name (Clerk's are under 40 characters).
const MAX_TYPE_LEN: usize = 100;

// The bounds in the `#[param]`s below are literals (utoipa takes no
// constants): keep them equal to MAX_TYPE_LEN and MAX_LIMIT.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    /// Only messages about this Clerk user.
    #[param(example = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC")]
    user_id: Option<String>,
    /// Only messages of this Clerk event type (`user.created`, ...).
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 100, pattern = "^[^\\x00]*$")]
    event_type: Option<String>,
    /// Only messages with this outcome.
    // Parsed by the handler, so that another value is a 422 listing them.
    #[param(value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// Received at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Received before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// List processed webhook messages, newest first.
///
/// One entry per Svix message id the service processed (kept for
/// `WEBHOOK_EVENTS_RETENTION_DAYS`): its type, its user, the Clerk
/// `updated_at` of the state it carried, when it was received and what it
/// did. Refused deliveries (bad signature, too old) are not recorded: they
/// are counted in `clerk_role_sync_webhook_refusals_total`. Keyset
/// pagination: pass the previous page's `nextCursor` as `cursor`.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "One page of processed messages", body = WebhookEventPage),
        (status = 422, description = "A user id that is not a Clerk user id, an unknown outcome, a type over 100 characters or with a NUL character, a time outside the years 1970 to 9999, `since` not before `until`, or a limit outside 1..=200 (`/problems/invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        AdminReadRefusals,
        MalformedQuery,
    )
)]
#[get("/api/admin/webhook-events")]
pub async fn list_webhook_events(
    _admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<EventQuery>,
) -> Result<web::Json<WebhookEventPage>, ApiError> {
    let query = query.into_inner();
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let user_id = query
        .user_id
        .as_deref()
        .map(|id| {
            ClerkUserId::parse(id).map_err(|_| unprocessable("userId is not a Clerk user id"))
        })
        .transpose()?;
    let event_type = query.event_type.filter(|t| !t.is_empty());
    if event_type
        .as_deref()
        .is_some_and(|t| t.chars().count() > MAX_TYPE_LEN || t.contains('\0'))
    {
        return Err(unprocessable(&format!(
            "type must be at most {MAX_TYPE_LEN} characters, without NUL characters"
        )));
    }
    let outcome = query
        .outcome
        .as_deref()
        .map(|value| {
            Outcome::parse(value).ok_or_else(|| {
                let recorded: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                unprocessable(&format!(
                    "outcome {value:?} is not one the service records: {}",
                    recorded.join(", ")
                ))
            })
        })
        .transpose()?;
    let in_range = |at: &Option<DateTime<Utc>>| at.is_none_or(|at| TIME_YEARS.contains(&at.year()));
    if !in_range(&query.since) || !in_range(&query.until) {
        return Err(unprocessable(
            "since and until must lie in the years 1970 to 9999",
        ));
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err(unprocessable("since must be before until"));
    }
    let filter = WebhookEventFilter {
        user_id,
        event_type,
        outcome: outcome.map(|outcome| outcome.as_str().to_owned()),
        since: query.since.map(|at| at.naive_utc()),
        until: query.until.map(|at| at.naive_utc()),
        after: cursor::WEBHOOK_EVENTS.decode(query.cursor.as_deref())?,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let rows = with_conn!(state.db, conn => {
        Ok::<_, crate::db::DbError>(conn.list_webhook_events(&filter).await?)
    })?;
    let (rows, next_cursor) = one_page(rows, limit, |event| {
        cursor::WEBHOOK_EVENTS.encode(&(event.received_at, event.svix_id.clone()))
    });
    let data = rows.into_iter().map(WebhookEventResponse::from).collect();
    Ok(web::Json(WebhookEventPage { data, next_cursor }))
}

fn unprocessable(detail: &str) -> ApiError {
    ApiError::typed(ProblemType::InvalidParameter, detail)
}
