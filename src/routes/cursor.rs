//! Keyset pagination's cursors: a position in a list (after the last row
//! of a page), handed to clients as opaque text and read back when they
//! pass it as `cursor`. One codec a list, all refusing alike (400, "invalid
//! cursor") whatever does not decode or names a position the database
//! cannot hold.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike as _, NaiveDateTime};

use crate::domain::ClerkUserId;
use crate::error::ApiError;

/// How one list's positions are written in its cursors (before base64):
/// `read` gives back what `write` wrote, and nothing for anything else.
pub struct CursorCodec<P> {
    write: fn(&P) -> String,
    read: fn(&str) -> Option<P>,
}

impl<P> CursorCodec<P> {
    /// The cursor of `position`.
    pub fn encode(&self, position: &P) -> String {
        URL_SAFE_NO_PAD.encode((self.write)(position))
    }

    /// The position a cursor names; `None` for an absent or empty one (the
    /// first page, as frontends send `cursor=`).
    pub fn decode(&self, cursor: Option<&str>) -> Result<Option<P>, ApiError> {
        let cursor = match cursor.map(str::trim) {
            None | Some("") => return Ok(None),
            Some(cursor) => cursor,
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| (self.read)(&text))
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
    }
}

/// The user list's: the `(created_at, id)` of a page's last user, as
/// `{micros}:{id}`.
pub const USERS: CursorCodec<(NaiveDateTime, String)> = CursorCodec {
    write: |(created_at, id)| format!("{}:{id}", micros(*created_at)),
    read: |text| {
        let (at, id) = text.split_once(':')?;
        let id = ClerkUserId::parse(id).ok()?;
        Some((time(at)?, id.to_string()))
    },
};

/// A role history's: the id of a page's last row, as `h:{id}`.
pub const ROLE_HISTORY: CursorCodec<i64> = CursorCodec {
    write: |id| format!("h:{id}"),
    read: |text| {
        let id = text.strip_prefix("h:")?.parse::<i64>().ok()?;
        (id > 0).then_some(id)
    },
};

/// Longest Svix message id a cursor may carry (Svix's are 31 characters;
/// the webhook refuses ids over 256).
const MAX_SVIX_ID_LEN: usize = 256;

/// The webhook event list's: the `(received_at, svix_id)` of a page's last
/// message, as `w:{micros}:{svix_id}`.
pub const WEBHOOK_EVENTS: CursorCodec<(NaiveDateTime, String)> = CursorCodec {
    write: |(received_at, svix_id)| format!("w:{}:{svix_id}", micros(*received_at)),
    read: |text| {
        let (at, svix_id) = text.strip_prefix("w:")?.split_once(':')?;
        let valid_id =
            !svix_id.is_empty() && svix_id.len() <= MAX_SVIX_ID_LEN && !svix_id.contains('\0');
        Some((time(at)?, valid_id.then(|| svix_id.to_owned())?))
    },
};

/// The earliest and latest time a cursor may name: what both backends can
/// store. A crafted cursor outside is refused, not sent to the database.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

fn micros(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_micros()
}

/// A time written by [`micros`], if the database can hold it.
fn time(micros: &str) -> Option<NaiveDateTime> {
    micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|at| YEARS.contains(&at.year()))
        .map(|at| at.naive_utc())
}

/// Cuts `rows`, read with one more than `limit` asked for, to one page;
/// the cursor of its last row when another page follows.
pub fn one_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl FnOnce(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = more.then(|| rows.last().map(cursor)).flatten();
    (rows, next_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> NaiveDateTime {
        DateTime::from_timestamp_micros(micros)
            .expect("valid")
            .naive_utc()
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let position = (at(1_700_000_000_123_456), "user_1".to_owned());
        let cursor = USERS.encode(&position);
        assert_eq!(USERS.decode(Some(&cursor)).ok(), Some(Some(position)));
        for junk in ["!!", "bm90aGluZw", "MTI6dXNlciAx"] {
            assert!(USERS.decode(Some(junk)).is_err(), "{junk}");
        }
    }

    #[test]
    fn the_wire_format_stays_what_clients_hold() {
        let created_at = at(1_700_000_000_123_456);
        assert_eq!(
            USERS.encode(&(created_at, "user_1".into())),
            URL_SAFE_NO_PAD.encode("1700000000123456:user_1")
        );
        assert_eq!(ROLE_HISTORY.encode(&42), URL_SAFE_NO_PAD.encode("h:42"));
        assert_eq!(
            WEBHOOK_EVENTS.encode(&(created_at, "msg_1".into())),
            URL_SAFE_NO_PAD.encode("w:1700000000123456:msg_1")
        );
    }

    #[test]
    fn an_empty_cursor_is_the_first_page() {
        assert_eq!(USERS.decode(Some("")).ok(), Some(None));
        assert_eq!(USERS.decode(None).ok(), Some(None));
        assert_eq!(ROLE_HISTORY.decode(Some(" ")).ok(), Some(None));
    }

    #[test]
    fn cursors_outside_what_the_database_stores_are_refused() {
        // Year -5000, and the largest microsecond count.
        for micros in [-219_915_000_000_000_000_i64, i64::MAX, i64::MIN] {
            let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}:user_1"));
            assert!(USERS.decode(Some(&cursor)).is_err(), "{micros}");
            let cursor = URL_SAFE_NO_PAD.encode(format!("w:{micros}:msg_1"));
            assert!(WEBHOOK_EVENTS.decode(Some(&cursor)).is_err(), "{micros}");
        }
    }

    #[test]
    fn history_cursors_round_trip_and_refuse_junk() {
        assert_eq!(
            ROLE_HISTORY.decode(Some(&ROLE_HISTORY.encode(&42))).ok(),
            Some(Some(42))
        );
        for junk in ["!!", "aDow", "aDot", "MTI6dXNlciAx"] {
            assert!(ROLE_HISTORY.decode(Some(junk)).is_err(), "{junk}");
        }
    }

    #[test]
    fn event_cursors_refuse_a_missing_or_overlong_id() {
        let long = "m".repeat(MAX_SVIX_ID_LEN + 1);
        for text in ["w:1700000000123456:", &format!("w:1700000000123456:{long}")] {
            let cursor = URL_SAFE_NO_PAD.encode(text);
            assert!(WEBHOOK_EVENTS.decode(Some(&cursor)).is_err(), "{text}");
        }
    }
}
