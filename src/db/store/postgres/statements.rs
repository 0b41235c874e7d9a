//! The statements of a transaction that changes users on PostgreSQL, each
//! prepared once per connection: BEGIN, the locking reads, the clock,
//! the set-based writes of a [`WriteSet`] and COMMIT.

use chrono::NaiveDateTime;
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, SmallInt, Text, Timestamp};

use diesel::SelectableHelper as _;
use diesel::dsl::AsSelect;
use diesel::expression::Expression;

use crate::db::WriteSet;
use crate::db::rows::{OutboxRow, UserRow};
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
static_statement!(LockUsers, OutboxOf, Recorded, WriteUsers);

/// A statement without parameters whose text never varies: prepared
/// once per connection.
macro_rules! constant_statement {
    ($($(#[$doc:meta])* $name:ident = $sql:literal;)+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, QueryId)]
        pub struct $name;

        impl QueryFragment<Pg> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    )+};
}

constant_statement! {
    /// Begins a transaction. Prepared, unlike diesel's own BEGIN (a simple
    /// query), it takes its turn at the connection's statement cache in
    /// the order polled, like the statements pipelined with it.
    Begin = "BEGIN";
    /// Commits, or rolls back a transaction a failed statement aborted.
    Commit = "COMMIT";
    Rollback = "ROLLBACK";
}

/// The database's clock as it runs on (see `Queries::clock`): a
/// statement of its own, prepared once per connection.
#[derive(Debug, Clone, Copy, QueryId)]
pub struct Clock;

impl QueryFragment<Pg> for Clock {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ");
        out.push_sql(crate::db::queries::postgres::CLOCK);
        Ok(())
    }
}

impl Query for Clock {
    type SqlType = Timestamp;
}

impl QueryId for MoveCounts {
    type QueryId = MoveCounts;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// Users as columns: `id, email, first_name, last_name, image_url, role,
/// clerk_updated_at, clerk_role, clerk_from_push, created_at,
/// updated_at, deleted_at, deletion_final`.
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
    deletion_final: Vec<bool>,
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
            deletion_final: rows.iter().map(|r| r.deletion_final).collect(),
        }
    }

    /// `unnest($1, …, $13)`, the columns in the order above.
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
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.deletion_final)?;
        out.push_sql(")");
        Ok(())
    }
}

const USER_COLUMNS: &str = "id, email, first_name, last_name, image_url, role, \
    clerk_updated_at, clerk_role, clerk_from_push, created_at, updated_at, deleted_at, \
    deletion_final";

/// Users by id, each locked until the transaction ends, in the order
/// given (sorted: the order every transaction takes user rows in).
pub struct LockUsers<'a>(&'a [&'a str], AsSelect<UserRow, Pg>);

/// The outbox rows of users by id.
pub struct OutboxOf<'a>(&'a [&'a str], AsSelect<OutboxRow, Pg>);

/// Which of these Svix message ids are recorded.
pub struct Recorded<'a>(&'a [&'a str]);

impl<'a> LockUsers<'a> {
    pub fn new(ids: &'a [&'a str]) -> Self {
        Self(ids, UserRow::as_select())
    }
}

impl<'a> OutboxOf<'a> {
    pub fn new(ids: &'a [&'a str]) -> Self {
        Self(ids, OutboxRow::as_select())
    }
}

impl<'a> Recorded<'a> {
    pub fn new(svix_ids: &'a [&'a str]) -> Self {
        Self(svix_ids)
    }
}

/// `SELECT found.* FROM unnest(keys) CROSS JOIN LATERAL (lookup) AS
/// found`, where `lookup` finds the rows of one key, `v.key`.
///
/// One index lookup per key, whatever the plan cache holds: a plain
/// `= ANY(keys)` or a join would be planned for the table's size when
/// the plan was cached, and a plan cached while a table was small (a
/// fresh database, before ANALYZE) reads it whole, however few keys a
/// batch has.
fn walk_by_key<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    keys: &'b &'b [&'b str],
    lookup: impl FnOnce(&mut AstPass<'_, 'b, Pg>) -> QueryResult<()>,
) -> QueryResult<()> {
    out.push_sql("SELECT found.* FROM unnest(");
    out.push_bind_param::<Array<Text>, _>(keys)?;
    out.push_sql(") AS v (key) CROSS JOIN LATERAL (");
    lookup(out)?;
    out.push_sql(") AS found");
    Ok(())
}

impl QueryFragment<Pg> for LockUsers<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        walk_by_key(&mut out, &self.0, |out| {
            out.push_sql("SELECT ");
            self.1.walk_ast(out.reborrow())?;
            out.push_sql(" FROM users WHERE users.id = v.key FOR UPDATE");
            Ok(())
        })
    }
}

impl QueryFragment<Pg> for OutboxOf<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        walk_by_key(&mut out, &self.0, |out| {
            out.push_sql("SELECT ");
            self.1.walk_ast(out.reborrow())?;
            // OFFSET 0: looked up per key, not joined.
            out.push_sql(" FROM clerk_sync WHERE clerk_sync.user_id = v.key OFFSET 0");
            Ok(())
        })
    }
}

impl QueryFragment<Pg> for Recorded<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        walk_by_key(&mut out, &self.0, |out| {
            out.push_sql(
                "SELECT svix_id FROM webhook_events \
                 WHERE webhook_events.svix_id = v.key OFFSET 0",
            );
            Ok(())
        })
    }
}

impl Query for LockUsers<'_> {
    type SqlType = <AsSelect<UserRow, Pg> as Expression>::SqlType;
}

impl Query for OutboxOf<'_> {
    type SqlType = <AsSelect<OutboxRow, Pg> as Expression>::SqlType;
}

impl Query for Recorded<'_> {
    type SqlType = Text;
}

/// The users' writes as one statement: the users already here written
/// whole, the new ones inserted, the audit rows appended in the order
/// the changes were made, and the Svix messages recorded (one another
/// transaction recorded meanwhile fails it with a unique violation).
///
/// A user already here is found by its id (an index lookup per user,
/// like the reads of [`walk_by_key`]), then by the row version that
/// lookup found: the transaction holds the user's lock, so that version
/// is the live one. (A join on the id would be planned for the table's
/// size when the plan was cached.)
pub struct WriteUsers<'a> {
    updated: UserColumns<'a>,
    created: UserColumns<'a>,
    audits: AuditColumns<'a>,
    messages: MessageColumns<'a>,
}

struct AuditColumns<'a> {
    user_id: Vec<&'a str>,
    old_role: Vec<Option<Role>>,
    new_role: Vec<Option<Role>>,
    source: Vec<RoleSource>,
    actor: Vec<Option<&'a str>>,
    changed_at: Vec<NaiveDateTime>,
}

/// Moves the counters: locks the rows in lock order (role name, then
/// shard; a plain `UPDATE` would take them in whatever order its plan
/// reads them), then adds each delta. Every row is updated only once
/// the rows before it in that order are locked.
pub struct MoveCounts {
    role: Vec<Role>,
    shard: Vec<i16>,
    delta: Vec<i64>,
}

struct MessageColumns<'a> {
    svix_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    user_id: Vec<Option<&'a str>>,
    outcome: Vec<&'a str>,
    received_at: Vec<NaiveDateTime>,
    clerk_updated_at: Vec<Option<i64>>,
}

/// The statements of a write that have rows to write, in the order they
/// must run.
pub struct Statements<'a> {
    pub users: Option<WriteUsers<'a>>,
    pub counts: Option<MoveCounts>,
}

impl<'a> Statements<'a> {
    pub fn of(write: &'a WriteSet) -> Self {
        let audits = &write.audits;
        let messages = &write.messages;
        let counts: Vec<_> = write.counts.in_lock_order().collect();
        let has_users = !(write.created.is_empty()
            && write.updated.is_empty()
            && audits.is_empty()
            && messages.is_empty());
        Self {
            users: has_users.then(|| WriteUsers {
                updated: UserColumns::of(&write.updated),
                created: UserColumns::of(&write.created),
                audits: AuditColumns {
                    user_id: audits.iter().map(|a| a.user_id.as_str()).collect(),
                    old_role: audits.iter().map(|a| a.old_role).collect(),
                    new_role: audits.iter().map(|a| a.new_role).collect(),
                    source: audits.iter().map(|a| a.source).collect(),
                    actor: audits.iter().map(|a| a.actor.as_deref()).collect(),
                    changed_at: audits.iter().map(|a| a.changed_at).collect(),
                },
                messages: MessageColumns {
                    svix_id: messages.iter().map(|m| m.svix_id.as_str()).collect(),
                    event_type: messages.iter().map(|m| m.event_type.as_str()).collect(),
                    user_id: messages
                        .iter()
                        .map(|m| m.user_id.as_ref().map(ClerkUserId::as_str))
                        .collect(),
                    outcome: messages.iter().map(|m| m.outcome).collect(),
                    received_at: messages.iter().map(|m| m.received_at).collect(),
                    clerk_updated_at: messages.iter().map(|m| m.clerk_updated_at).collect(),
                },
            }),
            counts: (!counts.is_empty()).then(|| MoveCounts {
                role: counts.iter().map(|c| c.0).collect(),
                shard: counts.iter().map(|c| c.1).collect(),
                delta: counts.iter().map(|c| c.2).collect(),
            }),
        }
    }
}

impl QueryFragment<Pg> for WriteUsers<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH updated AS (UPDATE users SET email = v.email, first_name = v.first_name, \
             last_name = v.last_name, image_url = v.image_url, role = v.role, \
             clerk_updated_at = v.clerk_updated_at, clerk_role = v.clerk_role, \
             clerk_from_push = v.clerk_from_push, created_at = v.created_at, \
             updated_at = v.updated_at, deleted_at = v.deleted_at, \
             deletion_final = v.deletion_final FROM ",
        );
        self.updated.walk_unnest(&mut out)?;
        out.push_sql(" AS v (");
        out.push_sql(USER_COLUMNS);
        out.push_sql(
            ") CROSS JOIN LATERAL (SELECT ctid AS row_version FROM users AS live \
             WHERE live.id = v.id OFFSET 0) AS found \
             WHERE users.ctid = found.row_version), \
             created AS (INSERT INTO users (",
        );
        out.push_sql(USER_COLUMNS);
        out.push_sql(") SELECT * FROM ");
        self.created.walk_unnest(&mut out)?;
        // In the order the changes were made: a user's history is read
        // newest first by id. (Foreign keys are checked at the end of the
        // statement, once the new users are in.)
        out.push_sql(
            "), audited AS (INSERT INTO role_changes \
             (user_id, old_role, new_role, source, actor, changed_at) \
             SELECT user_id, old_role, new_role, source, actor, changed_at FROM unnest(",
        );
        let a = &self.audits;
        out.push_bind_param::<Array<Text>, _>(&a.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&a.old_role)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&a.new_role)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&a.source)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&a.actor)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp>, _>(&a.changed_at)?;
        out.push_sql(
            ") WITH ORDINALITY AS v (user_id, old_role, new_role, source, actor, changed_at, n) \
             ORDER BY n) INSERT INTO webhook_events \
             (svix_id, event_type, user_id, outcome, received_at, clerk_updated_at) \
             SELECT * FROM unnest(",
        );
        let m = &self.messages;
        out.push_bind_param::<Array<Text>, _>(&m.svix_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&m.event_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&m.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&m.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp>, _>(&m.received_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&m.clerk_updated_at)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryFragment<Pg> for MoveCounts {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH locked AS MATERIALIZED (SELECT role_counts.role, role_counts.shard, v.delta \
             FROM role_counts JOIN unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.role)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SmallInt>, _>(&self.shard)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.delta)?;
        out.push_sql(
            ") AS v (role, shard, delta) \
             ON role_counts.role = v.role AND role_counts.shard = v.shard \
             ORDER BY role_counts.role, role_counts.shard FOR UPDATE OF role_counts) \
             UPDATE role_counts SET count = count + locked.delta FROM locked \
             WHERE role_counts.role = locked.role AND role_counts.shard = locked.shard",
        );
        Ok(())
    }
}
