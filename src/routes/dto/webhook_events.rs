//! The shapes of the webhook event list: the Svix messages processed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::Outcome;
use crate::db::rows::WebhookEventRow;

/// A processed Svix message, as recorded (never its body).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventResponse {
    #[schema(example = "msg_2bVSt0H6z5aBdC9pPwHTgWeb1Re")]
    pub svix_id: String,
    /// Clerk's event type.
    #[serde(rename = "type")]
    #[schema(example = "user.updated")]
    pub event_type: String,
    /// The user it was about (`null`: not about a user we keep).
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// Clerk's `updated_at` of the user state it carried (`null` for
    /// deletions and other types).
    #[schema(required = true)]
    pub clerk_updated_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    #[schema(value_type = Outcome)]
    pub outcome: String,
}

impl From<WebhookEventRow> for WebhookEventResponse {
    fn from(row: WebhookEventRow) -> Self {
        Self {
            svix_id: row.svix_id,
            event_type: row.event_type,
            user_id: row.user_id,
            clerk_updated_at: row
                .clerk_updated_at
                .and_then(DateTime::from_timestamp_millis),
            received_at: row.received_at.and_utc(),
            outcome: row.outcome,
        }
    }
}

/// A page of processed Svix messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventPage {
    pub data: Vec<WebhookEventResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
