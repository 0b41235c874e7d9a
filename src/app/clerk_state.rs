//! Applying a user's state as Clerk reports it (a webhook, a re-read, a
//! backfill page, the worker's read before a retry) by the race rule.

use chrono::NaiveDateTime;

use super::audit::log_role_change;
use crate::clerk::ClerkUser;
use crate::db::rows::{ClerkChanges, NewWebhookEvent, SyncRow, UserRow, now};
use crate::db::{ClerkWrite, DbError, RoleMove, Store};
use crate::domain::{
    ClerkState, ClerkUserId, Known, PendingPush, RoleSet, RoleSource, Unrecorded, Verdict, judge,
    judge_reread,
};

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
    /// The message it came in, recorded with what it does.
    pub message: Option<Message<'a>>,
    /// The clock-skew allowance of the race rule.
    pub allowance_ms: i64,
    /// The push worker applying what it read from Clerk before a retry: its
    /// own claim does not make the push count as in flight.
    pub claimed_by: Option<&'a str>,
}

/// A user's row, locked until the transaction ends, with its outbox row as
/// the lock's previous holder left it.
#[derive(Debug)]
pub struct Locked {
    pub row: Option<UserRow>,
    pub sync: Option<SyncRow>,
}

impl Locked {
    /// Locks user `id` (deleted ones too); absent users lock nothing.
    pub async fn take<C: Store>(conn: &mut C, id: &ClerkUserId) -> Result<Self, DbError> {
        let Some(row) = conn.lock_user(id).await? else {
            return Ok(Self {
                row: None,
                sync: None,
            });
        };
        // A statement of its own, after the lock: under READ COMMITTED a
        // subquery of the locking statement would see the outbox as it was
        // before the lock was granted, not as its holder left it.
        let sync = conn.find_sync(id).await?;
        Ok(Self {
            row: Some(row),
            sync,
        })
    }

    /// Whether a push of the user's role is waiting.
    pub fn push_pending(&self) -> bool {
        self.sync.as_ref().is_some_and(SyncRow::is_pending)
    }
}

/// Applies a user's state as Clerk reports it (webhook, re-read or backfill)
/// by the rules of [`judge`] ([`judge_reread`] when `apply.reread`). Must run
/// inside a transaction.
///
/// With a `message`, the message is recorded together with what it does, and
/// [`Outcome::Duplicate`] says that it was recorded before and nothing was
/// written. On PostgreSQL all of it is three statements: the user's row lock,
/// its outbox row, then one write (four when it cancels a pending push).
pub async fn apply_clerk_user<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    user: &ClerkUser,
    apply: Apply<'_>,
) -> Result<Outcome, DbError> {
    let locked = Locked::take(conn, id).await?;
    apply_locked(conn, user, id, locked, apply).await
}

/// [`apply_clerk_user`] for a user its caller has already locked.
pub async fn apply_locked<C: Store>(
    conn: &mut C,
    user: &ClerkUser,
    id: &ClerkUserId,
    locked: Locked,
    apply: Apply<'_>,
) -> Result<Outcome, DbError> {
    let Apply {
        source,
        actor,
        reread,
        message,
        allowance_ms,
        claimed_by,
    } = apply;
    let now = now();
    let mut created_at = now;
    let (known, pending_version) = match &locked.row {
        Some(row) => {
            created_at = row.created_at;
            let sync = locked.sync.as_ref();
            let pending = sync.filter(|sync| sync.is_pending());
            let mut known = known(row, pending, now);
            if let Some(pending) = &mut known.pending
                && claimed_by.is_some()
                && sync.and_then(|sync| sync.claimed_by.as_deref()) == claimed_by
            {
                pending.in_flight = false;
            }
            (Some(known), pending.map(|sync| sync.version))
        }
        None => (None, None),
    };
    let record = |outcome: Outcome| {
        message.map(|message| NewWebhookEvent {
            svix_id: message.svix_id,
            event_type: message.event_type,
            user_id: Some(user.id.as_str()),
            outcome: outcome.as_str(),
            received_at: now,
        })
    };
    let rule = if reread { judge_reread } else { judge };
    let mut verdict = rule(known, user.metadata_role(), user.updated_at, allowance_ms);
    if let (
        Verdict::Apply {
            cancels_push: true, ..
        },
        Some(version),
    ) = (verdict, pending_version)
        && !conn.cancel_push(id, version, now, claimed_by).await?
    {
        // A worker claimed the push meanwhile: it is in flight, and Clerk's
        // answer settles it.
        let known = known.map(Known::with_push_in_flight);
        verdict = rule(known, user.metadata_role(), user.updated_at, allowance_ms);
    }
    let (clerk, role, unknown_role, cancelled) = match verdict {
        Verdict::Apply {
            clerk,
            role,
            unknown_role,
            cancels_push,
        } => (clerk, role, unknown_role, cancels_push),
        Verdict::Stale => return Outcome::Stale.record_only(conn, record).await,
        Verdict::Deleted => return Outcome::UserDeleted.record_only(conn, record).await,
        Verdict::Conflict => {
            tracing::warn!(user.id = %id, "Clerk sent two roles for one instant; re-read needed");
            return Outcome::Conflict.record_only(conn, record).await;
        }
    };
    if unknown_role {
        tracing::warn!(
            user.id = %id,
            kept = %role,
            "public_metadata.role holds an unknown value; keeping the current role"
        );
    }
    if cancelled {
        tracing::info!(
            user.id = %id,
            role = %role,
            "a newer role from Clerk cancelled the pending push"
        );
    }
    let from = known.map(|known| known.role);
    let role_move = (from != Some(role)).then_some(RoleMove {
        from,
        to: role,
        source,
        actor,
    });
    let outcome = match (unknown_role, &role_move) {
        (true, _) => Outcome::UnknownRole,
        (false, Some(_)) => Outcome::Applied,
        (false, None) => Outcome::Unchanged,
    };
    let write = ClerkWrite {
        message: record(outcome),
        id,
        changes: ClerkChanges {
            email: user.primary_email(),
            first_name: user.first_name.as_deref(),
            last_name: user.last_name.as_deref(),
            image_url: user.image_url.as_deref(),
            role,
            clerk_updated_at: Some(clerk.updated_at),
            clerk_role: Some(clerk.role),
            clerk_from_push: known
                .is_some_and(|known| known.clerk_from_push && known.clerk == Some(clerk)),
            // Sign-up order, not the order we heard of users in.
            created_at: user.created_at().unwrap_or(created_at),
            updated_at: now,
        },
        is_new: known.is_none(),
        // A push that Clerk refused for good is superseded by Clerk's state.
        clear_sync_error: known.is_some_and(|known| known.pending.is_none()),
        role_move,
    };
    if !conn.write_clerk_state(&write).await? {
        return Ok(Outcome::Duplicate);
    }
    if let Some(change) = &write.role_move {
        log_role_change(id, change.from, change.to, source, Some(actor));
    }
    Ok(outcome)
}

impl Outcome {
    /// For a state that changes nothing: records its message, if any, with
    /// this outcome.
    async fn record_only<'a, C: Store>(
        self,
        conn: &mut C,
        record: impl Fn(Outcome) -> Option<NewWebhookEvent<'a>>,
    ) -> Result<Outcome, DbError> {
        match record(self) {
            Some(message) if !conn.record_webhook_event(&message).await? => Ok(Outcome::Duplicate),
            _ => Ok(self),
        }
    }
}

/// What the rules need to know of a stored user and its pending push.
pub(crate) fn known(row: &UserRow, pending: Option<&SyncRow>, now: NaiveDateTime) -> Known {
    let clerk = match (row.clerk_role, row.clerk_updated_at) {
        (Some(role), Some(updated_at)) => Some(ClerkState { role, updated_at }),
        _ => None,
    };
    let pending = pending.map(|sync| PendingPush {
        role: sync.desired_role,
        // A row queued before commit times were kept counts as old.
        committed_at: sync
            .queued_at
            .map_or(i64::MIN, |at| at.and_utc().timestamp_millis()),
        seen_at_commit: sync.seen_clerk_updated_at,
        in_flight: sync.in_flight(now),
        unrecorded: Unrecorded {
            roles: RoleSet::from_bits(sync.unrecorded_roles),
            until: sync.unrecorded_until,
        },
    });
    Known {
        role: row.role,
        clerk,
        clerk_from_push: row.clerk_from_push,
        deleted: row.deleted_at.is_some(),
        pending,
    }
}
