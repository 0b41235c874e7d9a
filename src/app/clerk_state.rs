//! The words of a Clerk state applied to a user: where it came from
//! ([`Apply`], [`Message`]), who deletes ([`Deleter`]) and what it did
//! ([`Outcome`]). The unit of work (`unit_of_work.rs`) applies them.

use crate::domain::RoleSource;

/// What an event did, as recorded in `webhook_events.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookOutcome)]
pub enum Outcome {
    /// The user was created or its role changed.
    Applied,
    /// The profile was refreshed; the role stayed.
    Unchanged,
    /// Applied, but `public_metadata.role` held a value we do not know.
    UnknownRole,
    /// Older than the Clerk state already applied: nothing changed.
    Stale,
    /// Same `updated_at` as the applied state with another role: nothing
    /// changed; the user needs a re-read from Clerk.
    Conflict,
    /// The user was deleted (now, or before this event arrived).
    Deleted,
    /// An event for a user already deleted: nothing changed.
    UserDeleted,
    /// `user.deleted` without `data.id`.
    MissingId,
    /// An event type we do not act on.
    Ignored,
    /// The Svix message id was seen before: nothing changed.
    Duplicate,
}

impl Outcome {
    /// Every outcome, for metrics that start at zero.
    pub const ALL: [Outcome; 10] = [
        Self::Applied,
        Self::Unchanged,
        Self::UnknownRole,
        Self::Stale,
        Self::Conflict,
        Self::Deleted,
        Self::UserDeleted,
        Self::MissingId,
        Self::Ignored,
        Self::Duplicate,
    ];

    /// The outcome recorded as `value`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == value)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::UnknownRole => "unknown_role",
            Self::Stale => "stale",
            Self::Conflict => "conflict",
            Self::Deleted => "deleted",
            Self::UserDeleted => "user_deleted",
            Self::MissingId => "missing_id",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The Svix message a Clerk state came in.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub svix_id: &'a str,
    pub event_type: &'a str,
}

/// How to apply a Clerk state: where it came from and under which rules.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    /// The audit source of a role change it makes.
    pub source: RoleSource,
    /// The audit actor (the Svix message id, or `backfill`).
    pub actor: &'a str,
    /// A re-read after a conflict ([`judge_reread`]).
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
