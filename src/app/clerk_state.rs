//! The words of a Clerk state applied to a user: where it came from
//! ([`StateContext`], [`Message`]) and who deletes ([`Deleter`]); what it did is
//! an [`Outcome`]. The unit of work (`unit_of_work.rs`) applies them.

pub use crate::domain::Outcome;
use crate::domain::RoleSource;

/// The Svix message a Clerk state came in.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub svix_id: &'a str,
    pub event_type: &'a str,
}

/// How to apply a Clerk state: where it came from and under which rules.
#[derive(Debug, Clone, Copy)]
pub struct StateContext<'a> {
    /// The audit source of a role change it makes.
    pub source: RoleSource,
    /// The audit actor (the Svix message id, or `backfill`).
    pub actor: &'a str,
    /// A re-read after a conflict ([`judge_reread`](crate::domain::judge_reread)).
    pub reread: bool,
    /// The clock-skew allowance of the race rule.
    pub allowance_ms: i64,
    /// The push worker applying what it read from Clerk before a retry: its
    /// own claim does not make the push count as in flight.
    pub claimed_by: Option<&'a str>,
}

/// Who deletes a user, and so how finally.
#[derive(Debug, Clone, Copy)]
pub enum Deleter<'a> {
    /// Clerk's `user.deleted`, Svix message `svix_id`: final.
    Clerk { svix_id: &'a str },
    /// The drift audit or `reconcile` (`actor`), which found the user gone
    /// from Clerk: provisional.
    Reconcile { actor: &'a str },
}

impl<'a> Deleter<'a> {
    /// The audit row's source and actor.
    pub(super) fn audited_as(self) -> (RoleSource, &'a str) {
        match self {
            Self::Clerk { svix_id } => (RoleSource::ClerkWebhook, svix_id),
            Self::Reconcile { actor } => (RoleSource::Reconcile, actor),
        }
    }
}
