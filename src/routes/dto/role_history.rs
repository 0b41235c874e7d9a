//! The shapes of a user's role history: its audit rows, newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::rows::RoleChangeRow;
use crate::domain::{Role, RoleSource};

/// One audit row.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(json!({
    "id": 4711,
    "userId": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "oldRole": "STUDENT",
    "newRole": "INSTRUCTOR",
    "source": "admin_api",
    "actor": "user_2bVSt0H6z5aBdC9pPwHTgWeb1Re",
    "changedAt": "2026-12-07T14:02:11Z"
})))]
pub struct RoleChangeResponse {
    pub id: i64,
    pub user_id: String,
    /// `null` when the user was created with `newRole` (or came back
    /// from a provisional deletion).
    #[schema(required = true)]
    pub old_role: Option<Role>,
    /// `null` when the user was deleted.
    #[schema(required = true)]
    pub new_role: Option<Role>,
    pub source: RoleSource,
    /// The admin's Clerk id, the Svix message id, or `cli`.
    #[schema(required = true)]
    pub actor: Option<String>,
    pub changed_at: DateTime<Utc>,
}

impl From<RoleChangeRow> for RoleChangeResponse {
    fn from(row: RoleChangeRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id.into(),
            old_role: row.old_role,
            new_role: row.new_role,
            source: row.source,
            actor: row.actor,
            changed_at: row.changed_at.and_utc(),
        }
    }
}

/// A page of audit rows, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleHistory {
    pub data: Vec<RoleChangeResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
