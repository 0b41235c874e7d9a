//! Applying Clerk's webhook events: each in one transaction together with the
//! record of its Svix message id, so an event is applied exactly once.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;

use super::clerk_sync::SyncRow;
use super::clerk_write::{ClerkWrite, RoleMove};
use super::schema::{users, webhook_events};
use super::store::{after_commit, log_role_change};
use super::users::{NewUser, UserRow, corrupt, now};
use super::{DbError, Store};
use crate::clerk::ClerkUser;
use crate::domain::{
    ClerkState, ClerkUserId, Known, PendingPush, Role, RoleSet, RoleSource, Unrecorded, Verdict,
    judge, judge_reread,
};
use crate::webhooks::events::ClerkEvent;

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

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent<'a> {
    pub svix_id: &'a str,
    pub event_type: &'a str,
    pub user_id: Option<&'a str>,
    pub outcome: &'a str,
    pub received_at: NaiveDateTime,
}

/// The Clerk-side columns of a user, written when a Clerk state is applied.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct ClerkChanges<'a> {
    pub email: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub image_url: Option<&'a str>,
    pub role: &'a str,
    pub clerk_updated_at: Option<i64>,
    pub clerk_role: Option<&'a str>,
    /// Whether that state is the echo of our own push (kept when a webhook
    /// repeats the state a push produced).
    pub clerk_from_push: bool,
    /// When the user signed up: Clerk's `created_at`.
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Rolls the transaction back when the message id turns out to be known.
enum TxError {
    Duplicate,
    Db(DbError),
}

impl From<diesel::result::Error> for TxError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(error.into())
    }
}

impl From<DbError> for TxError {
    fn from(error: DbError) -> Self {
        Self::Db(error)
    }
}

/// Applies one verified event under its Svix message id.
///
/// The message id is recorded last, in the same transaction: a duplicate
/// (even one racing this call) finds the id taken and rolls back everything
/// it did, so each message changes the database at most once.
pub async fn apply_event<C: Store>(
    conn: &mut C,
    svix_id: &str,
    event: &ClerkEvent,
    allowance_ms: i64,
) -> Result<Outcome, DbError> {
    // Two messages creating the same new user at once: the loser's insert
    // hits the primary key; run again, it then finds the user and applies
    // its state by the ordering rules.
    let mut attempts_left = 3;
    loop {
        match apply_event_once(conn, svix_id, event, allowance_ms).await {
            Err(TxError::Db(DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            )))) if attempts_left > 1 => attempts_left -= 1,
            Ok(outcome) => return Ok(outcome),
            Err(TxError::Duplicate) => return Ok(Outcome::Duplicate),
            Err(TxError::Db(error)) => return Err(error),
        }
    }
}

async fn apply_event_once<C: Store>(
    conn: &mut C,
    svix_id: &str,
    event: &ClerkEvent,
    allowance_ms: i64,
) -> Result<Outcome, TxError> {
    after_commit(conn.transaction(async |conn| {
        let (outcome, user_id) = match event {
            ClerkEvent::UserUpserted { user, .. } => {
                // Records the message itself, with what it writes.
                let message = Message {
                    svix_id,
                    event_type: event.kind(),
                };
                let apply = Apply {
                    source: RoleSource::ClerkWebhook,
                    actor: svix_id,
                    reread: false,
                    message: Some(message),
                    allowance_ms,
                    claimed_by: None,
                };
                return match apply_clerk_user(conn, user, apply).await? {
                    Outcome::Duplicate => Err(TxError::Duplicate),
                    outcome => Ok(outcome),
                };
            }
            ClerkEvent::UserDeleted { id: Some(id) } => {
                (delete_user(conn, id).await?, Some(id.as_str()))
            }
            ClerkEvent::UserDeleted { id: None } => (Outcome::MissingId, None),
            ClerkEvent::Other { .. } => (Outcome::Ignored, None),
        };
        let recorded = conn
            .record_webhook_event(&NewWebhookEvent {
                svix_id,
                event_type: event.kind(),
                user_id,
                outcome: outcome.as_str(),
                received_at: now(),
            })
            .await?;
        if recorded {
            Ok(outcome)
        } else {
            Err(TxError::Duplicate)
        }
    }))
    .await
}

/// Applies a user just read back from Clerk after a [`Outcome::Conflict`]
/// (message `svix_id`), in its own transaction.
pub async fn apply_reread<C: Store>(
    conn: &mut C,
    user: &ClerkUser,
    svix_id: &str,
    allowance_ms: i64,
) -> Result<Outcome, DbError> {
    let apply = Apply {
        source: RoleSource::ClerkWebhook,
        actor: svix_id,
        reread: true,
        message: None,
        allowance_ms,
        claimed_by: None,
    };
    after_commit(conn.transaction(async |conn| apply_clerk_user(conn, user, apply).await)).await
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
    user: &ClerkUser,
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
    let id = ClerkUserId::parse(user.id.as_str()).map_err(corrupt)?;
    let now = now();
    let mut created_at = now;
    let (known, pending_version) = match conn.lock_user(id.as_str()).await? {
        Some(row) => {
            // A statement of its own, after the lock: under READ COMMITTED a
            // subquery of the locking statement would see the outbox as it
            // was before the lock was granted, not as its holder left it.
            created_at = row.created_at;
            let sync = conn.find_sync(id.as_str()).await?;
            let pending = sync.as_ref().filter(|sync| sync.is_pending());
            let mut known = known(&row, pending, now)?;
            if let Some(pending) = &mut known.pending
                && claimed_by.is_some()
                && sync.as_ref().and_then(|sync| sync.claimed_by.as_deref()) == claimed_by
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
        && !conn
            .cancel_push(id.as_str(), version, now, claimed_by)
            .await?
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
        id: &id,
        changes: ClerkChanges {
            email: user.primary_email(),
            first_name: user.first_name.as_deref(),
            last_name: user.last_name.as_deref(),
            image_url: user.image_url.as_deref(),
            role: role.as_str(),
            clerk_updated_at: Some(clerk.updated_at),
            clerk_role: Some(clerk.role.as_str()),
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
        log_role_change(&id, change.from, change.to, source, Some(actor));
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
pub(crate) fn known(
    row: &UserRow,
    pending: Option<&SyncRow>,
    now: NaiveDateTime,
) -> Result<Known, DbError> {
    let role: Role = row.role.parse().map_err(corrupt)?;
    let clerk = match (&row.clerk_role, row.clerk_updated_at) {
        (Some(clerk_role), Some(updated_at)) => Some(ClerkState {
            role: clerk_role.parse().map_err(corrupt)?,
            updated_at,
        }),
        _ => None,
    };
    let pending = pending
        .map(|sync| {
            Ok::<_, DbError>(PendingPush {
                role: sync.desired_role.parse().map_err(corrupt)?,
                // A row queued before commit times were kept counts as old.
                committed_at: sync
                    .queued_at
                    .map_or(i64::MIN, |at| at.and_utc().timestamp_millis()),
                seen_at_commit: sync.seen_clerk_updated_at,
                in_flight: sync.claimed_until.is_some_and(|until| until >= now),
                unrecorded: Unrecorded {
                    roles: RoleSet::from_bits(sync.unrecorded_roles),
                    until: sync.unrecorded_until,
                },
            })
        })
        .transpose()?;
    Ok(Known {
        role,
        clerk,
        clerk_from_push: row.clerk_from_push,
        deleted: row.deleted_at.is_some(),
        pending,
    })
}

/// Tombstones a user: kept with its history, gone from lists and counts, and
/// never brought back. A deletion that arrives before the user's creation
/// leaves a tombstone for the creation to find.
pub async fn delete_user<C: Store>(conn: &mut C, id: &ClerkUserId) -> Result<Outcome, DbError> {
    let now = now();
    match conn.lock_user(id.as_str()).await? {
        Some(row) if row.deleted_at.is_some() => Ok(Outcome::UserDeleted),
        Some(row) => {
            let role: Role = row.role.parse().map_err(corrupt)?;
            conn.tombstone_user(id.as_str(), now).await?;
            conn.delete_sync(id.as_str()).await?;
            conn.move_count(id, Some(role), None).await?;
            tracing::info!(user.id = %id, "user deleted");
            Ok(Outcome::Deleted)
        }
        None => {
            conn.insert_user(&NewUser {
                id: id.as_str(),
                email: None,
                first_name: None,
                last_name: None,
                image_url: None,
                role: Role::Student.as_str(),
                clerk_updated_at: None,
                clerk_role: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
            conn.tombstone_user(id.as_str(), now).await?;
            Ok(Outcome::Deleted)
        }
    }
}
