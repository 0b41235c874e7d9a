//! The vocabulary of the service (roles, Clerk user ids, role-change
//! sources, parsed once at the edge) and the sync rules as pure functions.
//! Knows no HTTP and no SQL: its values only declare that they are stored
//! as text (`db/columns.rs` says how).

mod id_sketch;
mod labels;
mod role;
mod rules;
mod user_id;

pub use id_sketch::{DECODES_UP_TO, Difference, IdSketch};
pub use labels::{DriftKind, Outcome};
pub use role::{Role, RoleParseError, RoleSet, RoleSource, RoleSourceParseError};
pub use rules::{
    ClerkState, CountDeltas, DEFAULT_CLOCK_SKEW_ALLOWANCE_MS, MetadataRole, PendingPush,
    StateDecision, StoredUser, Tombstone, UnrecordedPushes, cancels, count_deltas, judge,
    judge_reread,
};
pub use user_id::{ClerkUserId, UserIdError};
