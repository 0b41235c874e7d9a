//! The unit of work: the only way a transaction changes users. Callers lock
//! the users they touch ([`UnitOfWork::take`] or [`UnitOfWork::begin`]),
//! state intents on it (a Clerk state, a deletion, an admin's or the CLI's
//! role change, a push that landed or failed, our role to push), and
//! [`write`](UnitOfWork::write) or [`commit`](UnitOfWork::commit) it. It
//! alone writes users, audit rows, counters and the outbox, deciding by the
//! race rule ([`crate::domain::judge`]) in one place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDateTime;

use super::audit::log_role_change;
use super::clerk_state::{Deleter, Message, Outcome, StateContext};
use crate::clerk::ClerkUser;
use crate::db::rows::{COUNT_SHARDS, NewRoleChange, NewWebhookEvent, OutboxRow, UserRow};
use crate::db::{DbError, LockedRows, Store, WriteSet};
use crate::domain::{
    ClerkState, ClerkUserId, CountDeltas, PendingPush, Role, RoleSet, RoleSource, StateDecision,
    StoredUser, Tombstone, UnrecordedPushes, cancels, judge, judge_reread,
};

/// One locked user, as the intents applied so far left it.
#[derive(Debug)]
struct LockedUser {
    /// `None` while the user does not exist here.
    row: Option<UserRow>,
    /// Its outbox row, as last read.
    outbox: Option<OutboxRow>,
    /// The user existed when it was locked (it is updated, not inserted).
    in_database: bool,
    /// `row` changed since the user was locked.
    changed: bool,
    /// Its push, refused by Clerk for good, is superseded by Clerk's state.
    clear_push_error: bool,
    /// A push of this role, queued once the user is written.
    queue: Option<Role>,
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
pub struct UnitOfWork {
    users: BTreeMap<ClerkUserId, LockedUser>,
    recorded: HashSet<String>,
    audits: Vec<NewRoleChange>,
    counts: CountDeltas,
    messages: Vec<NewWebhookEvent>,
    /// The database's clock once the locks were held: the time of every
    /// change written, and what claims are judged live by.
    now: NaiveDateTime,
}

impl UnitOfWork {
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
        let mut outbox: HashMap<ClerkUserId, OutboxRow> = locked
            .outbox
            .into_iter()
            .map(|push| (push.user_id.clone(), push))
            .collect();
        let mut users: BTreeMap<ClerkUserId, LockedUser> = ids
            .into_iter()
            .map(|id| {
                let entry = LockedUser {
                    row: None,
                    outbox: None,
                    in_database: false,
                    changed: false,
                    clear_push_error: false,
                    queue: None,
                };
                (id, entry)
            })
            .collect();
        for row in locked.users {
            let push = outbox.remove(&row.id);
            if let Some(entry) = users.get_mut(&row.id) {
                entry.outbox = push;
                entry.row = Some(row);
                entry.in_database = true;
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
        self.pending_push(id).is_some()
    }

    /// User `id`'s push still to be sent, if any.
    pub fn pending_push(&self, id: &ClerkUserId) -> Option<&OutboxRow> {
        self.entry(id)
            .outbox
            .as_ref()
            .filter(|push| push.is_pending())
    }

    /// Whether a push of user `id`'s role is waiting, or failed and was
    /// given up on (it shows with its error until a new change).
    pub fn push_unsettled(&self, id: &ClerkUserId) -> bool {
        self.entry(id)
            .outbox
            .as_ref()
            .is_some_and(OutboxRow::is_unsettled)
    }

    fn entry(&self, id: &ClerkUserId) -> &LockedUser {
        self.users
            .get(id)
            .expect("a user is locked before it is applied")
    }

    fn entry_mut(&mut self, id: &ClerkUserId) -> &mut LockedUser {
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
        context: StateContext<'_>,
        message: Option<Message<'_>>,
    ) -> Result<Outcome, DbError> {
        let now = self.now;
        let outcome = self.judge_and_apply(conn, id, user, context, now).await?;
        self.note(message, Some(id), Some(user.updated_at), outcome, now);
        Ok(outcome)
    }

    async fn judge_and_apply<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        user: &ClerkUser,
        context: StateContext<'_>,
        now: NaiveDateTime,
    ) -> Result<Outcome, DbError> {
        let StateContext {
            source,
            actor,
            reread,
            allowance_ms,
            claimed_by,
        } = context;
        let entry = self.entry_mut(id);
        let (stored, pending_version) = match &entry.row {
            Some(row) => {
                let push = entry.outbox.as_ref();
                let pending = push.filter(|push| push.is_pending());
                let mut stored = stored_user(row, pending, now);
                if let Some(pending) = &mut stored.pending
                    && claimed_by.is_some()
                    && push.and_then(|push| push.claimed_by.as_deref()) == claimed_by
                {
                    pending.in_flight = false;
                }
                (Some(stored), pending.map(|push| push.version))
            }
            None => (None, None),
        };
        let rule = if reread { judge_reread } else { judge };
        let metadata = user.metadata_role();
        let mut decision = rule(stored, metadata, user.updated_at, allowance_ms);
        if let (
            StateDecision::Apply {
                cancels_push: true, ..
            },
            Some(version),
        ) = (decision, pending_version)
            && !cancel_pending(conn, id, entry, version, claimed_by).await?
        {
            // A worker claimed the push meanwhile: it is in flight, and
            // Clerk's answer settles it.
            let stored = stored.map(StoredUser::with_push_in_flight);
            decision = rule(stored, metadata, user.updated_at, allowance_ms);
        }
        let (clerk, role, unknown_role, cancelled) = match decision {
            StateDecision::Apply {
                clerk,
                role,
                unknown_role,
                cancels_push,
            } => (clerk, role, unknown_role, cancels_push),
            StateDecision::Stale => return Ok(Outcome::Stale),
            StateDecision::Deleted => return Ok(Outcome::UserDeleted),
            StateDecision::Conflict => {
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
        let from = stored
            .filter(|stored| stored.deleted.is_none())
            .map(|stored| stored.role);
        // A push that Clerk refused for good is superseded by Clerk's state.
        if let Some(push) = &mut entry.outbox
            && !push.is_pending()
            && push.last_error.take().is_some()
        {
            entry.clear_push_error = true;
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
            clerk_from_push: stored
                .is_some_and(|stored| stored.clerk_from_push && stored.clerk == Some(clerk)),
            // Sign-up order, not the order we heard of users in.
            created_at: user
                .created_at()
                .or(entry.row.as_ref().map(|row| row.created_at))
                .unwrap_or(now),
            updated_at: now,
            deleted_at: None,
            deletion_final: false,
        });
        entry.changed = true;
        if from != Some(role) {
            self.move_role(id, from, role, source, Some(actor), now);
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
                    entry.changed = true;
                }
                Outcome::UserDeleted
            }
            Some(row) => {
                row.deleted_at = Some(now);
                row.deletion_final = final_;
                row.updated_at = now;
                let role = row.role;
                entry.changed = true;
                entry.outbox = None;
                entry.queue = None;
                entry.clear_push_error = false;
                conn.delete_outbox_row(id).await?;
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
                entry.changed = true;
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

    /// An admin's or the CLI's change of user `id` to `role`: the role, an
    /// audit row, the counter move, and a push of the role queued. A user
    /// absent here is created bare when `create_missing` (the CLI
    /// bootstraps admins before Clerk's webhook has told us about them).
    pub fn change_role(
        &mut self,
        id: &ClerkUserId,
        role: Role,
        source: RoleSource,
        actor: Option<&str>,
        create_missing: bool,
    ) -> RoleChanged {
        let now = self.now;
        let entry = self.entry_mut(id);
        let from = match &mut entry.row {
            Some(row) if row.deleted_at.is_some() => return RoleChanged::Deleted,
            Some(row) if row.role == role => return RoleChanged::Unchanged,
            Some(row) => {
                let from = row.role;
                row.role = role;
                row.updated_at = now;
                Some(from)
            }
            None if create_missing => {
                entry.row = Some(UserRow::bare(id, role, now));
                None
            }
            None => return RoleChanged::NotFound,
        };
        entry.changed = true;
        entry.queue = Some(role);
        self.move_role(id, from, role, source, actor, now);
        RoleChanged::Changed { from }
    }

    /// Queues a push of `role`, ours, for user `id`: at once, so that the
    /// intents after it see it pending, unless the user is new or changed
    /// here (then once it is written, since a queued push notes the Clerk
    /// state its user holds).
    pub async fn queue_push<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        role: Role,
    ) -> Result<(), DbError> {
        let entry = self.entry_mut(id);
        if entry.in_database && !entry.changed {
            conn.enqueue_push(id, role).await?;
            entry.outbox = conn.find_outbox_row(id).await?;
        } else {
            entry.queue = Some(role);
        }
        Ok(())
    }

    /// Version `version` of user `id`'s push, sent under `owner`'s claim,
    /// landed: Clerk holds `pushed`. It becomes the newest Clerk state seen
    /// and, unless a newer role is still to be sent, the role: the push's
    /// own, unless a dashboard edit landed in Clerk after it. The row is
    /// synced when it was this version; a newer role still to be sent is
    /// due now, and the claim is released for it. Whatever an earlier push
    /// left unrecorded is older than Clerk's answer.
    pub async fn land_push<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        version: i64,
        pushed: ClerkState,
        owner: &str,
    ) -> Result<(), DbError> {
        let now = self.now;
        let entry = self.entry_mut(id);
        let same_version = entry.outbox.as_ref().is_some_and(|o| o.version == version);
        let newer_pending =
            !same_version && entry.outbox.as_ref().is_some_and(OutboxRow::is_pending);
        let Some(row) = entry.row.as_mut().filter(|row| row.deleted_at.is_none()) else {
            return Ok(());
        };
        let newest = pushed.newest(clerk_state(row));
        let from = row.role;
        if !newer_pending {
            row.role = newest.role;
        }
        row.clerk_role = Some(newest.role);
        row.clerk_updated_at = Some(newest.updated_at);
        row.clerk_from_push = newest == pushed;
        row.updated_at = now;
        let to = row.role;
        entry.changed = true;
        if same_version {
            conn.mark_synced(id, version).await?;
        } else {
            conn.release_claim(id, owner).await?;
        }
        conn.set_unrecorded_pushes(id, UnrecordedPushes::NONE)
            .await?;
        entry.outbox = conn.find_outbox_row(id).await?;
        if to != from {
            // Clerk's order settles it: a dashboard edit landed after our
            // push, or our push after a dashboard edit that cancelled a
            // newer change.
            self.move_role(id, Some(from), to, RoleSource::ClerkWebhook, None, now);
        }
        Ok(())
    }

    /// A version of user `id`'s push, sent under `owner`'s claim, failed:
    /// Clerk wrote nothing. It is tried again when `failed` says (or never;
    /// it shows as failing), only
    /// while `owner` still holds the claim (a replica that took it over is
    /// sending that push and records its own result); a newer role written
    /// meanwhile is due now. Then the newest Clerk state seen is judged
    /// again: while the push was in flight, a Clerk state with its role
    /// could have been its echo, and cancelled nothing.
    pub async fn fail_push<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        failed: FailedPush<'_>,
        owner: &str,
        allowance_ms: i64,
    ) -> Result<(), DbError> {
        let FailedPush {
            version,
            error,
            retry_in_ms,
        } = failed;
        let entry = self.entry_mut(id);
        if entry.outbox.as_ref().is_some_and(|o| o.version == version) {
            conn.reschedule_push(id, version, retry_in_ms, error, owner)
                .await?;
        } else {
            conn.release_claim(id, owner).await?;
        }
        entry.outbox = conn.find_outbox_row(id).await?;
        self.judge_again(conn, id, allowance_ms).await
    }

    /// Judges the newest Clerk state seen of user `id` against its pending
    /// push again, now that no push in flight can have written it.
    async fn judge_again<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
        allowance_ms: i64,
    ) -> Result<(), DbError> {
        let now = self.now;
        let entry = self.entry_mut(id);
        let Some(row) = &entry.row else {
            return Ok(());
        };
        let pending = entry.outbox.as_ref().filter(|push| push.is_pending());
        let version = pending.map(|push| push.version);
        let stored = stored_user(row, pending, now);
        let (Some(clerk), Some(pending), Some(version)) = (stored.clerk, stored.pending, version)
        else {
            return Ok(());
        };
        if stored.deleted.is_some()
            || stored.clerk_from_push
            || !cancels(clerk, pending, allowance_ms)
            || !cancel_pending(conn, id, entry, version, None).await?
        {
            return Ok(());
        }
        tracing::info!(
            user.id = %id,
            role = %clerk.role,
            "a newer role from Clerk cancelled the pending push"
        );
        if let Some(row) = &mut entry.row {
            row.role = clerk.role;
            row.updated_at = now;
        }
        entry.changed = true;
        self.move_role(
            id,
            Some(stored.role),
            clerk.role,
            RoleSource::ClerkWebhook,
            None,
            now,
        );
        Ok(())
    }

    /// Forgets what user `id`'s pushes may have written unrecorded: Clerk
    /// was just read, and holds something newer than any of them.
    pub async fn forget_unrecorded_pushes<C: Store>(
        &mut self,
        conn: &mut C,
        id: &ClerkUserId,
    ) -> Result<(), DbError> {
        conn.set_unrecorded_pushes(id, UnrecordedPushes::NONE)
            .await?;
        self.entry_mut(id).outbox = conn.find_outbox_row(id).await?;
        Ok(())
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
        actor: Option<&str>,
        now: NaiveDateTime,
    ) {
        self.audits.push(NewRoleChange {
            user_id: id.clone(),
            old_role: from,
            new_role: Some(to),
            source,
            actor: actor.map(str::to_owned),
            changed_at: now,
        });
        self.counts.add(id.shard(COUNT_SHARDS), from, Some(to));
        log_role_change(id, from, Some(to), source, actor);
    }

    /// Writes everything applied. A message another transaction recorded
    /// since the users were locked fails it with a unique violation.
    pub async fn write<C: Store>(self, conn: &mut C) -> Result<(), DbError> {
        Ok(conn.write_changes(self.into_write()).await?)
    }

    /// Writes everything applied and commits the transaction
    /// [`begin`](Self::begin) began (see [`write`](Self::write)), in one
    /// round trip on PostgreSQL.
    pub async fn commit<C: Store>(self, conn: &mut C) -> Result<(), DbError> {
        Ok(conn.write_and_commit(self.into_write()).await?)
    }

    fn into_write(self) -> WriteSet {
        let Self {
            users,
            audits,
            counts,
            mut messages,
            ..
        } = self;
        let mut write = WriteSet {
            audits,
            counts,
            ..WriteSet::default()
        };
        for (id, entry) in users {
            match (entry.row, entry.changed, entry.in_database) {
                (Some(row), true, true) => write.updated.push(row),
                (Some(row), true, false) => write.created.push(row),
                _ => {}
            }
            if let Some(role) = entry.queue {
                write.queued.push((id.clone(), role));
            }
            if entry.clear_push_error {
                write.cleared_push_errors.push(id);
            }
        }
        // In one order, so two transactions recording the same messages
        // wait on each other without a cycle.
        messages.sort_unstable_by(|a, b| a.svix_id.cmp(&b.svix_id));
        write.messages = messages;
        write
    }
}

/// A push Clerk wrote nothing for (see [`UnitOfWork::fail_push`]).
#[derive(Debug, Clone, Copy)]
pub struct FailedPush<'a> {
    /// The version of the user's push that was sent.
    pub version: i64,
    /// Why it failed, as shown until it lands.
    pub error: &'a str,
    /// When to try again, in ms after the database's clock; `None`: never.
    pub retry_in_ms: Option<i64>,
}

/// What [`UnitOfWork::change_role`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChanged {
    /// The user already had that role: nothing changes.
    Unchanged,
    /// The role changed (`from` is `None` for a user created by the change).
    Changed { from: Option<Role> },
    /// No such user (and none to create).
    NotFound,
    /// The user was deleted in Clerk.
    Deleted,
}

/// Cancels version `version` of `id`'s pending push unless a live claim
/// (other than `owner`'s) is sending it, and reads the outbox row again;
/// whether it did.
async fn cancel_pending<C: Store>(
    conn: &mut C,
    id: &ClerkUserId,
    entry: &mut LockedUser,
    version: i64,
    owner: Option<&str>,
) -> Result<bool, DbError> {
    if !conn.cancel_push(id, version, owner).await? {
        return Ok(false);
    }
    entry.outbox = conn.find_outbox_row(id).await?;
    Ok(true)
}

/// The Clerk state a stored user holds, if any.
fn clerk_state(row: &UserRow) -> Option<ClerkState> {
    match (row.clerk_role, row.clerk_updated_at) {
        (Some(role), Some(updated_at)) => Some(ClerkState { role, updated_at }),
        _ => None,
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
    context: StateContext<'_>,
) -> Result<Outcome, DbError> {
    let mut users = UnitOfWork::take(conn, [id], &[]).await?;
    let outcome = users.apply_state(conn, id, user, context, None).await?;
    users.write(conn).await?;
    Ok(outcome)
}

/// What the rules need to know of a stored user and its pending push.
pub(crate) fn stored_user(
    row: &UserRow,
    pending: Option<&OutboxRow>,
    now: NaiveDateTime,
) -> StoredUser {
    let clerk = clerk_state(row);
    let pending = pending.map(|push| PendingPush {
        role: push.desired_role,
        // A row queued before commit times were kept counts as old.
        committed_at: push
            .queued_at
            .map_or(i64::MIN, |at| at.and_utc().timestamp_millis()),
        seen_at_commit: push.seen_clerk_updated_at,
        in_flight: push.in_flight(now),
        unrecorded: UnrecordedPushes {
            roles: RoleSet::from_bits(push.unrecorded_roles),
            until: push.unrecorded_until,
        },
    });
    StoredUser {
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
