//! The one place where PostgreSQL and SQLite need different SQL.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::SqliteConn;
use super::schema::users;
use super::users::UserRow;

/// Backend-specific statements, used by [`super::Store`] code.
pub trait Dialect {
    /// Loads a user (deleted ones too) and holds its row until the
    /// transaction ends, so concurrent changes to one user serialize.
    fn lock_user(&mut self, id: &str) -> impl Future<Output = QueryResult<Option<UserRow>>> + Send;
}

impl Dialect for AsyncPgConnection {
    async fn lock_user(&mut self, id: &str) -> QueryResult<Option<UserRow>> {
        users::table
            .find(id)
            .select(UserRow::as_select())
            .for_update()
            .first(self)
            .await
            .optional()
    }
}

impl Dialect for SqliteConn {
    async fn lock_user(&mut self, id: &str) -> QueryResult<Option<UserRow>> {
        // SQLite has no row locks. A write as the transaction's first statement
        // takes the database's write lock (waiting out `busy_timeout`), which
        // serializes writers across processes just as FOR UPDATE would; a read
        // first would instead fail with SQLITE_BUSY when it tried to upgrade.
        diesel::update(users::table.find(id))
            .set(users::id.eq(users::id))
            .execute(self)
            .await?;
        users::table
            .find(id)
            .select(UserRow::as_select())
            .first(self)
            .await
            .optional()
    }
}
