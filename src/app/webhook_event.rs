//! One verified webhook event, applied in one transaction together with the
//! record of its Svix message id, so an event is applied exactly once.

use diesel::result::DatabaseErrorKind;

use super::audit::after_commit;
use super::clerk_state::{Apply, Message, Outcome, apply_clerk_user};
use crate::clerk::ClerkUser;
use crate::db::rows::{NewUser, NewWebhookEvent, now};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, Role, RoleSource};
use crate::webhooks::events::ClerkEvent;

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
            ClerkEvent::UserUpserted { id, user, .. } => {
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
                return match apply_clerk_user(conn, id, user, apply).await? {
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
    id: &ClerkUserId,
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
    after_commit(conn.transaction(async |conn| apply_clerk_user(conn, id, user, apply).await)).await
}

/// Tombstones a user: kept with its history, gone from lists and counts, and
/// never brought back. A deletion that arrives before the user's creation
/// leaves a tombstone for the creation to find.
pub async fn delete_user<C: Store>(conn: &mut C, id: &ClerkUserId) -> Result<Outcome, DbError> {
    let now = now();
    match conn.lock_user(id).await? {
        Some(row) if row.deleted_at.is_some() => Ok(Outcome::UserDeleted),
        Some(row) => {
            conn.tombstone_user(id, now).await?;
            conn.delete_sync(id).await?;
            conn.move_count(id, Some(row.role), None).await?;
            tracing::info!(user.id = %id, "user deleted");
            Ok(Outcome::Deleted)
        }
        None => {
            conn.insert_user(&NewUser::bare(id, Role::Student, now))
                .await?;
            conn.tombstone_user(id, now).await?;
            Ok(Outcome::Deleted)
        }
    }
}
