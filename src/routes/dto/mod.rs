//! The JSON shapes of the admin API (camelCase, timestamps in RFC 3339 UTC),
//! a file for each resource.

mod role_history;
mod sync_status;
mod users;
mod webhook_events;

pub use role_history::{RoleChangeResponse, RoleHistory};
pub use sync_status::{
    AwaitingConfirmation, ClerkInstanceState, ClerkInstanceStatus, DriftAuditRun, DriftAuditStatus,
    DriftCounts, HeldChange, OutboxResponse, SyncStatusResponse, UnsettledPush,
};
pub use users::{
    BulkRoleChange, BulkRoleRequest, RoleRequest, RoleStatsResponse, SyncResponse, SyncStateName,
    UserIdPath, UserList, UserPage, UserResponse, not_found, parse_role,
};
pub use webhook_events::{WebhookEventPage, WebhookEventResponse};

use crate::error::{ApiError, ProblemType};

/// A page size from a query: 1 to `max`, `default` when absent.
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::typed(
            ProblemType::InvalidParameter,
            format!("limit must be between 1 and {max}"),
        ))
    }
}
