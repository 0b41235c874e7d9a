//! Everything that applying one Clerk state writes, decided before anything
//! is written: the Svix message it came in, the user's Clerk-side columns,
//! and, when the role moves, the audit row and the role counters.
//!
//! Decided up front, it can be written as one statement on PostgreSQL (one
//! database round trip, which is what makes webhook ingest fast); SQLite,
//! in-process, writes it step by step.

use chrono::NaiveDateTime;
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Nullable, SmallInt, Text, Timestamp};

use super::rows::{COUNT_SHARDS, ClerkChanges, NewWebhookEvent};
use crate::domain::{ClerkUserId, Role, RoleSource, count_deltas};

/// One Clerk state to write.
pub struct ClerkWrite<'a> {
    /// The message that brought it: when its Svix id is already recorded,
    /// nothing at all is written.
    pub message: Option<NewWebhookEvent<'a>>,
    pub id: &'a ClerkUserId,
    /// The Clerk-side columns (`updated_at` is also the time of the write).
    pub changes: ClerkChanges<'a>,
    /// Insert the user rather than update it.
    pub is_new: bool,
    /// Clear the error of a push Clerk refused for good: Clerk's state
    /// supersedes it.
    pub clear_sync_error: bool,
    /// The role move, when the role changes.
    pub role_move: Option<RoleMove<'a>>,
}

/// A change of role, with who made it.
pub struct RoleMove<'a> {
    /// `None` for a new user.
    pub from: Option<Role>,
    pub to: Role,
    pub source: RoleSource,
    pub actor: &'a str,
}

/// [`ClerkWrite`] as one PostgreSQL statement, answering whether it wrote.
///
/// The message is inserted first (`ON CONFLICT DO NOTHING`) and every other
/// write is conditioned on that insert, so a known message writes nothing.
/// Counters are updated in role-name order, the second after the first.
/// The statement text never varies, so it is prepared once per connection.
pub struct OneStatement<'a> {
    svix_id: Option<&'a str>,
    event_type: Option<&'a str>,
    outcome: Option<&'a str>,
    received_at: Option<NaiveDateTime>,
    id: &'a str,
    changes: &'a ClerkChanges<'a>,
    is_new: bool,
    clear_sync_error: bool,
    audit: bool,
    old_role: Option<&'static str>,
    source: &'static str,
    actor: Option<&'a str>,
    shard: i16,
    first: CounterDelta,
    second: CounterDelta,
}

/// `None` role: no counter to move.
struct CounterDelta {
    role: Option<&'static str>,
    delta: i64,
}

impl<'a> OneStatement<'a> {
    pub fn new(write: &'a ClerkWrite<'a>) -> Self {
        let role_move = write.role_move.as_ref();
        let mut deltas = role_move
            .map(|m| count_deltas(m.from, Some(m.to)))
            .unwrap_or_default()
            .into_iter()
            .map(|(role, delta)| CounterDelta {
                role: Some(role.as_str()),
                delta,
            });
        let none = || CounterDelta {
            role: None,
            delta: 0,
        };
        Self {
            svix_id: write.message.as_ref().map(|m| m.svix_id),
            event_type: write.message.as_ref().map(|m| m.event_type),
            outcome: write.message.as_ref().map(|m| m.outcome),
            received_at: write.message.as_ref().map(|m| m.received_at),
            id: write.id.as_str(),
            changes: &write.changes,
            is_new: write.is_new,
            clear_sync_error: write.clear_sync_error,
            audit: role_move.is_some(),
            old_role: role_move.and_then(|m| m.from).map(Role::as_str),
            source: role_move.map_or("", |m| m.source.as_str()),
            actor: role_move.map(|m| m.actor),
            shard: write.id.shard(COUNT_SHARDS),
            first: deltas.next().unwrap_or_else(none),
            second: deltas.next().unwrap_or_else(none),
        }
    }
}

impl QueryId for OneStatement<'_> {
    type QueryId = OneStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for OneStatement<'_> {
    type SqlType = Bool;
}

impl QueryFragment<Pg> for OneStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = self.changes;
        out.push_sql(
            "WITH message AS (INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at) SELECT ",
        );
        out.push_bind_param::<Nullable<Text>, _>(&self.svix_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.event_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Timestamp>, _>(&self.received_at)?;
        out.push_sql(" WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&self.svix_id)?;
        out.push_sql(" IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1), go AS (SELECT 1 WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&self.svix_id)?;
        out.push_sql(
            " IS NULL OR EXISTS (SELECT 1 FROM message)), \
             inserted AS (INSERT INTO users (id, email, first_name, last_name, image_url, role, \
             clerk_updated_at, clerk_role, clerk_from_push, created_at, updated_at) SELECT ",
        );
        self.bind_user_values(&mut out)?;
        out.push_sql(" FROM go WHERE ");
        out.push_bind_param::<Bool, _>(&self.is_new)?;
        out.push_sql("), updated AS (UPDATE users SET (id, email, first_name, last_name, image_url, role, clerk_updated_at, clerk_role, clerk_from_push, created_at, updated_at) = (");
        self.bind_user_values(&mut out)?;
        out.push_sql(") WHERE id = ");
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(" AND NOT ");
        out.push_bind_param::<Bool, _>(&self.is_new)?;
        out.push_sql(
            " AND EXISTS (SELECT 1 FROM go)), \
             cleared AS (UPDATE clerk_sync SET last_error = NULL WHERE user_id = ",
        );
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(" AND next_attempt_at IS NULL AND ");
        out.push_bind_param::<Bool, _>(&self.clear_sync_error)?;
        out.push_sql(
            " AND EXISTS (SELECT 1 FROM go)), \
             audited AS (INSERT INTO role_changes (user_id, old_role, new_role, source, actor, changed_at) SELECT ",
        );
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.old_role)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&c.role)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.source)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.actor)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&c.updated_at)?;
        out.push_sql(" FROM go WHERE ");
        out.push_bind_param::<Bool, _>(&self.audit)?;
        out.push_sql("), first_count AS (");
        self.count(&mut out, &self.first, "go")?;
        out.push_sql(" RETURNING 1), second_count AS (");
        self.count(&mut out, &self.second, "first_count")?;
        out.push_sql(") SELECT EXISTS (SELECT 1 FROM go)");
        Ok(())
    }
}

impl<'a> OneStatement<'a> {
    /// `id, email, first_name, last_name, image_url, role, clerk_updated_at,
    /// clerk_role, clerk_from_push, created_at, updated_at`.
    fn bind_user_values<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = self.changes;
        out.push_bind_param::<Text, _>(&self.id)?;
        for value in [&c.email, &c.first_name, &c.last_name, &c.image_url] {
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(value)?;
        }
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&c.role)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&c.clerk_updated_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&c.clerk_role)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&c.clerk_from_push)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&c.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&c.updated_at)
    }

    /// Moves one counter, when the CTE `after` has a row.
    fn count<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        counter: &'b CounterDelta,
        after: &'static str,
    ) -> QueryResult<()> {
        out.push_sql("UPDATE role_counts SET count = count + ");
        out.push_bind_param::<BigInt, _>(&counter.delta)?;
        out.push_sql(" WHERE role = ");
        out.push_bind_param::<Nullable<Text>, _>(&counter.role)?;
        out.push_sql(" AND shard = ");
        out.push_bind_param::<SmallInt, _>(&self.shard)?;
        out.push_sql(" AND EXISTS (SELECT 1 FROM ");
        out.push_sql(after);
        out.push_sql(")");
        Ok(())
    }
}
