//! [`Queries`](super::Queries) and [`Outbox`](crate::db::Outbox) on SQLite:
//! the connection type, the clock and the claim's lock clause the shared
//! bodies are compiled with.

type Conn = crate::db::SqliteConn;

/// None: the claim is one write, and SQLite lets one writer through at a time.
const CLAIM_LOCK: &str = "";

/// SQLite's clock, in the text format diesel stores a `Timestamp` in
/// (`%F %T%.f`, UTC): text of the two compares in time order.
pub(in crate::db) const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// SQLite's clock: each statement reads it once.
pub(in crate::db) const CLOCK: &str = NOW;

/// [`NOW`] in ms since the Unix epoch, as `unrecorded_until` holds time.
/// (`julianday` is SQLite's ms count divided by 86,400,000: rounded, not
/// truncated, it gives that count back exactly.)
const NOW_MS: &str = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// [`NOW`] in µs since the Unix epoch, as the Clerk budget holds time
/// (SQLite's clock counts ms).
const NOW_US: &str = "(CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)";

/// The statement's own time in µs: SQLite reads its clock once a statement.
const STATEMENT_US: &str = NOW_US;

/// The larger of its arguments (SQLite's scalar `max`).
const GREATEST: &str = "max";

/// The smaller of its arguments (SQLite's scalar `min`).
const LEAST: &str = "min";

/// SQLite's clock plus `millis` (a placeholder or literal of milliseconds).
fn now_plus(millis: &str) -> String {
    format!("strftime('%Y-%m-%d %H:%M:%f', 'now', ({millis} / 1000.0) || ' seconds')")
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
