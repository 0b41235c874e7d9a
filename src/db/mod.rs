//! Storage on PostgreSQL (production, shared by replicas) or an embedded
//! SQLite file (the default), behind one [`Db`] handle. Imports nothing of
//! the service but its domain.
//!
//! [`Store`] holds every query: the [`Queries`] that read the same on both
//! backends (declared in `queries.rs`, written once in `queries/shared.rs`,
//! which is compiled for each connection type), the writes of the outbox
//! ([`Outbox`], declared in `outbox.rs`, written once in
//! `queries/outbox.rs`), and the few that differ (`store/`).
//! [`with_conn!`](crate::with_conn) hands a pooled connection of either
//! backend to code that is generic over `Store`. The rows are [`rows`]; the
//! use-cases that compose queries into transactions live in `app/`.

mod columns;
mod outbox;
mod pool;
mod queries;
pub mod rows;
pub mod schema;
mod sqlite_runtime;
mod store;
mod url;

pub use outbox::Outbox;
pub use pool::{Backend, ClosedIfAbandoned, Db, DbError, Pool, SqliteConn};
pub use queries::Queries;
pub use store::{LockedRows, Store, WriteSet};
pub use url::DatabaseUrl;
