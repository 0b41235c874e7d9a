//! The vocabulary of the service: roles, Clerk user ids and role-change
//! sources, parsed once at the edge. Knows no HTTP and no SQL.

mod role;
mod user_id;

pub use role::{Role, RoleParseError, RoleSource};
pub use user_id::{ClerkUserId, UserIdError};
