//! The use-cases: what the service does, each in one transaction, over
//! [`Store`](crate::db::Store) and by the rules of [`domain`](crate::domain).
//! The edges (routes, the CLI, the push worker) call these.

pub mod audit;
pub mod backfill;
pub mod change_roles;
pub mod clerk_instance;
pub mod clerk_state;
pub mod drift_audit;
pub mod push;
pub mod unit_of_work;
pub mod webhook_event;

pub use clerk_state::Outcome;
