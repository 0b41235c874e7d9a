//! [`Queries`](super::Queries) and [`Outbox`](crate::db::Outbox) on
//! PostgreSQL: the connection type, the clock and the claim's lock clause
//! the shared bodies are compiled with.

type Conn = diesel_async::AsyncPgConnection;

/// Rows another replica is claiming at the same moment are skipped, not
/// waited for.
const CLAIM_LOCK: &str = "FOR UPDATE SKIP LOCKED";

/// The database's clock, as the `TIMESTAMP` (UTC) columns store time: the
/// start of the statement's transaction.
pub(in crate::db) const NOW: &str = "(now() AT TIME ZONE 'UTC')";

/// The database's clock as it runs on, whatever the transaction: for a
/// reading of "now" rather than a statement's own time.
pub(in crate::db) const CLOCK: &str = "(clock_timestamp() AT TIME ZONE 'UTC')";

/// [`NOW`] in ms since the Unix epoch, as `unrecorded_until` holds time.
const NOW_MS: &str = "(extract(epoch FROM now()) * 1000)::bigint";

/// The database's clock as it runs on ([`CLOCK`]) in µs since the Unix
/// epoch, as the Clerk budget holds time: read once the budget's row is
/// locked, not when the statement's transaction began.
const NOW_US: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

/// The statement's own time in µs since the Unix epoch: the same wherever
/// the statement reads it, before a lock wait and after (unlike
/// [`NOW_US`]).
const STATEMENT_US: &str = "(extract(epoch FROM now()) * 1000000)::bigint";

/// The larger of its arguments.
const GREATEST: &str = "GREATEST";

/// The smaller of its arguments.
const LEAST: &str = "LEAST";

/// The database's clock plus `millis` (a placeholder or literal of
/// milliseconds).
fn now_plus(millis: &str) -> String {
    format!("({NOW} + {millis} * interval '1 millisecond')")
}

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the queries, for each backend"
)]
#[path = "shared.rs"]
mod shared;

#[expect(
    clippy::duplicate_mod,
    reason = "the one body of the outbox's writes, for each backend"
)]
#[path = "outbox.rs"]
mod outbox;
