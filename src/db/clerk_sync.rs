//! The outbox of roles to push to Clerk (`clerk_sync`): one row per user
//! whose admin-set role has not reached Clerk yet.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::clerk_sync;

/// A `clerk_sync` row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = clerk_sync)]
pub struct SyncRow {
    pub user_id: String,
    pub desired_role: String,
    pub version: i64,
    pub attempts: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
}

impl SyncRow {
    /// Still to be sent (retrying stops, with `next_attempt_at` cleared,
    /// after a refusal from Clerk that a retry cannot fix).
    pub fn is_pending(&self) -> bool {
        self.next_attempt_at.is_some()
    }
}
