//! Verified webhook events, applied many at once: a batch is one
//! transaction, each Svix message is applied once (recorded with what it
//! did), and each user's events apply in Clerk's order.

use std::collections::HashSet;
use std::sync::Arc;

use diesel::result::DatabaseErrorKind;

use super::audit::after_commit;
use super::clerk_state::{Deleter, Message, Outcome, StateContext};
use super::unit_of_work::{UnitOfWork, apply_clerk_user};
use crate::clerk::ClerkUser;
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, RoleSource};
use crate::webhooks::events::ClerkEvent;

/// A verified, parsed event under its Svix message id.
#[derive(Debug)]
pub struct Received {
    pub svix_id: String,
    pub event: ClerkEvent,
}

/// Why an event was not stored (Svix delivers it again).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotStored(Arc<str>);

impl From<&str> for NotStored {
    fn from(reason: &str) -> Self {
        Self(reason.into())
    }
}

impl From<&DbError> for NotStored {
    fn from(error: &DbError) -> Self {
        Self(error.to_string().into())
    }
}

/// Applies `events` (in the order they were received) and answers each.
///
/// All of them in one transaction when it commits. When it fails, the
/// events are applied again one by one, each in its own transaction, so that
/// one event the database refuses fails alone; when the database is
/// unreachable, every event fails at once.
pub async fn apply_events<C: Store>(
    conn: &mut C,
    events: &[Received],
    allowance_ms: i64,
) -> Vec<Result<Outcome, NotStored>> {
    let error = match apply_batch(conn, events, allowance_ms).await {
        Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
        Err(error) => error,
    };
    if events.len() == 1 || is_unreachable(&error) {
        let error = NotStored::from(&error);
        return events.iter().map(|_| Err(error.clone())).collect();
    }
    tracing::warn!(
        %error,
        events = events.len(),
        "a batch of webhook events failed; applying them one by one"
    );
    // A user whose event failed (its row held locked by another session,
    // say) fails its later events at once: each would wait as long again,
    // and the other users' events behind them with it.
    let mut failed_users: HashSet<&ClerkUserId> = HashSet::new();
    let mut answers = Vec::with_capacity(events.len());
    for event in events {
        let user = event.event.user_id();
        if user.is_some_and(|user| failed_users.contains(user)) {
            answers.push(Err(NotStored::from(
                "an earlier event of this user could not be stored",
            )));
            continue;
        }
        let answer = apply_batch(conn, std::slice::from_ref(event), allowance_ms).await;
        answers.push(match answer {
            Ok(outcomes) => Ok(outcomes[0]),
            Err(error) => {
                failed_users.extend(user);
                Err(NotStored::from(&error))
            }
        });
    }
    answers
}

/// Whether a failure says nothing about the events: the database (or the
/// connection to it) is gone.
fn is_unreachable(error: &DbError) -> bool {
    use diesel::result::Error::DatabaseError;
    matches!(
        error,
        DbError::Unavailable(_)
            | DbError::Query(DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            ))
    )
}

/// [`apply_once`], run again when it lost a race: a message recorded by
/// another replica meanwhile, or two transactions creating the same new user
/// (the loser's insert hits the primary key; run again, it finds the message
/// recorded, or the user there and applies its state by the ordering rules).
async fn apply_batch<C: Store>(
    conn: &mut C,
    events: &[Received],
    allowance_ms: i64,
) -> Result<Vec<Outcome>, DbError> {
    let mut attempts_left = 3;
    loop {
        attempts_left -= 1;
        match apply_once(conn, events, allowance_ms).await {
            Err(error) if attempts_left > 0 && error.is_unique_violation() => {}
            answer => return answer,
        }
    }
}

/// Applies `events` in one transaction, together with the records of their
/// Svix message ids, and answers each in the order given.
///
/// The users are locked in id order, and each user's events applied in
/// Clerk's order (by `updated_at`, a deletion after every state; the order
/// received breaks ties), so a batch ends exactly where those events applied
/// one by one in that order would. A message id seen before (recorded, or
/// earlier in the batch) is a duplicate and changes nothing.
async fn apply_once<C: Store>(
    conn: &mut C,
    events: &[Received],
    allowance_ms: i64,
) -> Result<Vec<Outcome>, DbError> {
    after_commit(async {
        let applied = apply_in_transaction(conn, events, allowance_ms).await;
        if applied.is_err() {
            // Open still when a statement failed before the commit. A
            // connection that cannot roll back stays marked broken, and is
            // closed as it is given back (`ClosedIfAbandoned`): the batch's
            // own error is the one to answer.
            let _ = conn.roll_back().await;
        }
        applied
    })
    .await
}

/// [`apply_once`]'s transaction, begun with the users' locks and committed
/// with the writes.
async fn apply_in_transaction<C: Store>(
    conn: &mut C,
    events: &[Received],
    allowance_ms: i64,
) -> Result<Vec<Outcome>, DbError> {
    let mut outcomes = vec![Outcome::Duplicate; events.len()];
    let mut first_seen = HashSet::new();
    let mut order: Vec<usize> = (0..events.len())
        .filter(|&i| first_seen.insert(events[i].svix_id.as_str()))
        .collect();
    order.sort_by(|&a, &b| order_key(&events[a].event).cmp(&order_key(&events[b].event)));
    let svix_ids: Vec<&str> = order.iter().map(|&i| events[i].svix_id.as_str()).collect();
    let ids = events
        .iter()
        .filter_map(|received| received.event.user_id());
    let mut users = UnitOfWork::begin(conn, ids, &svix_ids).await?;
    for i in order {
        let Received { svix_id, event } = &events[i];
        if users.was_recorded(svix_id) {
            continue;
        }
        let message = Message {
            svix_id,
            event_type: event.kind(),
        };
        outcomes[i] = match event {
            ClerkEvent::UserUpserted { id, user, .. } => {
                let context = StateContext {
                    source: RoleSource::ClerkWebhook,
                    actor: svix_id,
                    reread: false,
                    allowance_ms,
                    claimed_by: None,
                };
                users
                    .apply_state(conn, id, user, context, Some(message))
                    .await?
            }
            ClerkEvent::UserDeleted { id: Some(id) } => {
                let deleted_by = Deleter::Clerk { svix_id };
                users.delete(conn, id, deleted_by, Some(message)).await?
            }
            ClerkEvent::UserDeleted { id: None } => {
                users.record(message, Outcome::MissingId);
                Outcome::MissingId
            }
            ClerkEvent::Other { .. } => {
                users.record(message, Outcome::Ignored);
                Outcome::Ignored
            }
        };
    }
    users.commit(conn).await?;
    Ok(outcomes)
}

/// Where an event falls in a batch: events about no user first, then by
/// user id, then in Clerk's order for that user.
fn order_key(event: &ClerkEvent) -> (Option<&ClerkUserId>, bool, i64) {
    match event {
        ClerkEvent::UserUpserted { id, user, .. } => (Some(id), false, user.updated_at),
        ClerkEvent::UserDeleted { id } => (id.as_ref(), true, 0),
        ClerkEvent::Other { .. } => (None, false, 0),
    }
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
    let context = StateContext {
        source: RoleSource::ClerkWebhook,
        actor: svix_id,
        reread: true,
        allowance_ms,
        claimed_by: None,
    };
    after_commit(conn.transaction(async |conn| apply_clerk_user(conn, id, user, context).await))
        .await
}
