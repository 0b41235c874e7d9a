//! [`Queries`](super::Queries) on SQLite.

type Conn = crate::db::SqliteConn;

/// None: the claim is one write, and SQLite lets one writer through at a time.
const CLAIM_LOCK: &str = "";

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the queries, for each backend"
)]
#[path = "shared.rs"]
mod shared;
