//! Everything a transaction that applied Clerk states writes, decided before
//! anything is written: the users as they end, the outbox rows that lose a
//! superseded error, the audit rows, the counter moves and the Svix
//! messages with their outcomes.
//!
//! Decided up front, it is written in a few set-based statements whatever
//! the number of users: on PostgreSQL each statement takes its rows as
//! arrays (`unnest`), so its text never varies and it is prepared once per
//! connection ([`pg`]); SQLite, in-process, writes it row by row in the
//! same transaction.

use super::rows::{NewRoleChange, NewWebhookEvent, UserRow};
use crate::domain::{ClerkUserId, CountDeltas};

/// What applying a batch of Clerk states writes, in the order it is written
/// (the order every transaction takes its locks in: users, then the outbox
/// rows of those users, then counters by role name and shard). Outbox rows
/// that go (users deleted in Clerk) or whose push is cancelled are written
/// as the states are judged, in id order, before this.
#[derive(Debug, Default)]
pub struct StatesWrite {
    /// Users new to the database, as they end (tombstones included).
    pub created: Vec<UserRow>,
    /// Users already here, as they end.
    pub updated: Vec<UserRow>,
    /// Users whose push Clerk refused for good, now superseded by Clerk's
    /// state: the error is cleared. In id order.
    pub cleared_sync_errors: Vec<ClerkUserId>,
    /// One audit row per role change, in the order the changes were made.
    pub audits: Vec<NewRoleChange>,
    pub counts: CountDeltas,
    /// The Svix messages applied, with their outcomes, by svix id. A message
    /// recorded meanwhile by another transaction is skipped (the caller
    /// compares the count written with the count given).
    pub messages: Vec<NewWebhookEvent>,
}

/// The set-based statements of [`StatesWrite`] on PostgreSQL.
pub mod pg {
    use chrono::NaiveDateTime;
    use diesel::QueryResult;
    use diesel::pg::Pg;
    use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
    use diesel::sql_types::{Array, BigInt, Bool, Nullable, SmallInt, Text, Timestamp};

    use super::StatesWrite;
    use crate::db::rows::UserRow;
    use crate::domain::{ClerkUserId, Role, RoleSource};

    /// A statement whose text never varies: prepared once per connection.
    macro_rules! static_statement {
        ($($name:ident),+) => {$(
            impl QueryId for $name<'_> {
                type QueryId = $name<'static>;
                const HAS_STATIC_QUERY_ID: bool = true;
            }
        )+};
    }
    static_statement!(
        InsertUsers,
        UpdateUsers,
        InsertAudits,
        LockCounts,
        MoveCounts,
        RecordMessages
    );

    /// Users as columns: `id, email, first_name, last_name, image_url, role,
    /// clerk_updated_at, clerk_role, clerk_from_push, created_at,
    /// updated_at, deleted_at`.
    struct UserColumns<'a> {
        id: Vec<&'a str>,
        email: Vec<Option<&'a str>>,
        first_name: Vec<Option<&'a str>>,
        last_name: Vec<Option<&'a str>>,
        image_url: Vec<Option<&'a str>>,
        role: Vec<Role>,
        clerk_updated_at: Vec<Option<i64>>,
        clerk_role: Vec<Option<Role>>,
        clerk_from_push: Vec<bool>,
        created_at: Vec<NaiveDateTime>,
        updated_at: Vec<NaiveDateTime>,
        deleted_at: Vec<Option<NaiveDateTime>>,
    }

    impl<'a> UserColumns<'a> {
        fn of(rows: &'a [UserRow]) -> Self {
            Self {
                id: rows.iter().map(|r| r.id.as_str()).collect(),
                email: rows.iter().map(|r| r.email.as_deref()).collect(),
                first_name: rows.iter().map(|r| r.first_name.as_deref()).collect(),
                last_name: rows.iter().map(|r| r.last_name.as_deref()).collect(),
                image_url: rows.iter().map(|r| r.image_url.as_deref()).collect(),
                role: rows.iter().map(|r| r.role).collect(),
                clerk_updated_at: rows.iter().map(|r| r.clerk_updated_at).collect(),
                clerk_role: rows.iter().map(|r| r.clerk_role).collect(),
                clerk_from_push: rows.iter().map(|r| r.clerk_from_push).collect(),
                created_at: rows.iter().map(|r| r.created_at).collect(),
                updated_at: rows.iter().map(|r| r.updated_at).collect(),
                deleted_at: rows.iter().map(|r| r.deleted_at).collect(),
            }
        }

        /// `unnest($1, …, $12)`, the columns in the order above.
        fn walk_unnest<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql("unnest(");
            out.push_bind_param::<Array<Text>, _>(&self.id)?;
            for text in [
                &self.email,
                &self.first_name,
                &self.last_name,
                &self.image_url,
            ] {
                out.push_sql(", ");
                out.push_bind_param::<Array<Nullable<Text>>, _>(text)?;
            }
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.clerk_updated_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&self.clerk_role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Bool>, _>(&self.clerk_from_push)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamp>, _>(&self.created_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamp>, _>(&self.updated_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.deleted_at)?;
            out.push_sql(")");
            Ok(())
        }
    }

    const USER_COLUMNS: &str = "id, email, first_name, last_name, image_url, role, \
        clerk_updated_at, clerk_role, clerk_from_push, created_at, updated_at, deleted_at";

    /// Inserts the users new to the database.
    pub struct InsertUsers<'a>(UserColumns<'a>);

    /// Writes the users already here, whole.
    pub struct UpdateUsers<'a>(UserColumns<'a>);

    /// Appends the audit rows, in order.
    pub struct InsertAudits<'a> {
        user_id: Vec<&'a str>,
        old_role: Vec<Option<Role>>,
        new_role: Vec<Role>,
        source: Vec<RoleSource>,
        actor: Vec<Option<&'a str>>,
        changed_at: Vec<NaiveDateTime>,
    }

    /// Locks the counter rows about to move, in lock order (a single
    /// `UPDATE` would take them in whatever order its plan reads them).
    pub struct LockCounts<'a> {
        role: &'a [Role],
        shard: &'a [i16],
    }

    /// Moves the counters locked by [`LockCounts`].
    pub struct MoveCounts<'a> {
        role: &'a [Role],
        shard: &'a [i16],
        delta: &'a [i64],
    }

    /// Records the messages, skipping any another transaction recorded.
    pub struct RecordMessages<'a> {
        svix_id: Vec<&'a str>,
        event_type: Vec<&'a str>,
        user_id: Vec<Option<&'a str>>,
        outcome: Vec<&'a str>,
        received_at: Vec<NaiveDateTime>,
    }

    /// The counter moves of a write as columns, in lock order.
    pub struct CountColumns {
        role: Vec<Role>,
        shard: Vec<i16>,
        delta: Vec<i64>,
    }

    /// The statements of `write` that have rows to write, in the order they
    /// must run.
    pub struct Statements<'a> {
        pub insert_users: Option<InsertUsers<'a>>,
        pub update_users: Option<UpdateUsers<'a>>,
        pub insert_audits: Option<InsertAudits<'a>>,
        pub counts: Option<CountColumns>,
        pub record_messages: Option<RecordMessages<'a>>,
    }

    impl<'a> Statements<'a> {
        pub fn of(write: &'a StatesWrite) -> Self {
            let audits = &write.audits;
            let messages = &write.messages;
            let counts: Vec<_> = write.counts.in_lock_order().collect();
            Self {
                insert_users: (!write.created.is_empty())
                    .then(|| InsertUsers(UserColumns::of(&write.created))),
                update_users: (!write.updated.is_empty())
                    .then(|| UpdateUsers(UserColumns::of(&write.updated))),
                insert_audits: (!audits.is_empty()).then(|| InsertAudits {
                    user_id: audits.iter().map(|a| a.user_id.as_str()).collect(),
                    old_role: audits.iter().map(|a| a.old_role).collect(),
                    new_role: audits.iter().map(|a| a.new_role).collect(),
                    source: audits.iter().map(|a| a.source).collect(),
                    actor: audits.iter().map(|a| a.actor.as_deref()).collect(),
                    changed_at: audits.iter().map(|a| a.changed_at).collect(),
                }),
                counts: (!counts.is_empty()).then(|| CountColumns {
                    role: counts.iter().map(|c| c.0).collect(),
                    shard: counts.iter().map(|c| c.1).collect(),
                    delta: counts.iter().map(|c| c.2).collect(),
                }),
                record_messages: (!messages.is_empty()).then(|| RecordMessages {
                    svix_id: messages.iter().map(|m| m.svix_id.as_str()).collect(),
                    event_type: messages.iter().map(|m| m.event_type.as_str()).collect(),
                    user_id: messages
                        .iter()
                        .map(|m| m.user_id.as_ref().map(ClerkUserId::as_str))
                        .collect(),
                    outcome: messages.iter().map(|m| m.outcome).collect(),
                    received_at: messages.iter().map(|m| m.received_at).collect(),
                }),
            }
        }
    }

    impl CountColumns {
        pub fn lock(&self) -> LockCounts<'_> {
            LockCounts {
                role: &self.role,
                shard: &self.shard,
            }
        }

        pub fn apply(&self) -> MoveCounts<'_> {
            MoveCounts {
                role: &self.role,
                shard: &self.shard,
                delta: &self.delta,
            }
        }
    }

    impl QueryFragment<Pg> for InsertUsers<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql("INSERT INTO users (");
            out.push_sql(USER_COLUMNS);
            out.push_sql(") SELECT * FROM ");
            self.0.walk_unnest(&mut out)
        }
    }

    impl QueryFragment<Pg> for UpdateUsers<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql(
                "UPDATE users SET email = v.email, first_name = v.first_name, \
                 last_name = v.last_name, image_url = v.image_url, role = v.role, \
                 clerk_updated_at = v.clerk_updated_at, clerk_role = v.clerk_role, \
                 clerk_from_push = v.clerk_from_push, created_at = v.created_at, \
                 updated_at = v.updated_at, deleted_at = v.deleted_at FROM ",
            );
            self.0.walk_unnest(&mut out)?;
            out.push_sql(" AS v (");
            out.push_sql(USER_COLUMNS);
            out.push_sql(") WHERE users.id = v.id");
            Ok(())
        }
    }

    impl QueryFragment<Pg> for InsertAudits<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql(
                "INSERT INTO role_changes (user_id, old_role, new_role, source, actor, changed_at) \
                 SELECT user_id, old_role, new_role, source, actor, changed_at FROM unnest(",
            );
            out.push_bind_param::<Array<Text>, _>(&self.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&self.old_role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.new_role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.source)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&self.actor)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamp>, _>(&self.changed_at)?;
            // In the order the changes were made: a user's history is read
            // newest first by id.
            out.push_sql(
                ") WITH ORDINALITY AS v (user_id, old_role, new_role, source, actor, changed_at, n) \
                 ORDER BY n",
            );
            Ok(())
        }
    }

    impl QueryFragment<Pg> for LockCounts<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql("SELECT role_counts.count FROM role_counts JOIN unnest(");
            out.push_bind_param::<Array<Text>, _>(&self.role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<SmallInt>, _>(&self.shard)?;
            out.push_sql(
                ") AS v (role, shard) ON role_counts.role = v.role AND role_counts.shard = v.shard \
                 ORDER BY role_counts.role, role_counts.shard FOR UPDATE OF role_counts",
            );
            Ok(())
        }
    }

    impl QueryFragment<Pg> for MoveCounts<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql("UPDATE role_counts SET count = count + v.delta FROM unnest(");
            out.push_bind_param::<Array<Text>, _>(&self.role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<SmallInt>, _>(&self.shard)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<BigInt>, _>(&self.delta)?;
            out.push_sql(
                ") AS v (role, shard, delta) \
                 WHERE role_counts.role = v.role AND role_counts.shard = v.shard",
            );
            Ok(())
        }
    }

    impl QueryFragment<Pg> for RecordMessages<'_> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql(
                "INSERT INTO webhook_events (svix_id, event_type, user_id, outcome, received_at) \
                 SELECT * FROM unnest(",
            );
            out.push_bind_param::<Array<Text>, _>(&self.svix_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.event_type)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&self.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.outcome)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamp>, _>(&self.received_at)?;
            out.push_sql(") ON CONFLICT DO NOTHING");
            Ok(())
        }
    }

    impl Query for LockCounts<'_> {
        type SqlType = BigInt;
    }
}
