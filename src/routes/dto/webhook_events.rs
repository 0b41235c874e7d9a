//! The shapes of the webhook event list: the Svix messages processed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};

use crate::app::Outcome;
use crate::db::rows::WebhookEventRow;

/// A processed Svix message, as recorded (never its body).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(json!({
    "svixId": "msg_2bVSt0H6z5aBdC9pPwHTgWeb1Re",
    "type": "user.updated",
    "userId": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "clerkUpdatedAt": "2026-12-07T14:02:10.512Z",
    "receivedAt": "2026-12-07T14:02:11Z",
    "outcome": "applied"
})))]
pub struct WebhookEventResponse {
    #[schema(example = "msg_2bVSt0H6z5aBdC9pPwHTgWeb1Re")]
    pub svix_id: String,
    /// Clerk's event type, as sent: one of the three the service applies,
    /// or another it acknowledged without applying (`ignored`).
    #[serde(rename = "type")]
    #[schema(schema_with = event_type_schema)]
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

/// The three types the service applies, or any other Clerk sends.
fn event_type_schema() -> Schema {
    let applied = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["user.created", "user.updated", "user.deleted"]));
    let other = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Another Clerk event type, acknowledged without change",
        ));
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(applied)
            .item(other)
            .examples(["user.updated"])
            .build(),
    )
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
