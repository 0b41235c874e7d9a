//! Applying users' states as Clerk reports them (webhooks, a re-read, a
//! backfill page, the worker's read before a retry, a reconcile repair) by
//! the race rule, many users in one transaction ([`LockedUsers`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDateTime;

use super::audit::log_role_change;
use crate::clerk::ClerkUser;
use crate::db::rows::{COUNT_SHARDS, NewRoleChange, NewWebhookEvent, SyncRow, UserRow};
use crate::db::{DbError, LockedRows, StatesWrite, Store};
use crate::domain::{
    ClerkState, ClerkUserId, CountDeltas, Known, PendingPush, Role, RoleSet, RoleSource, Tombstone,
    Unrecorded, Verdict, judge, judge_reread,
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
    fn audited_as(self) -> (RoleSource, &'a str) {
        match self {
            Self::Clerk { svix_id } => (RoleSource::ClerkWebhook, svix_id),
            Self::Reconcile { actor } => (RoleSource::Reconcile, actor),
        }
    }
}

/// One locked user, as the states applied so far left it.
#[derive(Debug)]
struct Entry {
    /// `None` while the user does not exist here.
    row: Option<UserRow>,
    sync: Option<SyncRow>,
    /// The user existed when it was locked (it is updated, not inserted).
    stored: bool,
    /// Changed since it was locked.
    dirty: bool,
    /// Its push, refused by Clerk for good, is superseded by Clerk's state.
    clear_sync_error: bool,
}

/// Users locked together until their transaction ends, and what applying
/// Clerk's states to them writes once they are all judged.
///
/// [`take`](Self::take) locks the users (in id order, as every transaction
/// takes user rows) and reads their outbox rows as the locks' previous
/// holders left them. Each state is then judged by the race rule against the
/// user as the states before it left it, so a batch decides exactly what the
/// same states applied one by one would. [`write`](Self::write) writes it
/// all at the end, a few set-based statements whatever the number of users.
#[derive(Debug)]
pub struct LockedUsers {
    users: BTreeMap<ClerkUserId, Entry>,
    recorded: HashSet<String>,
    audits: Vec<NewRoleChange>,
    counts: CountDeltas,
    messages: Vec<NewWebhookEvent>,
    /// The database's clock once the locks were held: the time of every
    /// change written, and what claims are judged live by.
    now: NaiveDateTime,
}

impl LockedUsers {
    /// Locks users `ids` (deleted ones too; absent users lock nothing) and
    /// notes which of the Svix `messages` are already recorded.
    pub async fn take<C: Store>(
        conn: &mut C,
        ids: impl IntoIterator<Item = &ClerkUserId>,
        messages: &[&str],
    ) -> Result<Self, DbError> {
        let ids = in_lock_order(ids);
        let locked = conn.lock_users(&ids, messages).await?;
        Ok(Self::locked(ids, locked))
    }

    /// Begins a transaction of its own and [takes](Self::take) the users
    /// in it; end it with [`commit`](Self::commit) or
    /// [`Store::roll_back`].
    pub async fn begin<C: Store>(
        conn: &mut C,
        ids: impl IntoIterator<Item = &ClerkUserId>,
        messages: &[&str],
    ) -> Result<Self, DbError> {
        let ids = in_lock_order(ids);
        let locked = conn.begin_locking_users(&ids, messages).await?;
        Ok(Self::locked(ids, locked))
    }

    fn locked(ids: Vec<ClerkUserId>, locked: LockedRows) -> Self {
        let mut syncs: HashMap<ClerkUserId, SyncRow> = locked
            .syncs
            .into_iter()
            .map(|sync| (sync.user_id.clone(), sync))
            .collect();
        let mut users: BTreeMap<ClerkUserId, Entry> = ids
            .into_iter()
            .map(|id| {
                let entry = Entry {
                    row: None,
                    sync: None,
                    stored: false,
                    dirty: false,
                    clear_sync_error: false,
                };
                (id, entry)
            })
            .collect();
        for row in locked.users {
            let sync = syncs.remove(&row.id);
            if let Some(entry) = users.get_mut(&row.id) {
                entry.sync = sync;
                entry.row = Some(row);
                entry.stored = true;
            }
        }
        Self {
            users,
            recorded: locked.recorded.into_iter().collect(),
            audits: Vec::new(),
            counts: CountDeltas::default(),
            messages: Vec::new(),
            now: locked.now,
        }
    }

    /// Whether Svix message `svix_id` was recorded before the users were
    /// locked.
    pub fn was_recorded(&self, svix_id: &str) -> bool {
        self.recorded.contains(svix_id)
    }

    /// User `id` as the states applied so far left it (`None`: absent).
    pub fn row(&self, id: &ClerkUserId) -> Option<&UserRow> {
        self.entry(id).row.as_ref()
    }

    /// Whether a push of user `id`'s role is waiting.
    pub fn push_pending(&self, id: &ClerkUserId) -> bool {
        self.entry(id)
            .sync
            .as_ref()
            .is_some_and(SyncRow::is_pending)
    }

    /// Whether a push of user `id`'s role is waiting, or failed and was
    /// given up on (it shows with its error until a new change).
    pub fn push_unsettled(&self, id: &ClerkUserId) -> bool {
        self.entry(id)
            .sync
            .as_ref()
            .is_some_and(|sync| sync.is_pending() || sync.last_error.is_some())
    }

    /// Reads user `id`'s outbox row again, after its caller changed it.
    pub async fn reread_sync<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
    ) -> Result<(), DbError> {
        self.entry_mut(id).sync = conn.find_sync(id).await?;
        Ok(())
    }

    fn entry(&self, id: &ClerkUserId) -> &Entry {
        self.users
            .get(id)
            .expect("a user is locked before it is applied")
    }

    fn entry_mut(&mut self, id: &ClerkUserId) -> &mut Entry {
        self.users
            .get_mut(id)
            .expect("a user is locked before it is applied")
    }

    /// Applies user `id`'s state as Clerk reports it by the rules of
    /// [`judge`] ([`judge_reread`] when `apply.reread`). With a `message`,
    /// the message is recorded with the outcome when the users are written.
    ///
    /// A state that cancels a pending push cancels it at once (unless a
    /// worker has claimed it meanwhile: then Clerk's answer settles it).
    pub async fn apply_state<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        user: &ClerkUser,
        apply: Apply<'_>,
        message: Option<Message<'_>>,
    ) -> Result<Outcome, DbError> {
        let now = self.now;
        let outcome = self.judge_and_apply(conn, id, user, apply, now).await?;
        self.note(message, Some(id), Some(user.updated_at), outcome, now);
        Ok(outcome)
    }

    async fn judge_and_apply<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        user: &ClerkUser,
        apply: Apply<'_>,
        now: NaiveDateTime,
    ) -> Result<Outcome, DbError> {
        let Apply {
            source,
            actor,
            reread,
            allowance_ms,
            claimed_by,
        } = apply;
        let entry = self.entry_mut(id);
        let (known, pending_version) = match &entry.row {
            Some(row) => {
                let sync = entry.sync.as_ref();
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
        let rule = if reread { judge_reread } else { judge };
        let metadata = user.metadata_role();
        let mut verdict = rule(known, metadata, user.updated_at, allowance_ms);
        if let (
            Verdict::Apply {
                cancels_push: true, ..
            },
            Some(version),
        ) = (verdict, pending_version)
        {
            if conn.cancel_push(id, version, claimed_by).await? {
                entry.sync = conn.find_sync(id).await?;
            } else {
                // A worker claimed the push meanwhile: it is in flight, and
                // Clerk's answer settles it.
                let known = known.map(Known::with_push_in_flight);
                verdict = rule(known, metadata, user.updated_at, allowance_ms);
            }
        }
        let (clerk, role, unknown_role, cancelled) = match verdict {
            Verdict::Apply {
                clerk,
                role,
                unknown_role,
                cancels_push,
            } => (clerk, role, unknown_role, cancels_push),
            Verdict::Stale => return Ok(Outcome::Stale),
            Verdict::Deleted => return Ok(Outcome::UserDeleted),
            Verdict::Conflict => {
                tracing::warn!(user.id = %id, "Clerk sent two roles for one instant; re-read needed");
                return Ok(Outcome::Conflict);
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
        // A user back from a tombstone was not counted, as a new one.
        let from = known
            .filter(|known| known.deleted.is_none())
            .map(|known| known.role);
        // A push that Clerk refused for good is superseded by Clerk's state.
        if let Some(sync) = &mut entry.sync
            && !sync.is_pending()
            && sync.last_error.take().is_some()
        {
            entry.clear_sync_error = true;
        }
        entry.row = Some(UserRow {
            id: id.clone(),
            email: user.primary_email().map(str::to_owned),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            image_url: user.image_url.clone(),
            role,
            clerk_updated_at: Some(clerk.updated_at),
            clerk_role: Some(clerk.role),
            clerk_from_push: known
                .is_some_and(|known| known.clerk_from_push && known.clerk == Some(clerk)),
            // Sign-up order, not the order we heard of users in.
            created_at: user
                .created_at()
                .or(entry.row.as_ref().map(|row| row.created_at))
                .unwrap_or(now),
            updated_at: now,
            deleted_at: None,
            deletion_final: false,
        });
        entry.dirty = true;
        if from != Some(role) {
            self.move_role(id, from, role, source, actor, now);
        }
        Ok(match (unknown_role, from != Some(role)) {
            (true, _) => Outcome::UnknownRole,
            (false, true) => Outcome::Applied,
            (false, false) => Outcome::Unchanged,
        })
    }

    /// Applies user `id`'s deletion, audited (its role → none): by Clerk's
    /// own `user.deleted` ([`Deleter::Clerk`]: final, never undone), or by
    /// the drift audit or `reconcile` finding it gone from Clerk (provisional:
    /// undone when Clerk shows the user again). A tombstone, kept with its
    /// history, gone from lists and counts. A deletion that arrives before
    /// the user's creation leaves a tombstone for the creation to find. Its
    /// outbox row goes at once (in id order, like every outbox row this
    /// transaction touches).
    pub async fn delete<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        deleted_by: Deleter<'_>,
        message: Option<Message<'_>>,
    ) -> Result<Outcome, DbError> {
        let now = self.now;
        let final_ = matches!(deleted_by, Deleter::Clerk { .. });
        let entry = self
            .users
            .get_mut(id)
            .expect("a user is locked before it is applied");
        let outcome = match &mut entry.row {
            Some(row) if row.deleted_at.is_some() => {
                if final_ && !row.deletion_final {
                    // Clerk confirms what the audit found.
                    row.deletion_final = true;
                    entry.dirty = true;
                }
                Outcome::UserDeleted
            }
            Some(row) => {
                row.deleted_at = Some(now);
                row.deletion_final = final_;
                row.updated_at = now;
                let role = row.role;
                entry.dirty = true;
                entry.sync = None;
                entry.clear_sync_error = false;
                conn.delete_sync(id).await?;
                let (source, actor) = deleted_by.audited_as();
                self.audits.push(NewRoleChange {
                    user_id: id.clone(),
                    old_role: Some(role),
                    new_role: None,
                    source,
                    actor: Some(actor.to_owned()),
                    changed_at: now,
                });
                self.counts.add(id.shard(COUNT_SHARDS), Some(role), None);
                log_role_change(id, Some(role), None, source, Some(actor));
                Outcome::Deleted
            }
            None => {
                entry.row = Some(UserRow {
                    id: id.clone(),
                    email: None,
                    first_name: None,
                    last_name: None,
                    image_url: None,
                    role: Role::Student,
                    clerk_updated_at: None,
                    clerk_role: None,
                    clerk_from_push: false,
                    created_at: now,
                    updated_at: now,
                    deleted_at: Some(now),
                    deletion_final: final_,
                });
                entry.dirty = true;
                Outcome::Deleted
            }
        };
        self.note(message, Some(id), None, outcome, now);
        Ok(outcome)
    }

    /// Records a message about no user we keep (another event type, a
    /// deletion without an id) with its outcome.
    pub fn record(&mut self, message: Message<'_>, outcome: Outcome) {
        self.note(Some(message), None, None, outcome, self.now);
    }

    fn note(
        &mut self,
        message: Option<Message<'_>>,
        id: Option<&ClerkUserId>,
        clerk_updated_at: Option<i64>,
        outcome: Outcome,
        now: NaiveDateTime,
    ) {
        if let Some(message) = message {
            self.messages.push(NewWebhookEvent {
                svix_id: message.svix_id.to_owned(),
                event_type: message.event_type.to_owned(),
                user_id: id.cloned(),
                outcome: outcome.as_str(),
                received_at: now,
                clerk_updated_at,
            });
        }
    }

    /// An audit row, the counter move and the log line of one role change.
    fn move_role(
        &mut self,
        id: &ClerkUserId,
        from: Option<Role>,
        to: Role,
        source: RoleSource,
        actor: &str,
        now: NaiveDateTime,
    ) {
        self.audits.push(NewRoleChange {
            user_id: id.clone(),
            old_role: from,
            new_role: Some(to),
            source,
            actor: Some(actor.to_owned()),
            changed_at: now,
        });
        self.counts.add(id.shard(COUNT_SHARDS), from, Some(to));
        log_role_change(id, from, Some(to), source, Some(actor));
    }

    /// Writes everything applied. A message another transaction recorded
    /// since the users were locked fails it with a unique violation.
    pub async fn write<C: Store>(self, conn: &mut C) -> Result<(), DbError> {
        Ok(conn.write_states(self.into_write()).await?)
    }

    /// Writes everything applied and commits the transaction
    /// [`begin`](Self::begin) began (see [`write`](Self::write));
    /// `written` is called once the writes are done (see
    /// [`Store::write_and_commit`]).
    pub async fn commit<C: Store>(
        self,
        conn: &mut C,
        written: &mut (dyn FnMut() + Send),
    ) -> Result<(), DbError> {
        Ok(conn.write_and_commit(self.into_write(), written).await?)
    }

    fn into_write(self) -> StatesWrite {
        let Self {
            users,
            audits,
            counts,
            mut messages,
            ..
        } = self;
        let mut write = StatesWrite {
            audits,
            counts,
            ..StatesWrite::default()
        };
        for (id, entry) in users {
            match (entry.row, entry.dirty, entry.stored) {
                (Some(row), true, true) => write.updated.push(row),
                (Some(row), true, false) => write.created.push(row),
                _ => {}
            }
            if entry.clear_sync_error {
                write.cleared_sync_errors.push(id);
            }
        }
        // In one order, so two transactions recording the same messages
        // wait on each other without a cycle.
        messages.sort_unstable_by(|a, b| a.svix_id.cmp(&b.svix_id));
        write.messages = messages;
        write
    }
}

/// Users `ids` sorted, each once: the order every transaction takes user
/// rows in.
fn in_lock_order<'a>(ids: impl IntoIterator<Item = &'a ClerkUserId>) -> Vec<ClerkUserId> {
    let ids: BTreeSet<&ClerkUserId> = ids.into_iter().collect();
    ids.into_iter().cloned().collect()
}

/// Applies one user's state as Clerk reports it (a re-read, the worker's
/// read before a retry), inside its caller's transaction.
pub async fn apply_clerk_user<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    user: &ClerkUser,
    apply: Apply<'_>,
) -> Result<Outcome, DbError> {
    let mut users = LockedUsers::take(conn, [id], &[]).await?;
    let outcome = users.apply_state(conn, id, user, apply, None).await?;
    users.write(conn).await?;
    Ok(outcome)
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
        deleted: row.deleted_at.map(|_| {
            if row.deletion_final {
                Tombstone::Final
            } else {
                Tombstone::Provisional
            }
        }),
        pending,
    }
}
