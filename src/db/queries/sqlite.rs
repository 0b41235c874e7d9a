//! [`Queries`](super::Queries) on SQLite.

type Conn = crate::db::SqliteConn;

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the queries, for each backend"
)]
#[path = "shared.rs"]
mod shared;
