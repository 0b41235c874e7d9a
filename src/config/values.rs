//! The kinds of values variables take: each says what it accepts (for
//! `--help` and error messages) and reads a text as a value.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::variable::Values;

/// Any text, as given; checked where it is used (keys, a database URL).
#[derive(Debug)]
pub struct Text;

impl Values for Text {
    type Value = String;

    fn allowed(&self) -> Option<String> {
        None
    }

    fn parse(&self, text: &str) -> Option<String> {
        Some(text.to_owned())
    }
}

/// A comma- or space-separated list; empty entries are dropped.
#[derive(Debug)]
pub struct List;

impl Values for List {
    type Value = Vec<String>;

    fn allowed(&self) -> Option<String> {
        None
    }

    fn parse(&self, text: &str) -> Option<Vec<String>> {
        let items = text
            .split([',', ' '])
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned);
        Some(items.collect())
    }
}

/// `host:port`, to listen on.
#[derive(Debug)]
pub struct Address;

impl Values for Address {
    type Value = SocketAddr;

    fn allowed(&self) -> Option<String> {
        Some("host:port".into())
    }

    fn parse(&self, text: &str) -> Option<SocketAddr> {
        text.trim().parse().ok()
    }
}

/// An `http://` or `https://` URL with a host.
#[derive(Debug)]
pub struct HttpUrl;

impl Values for HttpUrl {
    type Value = Url;

    fn allowed(&self) -> Option<String> {
        Some("an http(s) URL".into())
    }

    fn parse(&self, text: &str) -> Option<Url> {
        Url::parse(text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
    }
}

/// A real calendar date, `YYYY-MM-DD`.
#[derive(Debug)]
pub struct Date;

impl Values for Date {
    type Value = String;

    fn allowed(&self) -> Option<String> {
        Some("a date, YYYY-MM-DD".into())
    }

    fn parse(&self, text: &str) -> Option<String> {
        let text = text.trim();
        let is_date =
            text.len() == 10 && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
        is_date.then(|| text.to_owned())
    }
}

/// A name that is stored and logged: 1 to 64 printable ASCII characters,
/// no spaces.
#[derive(Debug)]
pub struct Label;

impl Values for Label {
    type Value = String;

    fn allowed(&self) -> Option<String> {
        Some("1 to 64 printable ASCII characters without spaces".into())
    }

    fn parse(&self, text: &str) -> Option<String> {
        let text = text.trim();
        let valid =
            !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| text.to_owned())
    }
}

/// One of a few words, each standing for a value.
#[derive(Debug)]
pub struct Choice<T: 'static>(pub &'static [(&'static str, T)]);

impl<T: Copy> Values for Choice<T> {
    type Value = T;

    fn allowed(&self) -> Option<String> {
        let words: Vec<&str> = self.0.iter().map(|(word, _)| *word).collect();
        Some(match words.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "nothing".to_owned(),
        })
    }

    fn parse(&self, text: &str) -> Option<T> {
        let text = text.trim();
        self.0
            .iter()
            .find(|(word, _)| *word == text)
            .map(|(_, value)| *value)
    }
}

/// A number within a range. Every bound is one the code using the value
/// can take without overflowing or stalling.
#[derive(Debug)]
pub struct Number<T>(pub RangeInclusive<T>);

impl<T: FromStr + PartialOrd + fmt::Display> Values for Number<T> {
    type Value = T;

    fn allowed(&self) -> Option<String> {
        let (start, end) = (self.0.start(), self.0.end());
        Some(format!("a number from {start} to {end}"))
    }

    fn parse(&self, text: &str) -> Option<T> {
        text.trim()
            .parse()
            .ok()
            .filter(|number| self.0.contains(number))
    }
}

/// A duration within a range: a bare number counts the unit the
/// variable's name ends in (`_MS`, `_SECS`, `_DAYS`); any other text is a
/// duration such as `90s`, `30m`, `24h` or `7d` (see `humantime`).
#[derive(Debug)]
pub struct Span {
    unit: Unit,
    range: RangeInclusive<Duration>,
}

/// What a bare number counts.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Milliseconds,
    Seconds,
    Days,
}

const SECONDS_PER_DAY: u64 = 86_400;

impl Span {
    /// Bare numbers count milliseconds; `range` is in milliseconds.
    pub const fn milliseconds(range: RangeInclusive<u64>) -> Self {
        let (start, end) = (*range.start(), *range.end());
        Self {
            unit: Unit::Milliseconds,
            range: Duration::from_millis(start)..=Duration::from_millis(end),
        }
    }

    /// Bare numbers count seconds; `range` is in seconds.
    pub const fn seconds(range: RangeInclusive<u64>) -> Self {
        let (start, end) = (*range.start(), *range.end());
        Self {
            unit: Unit::Seconds,
            range: Duration::from_secs(start)..=Duration::from_secs(end),
        }
    }

    /// Bare numbers count days; `range` is in days.
    pub const fn days(range: RangeInclusive<u64>) -> Self {
        let (start, end) = (*range.start(), *range.end());
        Self {
            unit: Unit::Days,
            range: Duration::from_secs(start * SECONDS_PER_DAY)
                ..=Duration::from_secs(end * SECONDS_PER_DAY),
        }
    }
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Self::Milliseconds => "milliseconds",
            Self::Seconds => "seconds",
            Self::Days => "days",
        }
    }

    /// `count` of this unit; `None` past what a `Duration` holds.
    fn times(self, count: u64) -> Option<Duration> {
        match self {
            Self::Milliseconds => Some(Duration::from_millis(count)),
            Self::Seconds => Some(Duration::from_secs(count)),
            Self::Days => count.checked_mul(SECONDS_PER_DAY).map(Duration::from_secs),
        }
    }
}

impl Values for Span {
    type Value = Duration;

    fn allowed(&self) -> Option<String> {
        Some(format!(
            "a duration from {} to {} (a bare number counts {})",
            compact(*self.range.start()),
            compact(*self.range.end()),
            self.unit.name()
        ))
    }

    fn parse(&self, text: &str) -> Option<Duration> {
        let text = text.trim();
        let duration = match text.parse::<u64>() {
            Ok(count) => self.unit.times(count)?,
            Err(_) => humantime::parse_duration(text).ok()?,
        };
        self.range.contains(&duration).then_some(duration)
    }
}

/// `0` turns something off; any other value is a [`Span`].
#[derive(Debug)]
pub struct SpanOrOff(pub Span);

impl Values for SpanOrOff {
    type Value = Option<Duration>;

    fn allowed(&self) -> Option<String> {
        let span = self.0.allowed()?;
        Some(format!("0 (off) or {span}"))
    }

    fn parse(&self, text: &str) -> Option<Option<Duration>> {
        if text.trim() == "0" {
            return Some(None);
        }
        self.0.parse(text).map(Some)
    }
}

/// `duration` in its largest whole unit, as `humantime` reads it back:
/// `1m` rather than `60000ms`.
fn compact(duration: Duration) -> String {
    let millis = duration.as_millis();
    [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ]
    .into_iter()
    .find(|(unit, _)| millis >= *unit && millis.is_multiple_of(*unit))
    .map_or_else(
        || format!("{millis}ms"),
        |(unit, suffix)| format!("{}{suffix}", millis / unit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_in_their_largest_whole_unit_and_read_back() {
        for (duration, shown) in [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(3_650 * 86_400), "3650d"),
        ] {
            assert_eq!(compact(duration), shown);
            assert_eq!(humantime::parse_duration(shown).ok(), Some(duration));
        }
    }

    #[test]
    fn a_bare_number_counts_the_unit_and_a_duration_its_own() {
        let seconds = Span::seconds(1..=300);
        assert_eq!(seconds.parse("5"), Some(Duration::from_secs(5)));
        assert_eq!(seconds.parse(" +5 "), Some(Duration::from_secs(5)));
        assert_eq!(seconds.parse("5s"), Some(Duration::from_secs(5)));
        assert_eq!(seconds.parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(seconds.parse("6m"), None);
        assert_eq!(seconds.parse("500ms"), None);
        let millis = Span::milliseconds(0..=60_000);
        assert_eq!(millis.parse("2000"), Some(Duration::from_secs(2)));
        assert_eq!(millis.parse("2s"), Some(Duration::from_secs(2)));
        assert_eq!(millis.parse("0"), Some(Duration::ZERO));
        let days = Span::days(1..=3650);
        assert_eq!(days.parse("30"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(days.parse("18446744073709551615"), None);
    }

    #[test]
    fn choices_and_ranges_say_what_they_take() {
        assert_eq!(
            Choice(&[("pretty", 1), ("json", 2)]).allowed().as_deref(),
            Some("pretty or json")
        );
        assert_eq!(
            Number(0.1..=1000.0).allowed().as_deref(),
            Some("a number from 0.1 to 1000")
        );
        assert_eq!(
            Span::seconds(1..=300).allowed().as_deref(),
            Some("a duration from 1s to 5m (a bare number counts seconds)")
        );
    }
}
