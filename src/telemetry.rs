//! Logging: `RUST_LOG` picks the levels (default `info`), `LOG_FORMAT` the
//! shape (`pretty` for people, `json` for log collectors). Log lines carry
//! ids and outcomes, never secrets, tokens, emails or bodies.

use tracing_subscriber::EnvFilter;

use crate::config::{DEFAULT_LOG_FILTER, LogFormat};

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
