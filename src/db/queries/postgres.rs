//! [`Queries`](super::Queries) on PostgreSQL.

type Conn = diesel_async::AsyncPgConnection;

/// Rows another replica is claiming at the same moment are skipped, not
/// waited for.
const CLAIM_LOCK: &str = "FOR UPDATE SKIP LOCKED";

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the queries, for each backend"
)]
#[path = "shared.rs"]
mod shared;
