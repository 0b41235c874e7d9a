//! Logging: `RUST_LOG` picks the levels (default `info`), `LOG_FORMAT` the
//! shape (`pretty` for people, `json` for log collectors). Log lines carry
//! ids and outcomes, never secrets, tokens, emails or bodies.
//!
//! Logs go to stderr. Pretty logs are coloured only when stderr is a
//! terminal and `NO_COLOR` is not set (<https://no-color.org>): a file or a
//! pipe gets plain text, without ANSI escape codes.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{DEFAULT_LOG_FILTER, LogFormat};

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Pretty => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether pretty logs are coloured: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (as no-color.org
/// asks).
fn colour(to_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    to_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
