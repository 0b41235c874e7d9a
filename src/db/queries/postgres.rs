//! [`Queries`](super::Queries) on PostgreSQL.

type Conn = diesel_async::AsyncPgConnection;

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the queries, for each backend"
)]
#[path = "shared.rs"]
mod shared;
