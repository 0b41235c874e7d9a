//! The fixed sets of what the service reports: what a webhook event did
//! and what kind of drift the audit found. Stored as text, counted in
//! metrics and shown in the API, each value by its one name.

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

/// What kind of drift a user showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    MissingHere,
    RoleDiffers,
    Outdated,
    MissingInClerk,
}

impl DriftKind {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [DriftKind; 4] = [
        Self::MissingHere,
        Self::RoleDiffers,
        Self::Outdated,
        Self::MissingInClerk,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingHere => "missing_here",
            Self::RoleDiffers => "role_differs",
            Self::Outdated => "outdated",
            Self::MissingInClerk => "missing_in_clerk",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}
