//! Configuration, read once at start-up from the environment (and from a
//! `.env` file in the working directory when one exists).
//!
//! Every variable, its default and meaning are listed once, in
//! [`VARIABLES`]: `--help` prints that table, and tests hold it, the parser,
//! `.env.example` and README's table to the same names.
//!
//! A malformed or out-of-range value is a [`ConfigError`] naming the
//! variable, never a panic: every accepted value works.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use url::Url;

use crate::clerk::Connection;
pub use crate::db::DatabaseUrl;
use crate::domain::DEFAULT_CLOCK_SKEW_ALLOWANCE_MS;
pub use crate::secret::Secret;

/// Everything the service needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseUrl,
    pub database_max_connections: usize,
    /// PostgreSQL: the longest a statement waits for a lock.
    pub database_lock_timeout: Duration,
    pub bind_addr: SocketAddr,
    /// Where `/metrics` is served instead of the main port, when set.
    pub metrics_bind_addr: Option<SocketAddr>,
    pub clerk: ClerkConfig,
    pub cors_allowed_origins: Vec<String>,
    pub log_format: LogFormat,
    /// Longest time a request body may take to arrive.
    pub body_timeout: Duration,
    /// How long processed Svix messages are kept.
    pub webhook_events_retention: Duration,
    /// Names this replica's claims on pushes; stable across its restarts.
    pub replica_id: String,
    /// The drift audit inside `serve`.
    pub drift_audit: DriftAuditConfig,
    /// Values that were not used as given, and why (logged at start-up).
    pub warnings: Vec<String>,
}

/// How to reach Clerk and how to trust what comes from it.
#[derive(Debug, Clone)]
pub struct ClerkConfig {
    pub secret_key: Option<Secret>,
    pub webhook_secrets: Option<Secret>,
    pub api_url: Url,
    pub jwt_key: Option<String>,
    pub issuer: Option<String>,
    pub api_version: String,
    pub authorized_parties: Vec<String>,
    pub push: PushConfig,
    /// Fewest time between two fetches of Clerk's JWKS.
    pub jwks_min_refetch: Duration,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_cache_ttl: Duration,
    /// `User-Agent` of requests to Clerk: the version and the replica, so
    /// that Clerk's logs (and support) can tell replicas apart.
    pub user_agent: String,
}

impl ClerkConfig {
    /// How to call Clerk's Backend API; `None` without `CLERK_SECRET_KEY`.
    pub fn connection(&self) -> Option<Connection<'_>> {
        Some(Connection {
            api_url: &self.api_url,
            secret_key: self.secret_key.as_ref()?,
            api_version: &self.api_version,
            timeout: self.push.timeout,
            user_agent: &self.user_agent,
        })
    }
}

/// How the worker pushes roles to Clerk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushConfig {
    /// Requests per second this replica may send.
    pub rate_per_sec: f64,
    /// First retry delay; doubled per attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Timeout of one request to Clerk.
    pub timeout: Duration,
    /// Within this much of an admin's change, a differing Clerk role that
    /// is lower wins (DESIGN.md, "Echo and races").
    pub clock_skew_allowance: Duration,
}

/// When and how fast `serve` audits Clerk's users for drift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftAuditConfig {
    /// Time between two runs; `None`: no audit.
    pub interval: Option<Duration>,
    /// The audit's share of `CLERK_PUSH_RATE`: its requests per second are
    /// this share of the push worker's.
    pub rate_share: f64,
    /// Deletions and demotions of an ADMIN a run may make; a run that
    /// finds more makes none and waits for an operator.
    pub max_deletions: i64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} is not valid: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://clerk-role-sync.db";
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_CLERK_API_URL: &str = "https://api.clerk.com";
pub const DEFAULT_CLERK_API_VERSION: &str = "2026-05-12";

/// One environment variable the service reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// The value used when it is unset, or what being unset means.
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable the service reads, in README's order.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "DATABASE_URL",
        default: DEFAULT_DATABASE_URL,
        meaning: "where the data lives; postgres://… selects PostgreSQL",
    },
    Variable {
        name: "DATABASE_LOCK_TIMEOUT_MS",
        default: "2000",
        meaning: "PostgreSQL: longest wait for a row or table lock, 1 ms to 60 s; a webhook \
                  batch blocked longer is split and its blocked events answer 503 (Svix retries); \
                  keep it well under the webhook's 10 s answer deadline",
    },
    Variable {
        name: "DATABASE_MAX_CONNECTIONS",
        default: "10",
        meaning: "PostgreSQL pool size, 1 to 1000 (SQLite uses one connection)",
    },
    Variable {
        name: "BIND_ADDR",
        default: DEFAULT_BIND_ADDR,
        meaning: "host:port of the HTTP API",
    },
    Variable {
        name: "METRICS_BIND_ADDR",
        default: "unset: /metrics on the main port",
        meaning: "host:port that alone serves /metrics (recommended in production)",
    },
    Variable {
        name: "CLERK_SECRET_KEY",
        default: "unset: pushes to Clerk wait",
        meaning: "Clerk secret key (sk_…), for pushes, backfill and reconcile",
    },
    Variable {
        name: "CLERK_WEBHOOK_SECRET",
        default: "unset: the webhook answers 503",
        meaning: "Svix signing secret (whsec_…; several, space- or comma-separated, while \
                  rotating); alias CLERK_WEBHOOK_SIGNING_SECRET",
    },
    Variable {
        name: "CLERK_API_URL",
        default: DEFAULT_CLERK_API_URL,
        meaning: "Clerk's Backend API",
    },
    Variable {
        name: "CLERK_JWT_KEY",
        default: "unset: Clerk's JWKS is used",
        meaning: "PEM public key that verifies session tokens without fetching the JWKS",
    },
    Variable {
        name: "CLERK_PUBLISHABLE_KEY",
        default: "unset: iss is not pinned",
        meaning: "pk_… key; the issuer it names is required in tokens (or set CLERK_ISSUER)",
    },
    Variable {
        name: "CLERK_ISSUER",
        default: "unset: iss is not pinned",
        meaning: "the issuer required in session tokens; wins over CLERK_PUBLISHABLE_KEY",
    },
    Variable {
        name: "CLERK_API_VERSION",
        default: DEFAULT_CLERK_API_VERSION,
        meaning: "the Clerk-API-Version header, a date (YYYY-MM-DD); other values are \
                  ignored with a warning",
    },
    Variable {
        name: "CLERK_AUTHORIZED_PARTIES",
        default: "unset: azp is not checked",
        meaning: "comma-separated origins allowed in a token's azp",
    },
    Variable {
        name: "CLERK_PUSH_RATE",
        default: "10",
        meaning: "requests per second to Clerk per replica, 0.1 to 1000",
    },
    Variable {
        name: "CLERK_PUSH_RETRY_BASE_MS",
        default: "1000",
        meaning: "first retry delay, doubled per attempt with jitter, 1 ms to 1 h",
    },
    Variable {
        name: "CLERK_PUSH_RETRY_MAX_SECS",
        default: "600",
        meaning: "longest retry delay and longest Retry-After honoured, 1 s to 1 day",
    },
    Variable {
        name: "CLERK_TIMEOUT_SECS",
        default: "10",
        meaning: "timeout of one request to Clerk, 1 to 300",
    },
    Variable {
        name: "CLERK_JWKS_REFRESH_SECS",
        default: "5",
        meaning: "fewest seconds between two JWKS fetches, 1 to 3600",
    },
    Variable {
        name: "CLERK_JWKS_CACHE_SECS",
        default: "300",
        meaning: "how long fetched JWKS keys are trusted, 1 to 86400",
    },
    Variable {
        name: "CLOCK_SKEW_ALLOWANCE_MS",
        default: "2000",
        meaning: "within it of an admin's change, the lower role wins a race, 0 to 60000",
    },
    Variable {
        name: "CORS_ALLOWED_ORIGINS",
        default: "unset: no cross-origin access",
        meaning: "comma-separated origins of the admin frontend",
    },
    Variable {
        name: "HTTP_BODY_TIMEOUT_SECS",
        default: "10",
        meaning: "a request body must arrive within it, else 408, 1 to 300",
    },
    Variable {
        name: "WEBHOOK_EVENTS_RETENTION_DAYS",
        default: "30",
        meaning: "how long processed Svix messages are kept, 1 to 3650",
    },
    Variable {
        name: "RECONCILE_INTERVAL",
        default: "24h",
        meaning: "time between two drift audits inside serve (e.g. 30m, 24h, 7d; 0 turns it off), \
                  1s to 365d",
    },
    Variable {
        name: "RECONCILE_RATE_SHARE",
        default: "0.2",
        meaning: "the drift audit's requests to Clerk, as a share of CLERK_PUSH_RATE, 0.01 to 1",
    },
    Variable {
        name: "RECONCILE_MAX_DELETIONS",
        default: "10",
        meaning: "deletions and ADMIN demotions one drift audit run may make, 0 to 1000000; \
                  a run that finds more makes none and waits for \
                  `reconcile --fix --max-deletions N`",
    },
    Variable {
        name: "REPLICA_ID",
        default: "the host name",
        meaning: "names this replica's claims on pushes; unique per replica, stable across restarts",
    },
    Variable {
        name: "LOG_FORMAT",
        default: "pretty",
        meaning: "pretty or json (one object per line)",
    },
    Variable {
        name: "RUST_LOG",
        default: "info",
        meaning: "log filter, e.g. clerk_role_sync=debug",
    },
];

/// The variables as `--help` prints them.
pub fn environment_help() -> String {
    let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut help = String::from(
        "Environment (also read from .env in the working directory; see .env.example):\n",
    );
    for variable in VARIABLES {
        help.push_str(&format!(
            "  {:width$}  {}\n  {:width$}  [default: {}]\n",
            variable.name, variable.meaning, "", variable.default
        ));
    }
    help
}

impl Config {
    /// Reads `.env` (when present) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is worth refusing.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(error) if error.not_found() => {}
            Err(error) => return Err(invalid(".env", error.to_string())),
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let database =
            DatabaseUrl::parse(&var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()))
                .map_err(|reason| invalid("DATABASE_URL", reason))?;
        let bind_addr = var("BIND_ADDR")
            .unwrap_or_else(|| DEFAULT_BIND_ADDR.into())
            .trim()
            .parse()
            .map_err(|_| invalid("BIND_ADDR", "expected host:port, e.g. 127.0.0.1:8080"))?;

        let api_url =
            Url::parse(&var("CLERK_API_URL").unwrap_or_else(|| DEFAULT_CLERK_API_URL.into()))
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
                .ok_or_else(|| invalid("CLERK_API_URL", "expected an http(s) URL"))?;

        key_environments_match(
            var("CLERK_SECRET_KEY").as_deref(),
            var("CLERK_PUBLISHABLE_KEY").as_deref(),
        )?;
        let issuer = match (var("CLERK_ISSUER"), var("CLERK_PUBLISHABLE_KEY")) {
            (Some(issuer), _) => Some(issuer.trim().trim_end_matches('/').to_owned()),
            (None, Some(key)) => Some(issuer_from_publishable_key(key.trim())?),
            (None, None) => None,
        };

        let metrics_bind_addr = var("METRICS_BIND_ADDR")
            .map(|value| {
                value.trim().parse().map_err(|_| {
                    invalid(
                        "METRICS_BIND_ADDR",
                        "expected host:port, e.g. 127.0.0.1:9090",
                    )
                })
            })
            .transpose()?;

        let replica_id = replica_id(var("REPLICA_ID"))?;
        let mut warnings = Vec::new();
        let api_version = match var("CLERK_API_VERSION") {
            None => DEFAULT_CLERK_API_VERSION.to_owned(),
            Some(value) if is_date(value.trim()) => value.trim().to_owned(),
            // Clerk's own SDKs read this name as the URL path version (`v1`):
            // a shared `.env` must not send that as the header.
            Some(value) => {
                warnings.push(format!(
                    "CLERK_API_VERSION={value:?} is not a date (YYYY-MM-DD), as the Clerk-API-Version \
                     header needs (Clerk's SDKs use the name for the path version); using \
                     {DEFAULT_CLERK_API_VERSION}"
                ));
                DEFAULT_CLERK_API_VERSION.to_owned()
            }
        };
        Ok(Self {
            database,
            database_max_connections: ranged(&var, "DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?,
            database_lock_timeout: millis(ranged(
                &var,
                "DATABASE_LOCK_TIMEOUT_MS",
                2_000,
                1..=60_000,
            )?),
            bind_addr,
            metrics_bind_addr,
            clerk: ClerkConfig {
                secret_key: var("CLERK_SECRET_KEY").map(Secret::new),
                webhook_secrets: var("CLERK_WEBHOOK_SECRET")
                    .or_else(|| var("CLERK_WEBHOOK_SIGNING_SECRET"))
                    .map(Secret::new),
                api_url,
                jwt_key: var("CLERK_JWT_KEY"),
                issuer,
                api_version,
                authorized_parties: list(var("CLERK_AUTHORIZED_PARTIES")),
                push: PushConfig {
                    rate_per_sec: ranged(&var, "CLERK_PUSH_RATE", 10.0, 0.1..=1000.0)?,
                    retry_base: millis(ranged(
                        &var,
                        "CLERK_PUSH_RETRY_BASE_MS",
                        1000,
                        1..=3_600_000,
                    )?),
                    retry_max: secs(ranged(&var, "CLERK_PUSH_RETRY_MAX_SECS", 600, 1..=86_400)?),
                    timeout: secs(ranged(&var, "CLERK_TIMEOUT_SECS", 10, 1..=300)?),
                    clock_skew_allowance: millis(ranged(
                        &var,
                        "CLOCK_SKEW_ALLOWANCE_MS",
                        DEFAULT_CLOCK_SKEW_ALLOWANCE_MS.unsigned_abs(),
                        0..=60_000,
                    )?),
                },
                jwks_min_refetch: secs(ranged(&var, "CLERK_JWKS_REFRESH_SECS", 5, 1..=3600)?),
                jwks_cache_ttl: secs(ranged(&var, "CLERK_JWKS_CACHE_SECS", 300, 1..=86_400)?),
                user_agent: format!(
                    "clerk-role-sync/{} ({replica_id})",
                    env!("CARGO_PKG_VERSION")
                ),
            },
            cors_allowed_origins: list(var("CORS_ALLOWED_ORIGINS")),
            log_format: match var("LOG_FORMAT").as_deref().map(str::trim) {
                None | Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(invalid("LOG_FORMAT", "expected `pretty` or `json`")),
            },
            body_timeout: secs(ranged(&var, "HTTP_BODY_TIMEOUT_SECS", 10, 1..=300)?),
            webhook_events_retention: secs(
                ranged(&var, "WEBHOOK_EVENTS_RETENTION_DAYS", 30, 1..=3650)? * 86_400,
            ),
            replica_id,
            drift_audit: DriftAuditConfig {
                interval: match var("RECONCILE_INTERVAL") {
                    None => Some(DEFAULT_RECONCILE_INTERVAL),
                    Some(value) => {
                        let interval = interval(&value).ok_or_else(|| {
                            invalid(
                                "RECONCILE_INTERVAL",
                                "expected 0 (off) or a duration from 1s to 365d, e.g. 30m, 24h, 7d",
                            )
                        })?;
                        (!interval.is_zero()).then_some(interval)
                    }
                },
                rate_share: ranged(&var, "RECONCILE_RATE_SHARE", 0.2, 0.01..=1.0)?,
                max_deletions: ranged(&var, "RECONCILE_MAX_DELETIONS", 10, 0..=1_000_000)?,
            },
            warnings,
        })
    }
}

/// The drift audit's default cadence.
const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(86_400);

/// `0`, or a number of seconds, minutes, hours or days (`90s`, `30m`,
/// `24h`, `7d`; a bare number is seconds) from 1 s to 365 days.
fn interval(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value == "0" {
        return Some(Duration::ZERO);
    }
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    let seconds = number.parse::<u64>().ok()?.checked_mul(seconds_per_unit)?;
    (1..=365 * 86_400)
        .contains(&seconds)
        .then(|| Duration::from_secs(seconds))
}

/// A number within `range`, or `default` when unset. Every bound is one that
/// the code using the value can take without overflowing or stalling.
fn ranged<T>(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let Some(value) = var(name) else {
        return Ok(default);
    };
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            invalid(
                name,
                format!(
                    "expected a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// `YYYY-MM-DD`, a real calendar date.
fn is_date(value: &str) -> bool {
    value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}

fn millis(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// `REPLICA_ID`, or the host name: short printable ASCII, since it is
/// stored with every claim and logged.
fn replica_id(value: Option<String>) -> Result<String, ConfigError> {
    let id = match value {
        Some(value) => value.trim().to_owned(),
        None => hostname(),
    };
    let valid = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(id)
    } else {
        Err(invalid(
            "REPLICA_ID",
            "expected 1 to 64 printable ASCII characters without spaces",
        ))
    }
}

/// The host name (the pod or container name in an orchestrator), or a
/// fixed fallback where it cannot be read.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name.len() <= 64)
        .unwrap_or_else(|| "clerk-role-sync".to_owned())
}

/// Splits a comma- or space-separated list, dropping empty entries.
fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A secret key `sk_live_…` or `sk_test_…` and a publishable key `pk_live_…`
/// or `pk_test_…`, when both are set, are of one environment: a live key
/// and a test key belong to two Clerk instances. Keys of other shapes are
/// not compared. The error names the environments, never the keys.
fn key_environments_match(
    secret_key: Option<&str>,
    publishable_key: Option<&str>,
) -> Result<(), ConfigError> {
    let environment = |key: &str, kind: &str| {
        ["live", "test"]
            .into_iter()
            .find(|environment| key.trim().starts_with(&format!("{kind}_{environment}_")))
    };
    let secret = secret_key.and_then(|key| environment(key, "sk"));
    let publishable = publishable_key.and_then(|key| environment(key, "pk"));
    match (secret, publishable) {
        (Some(secret), Some(publishable)) if secret != publishable => Err(invalid(
            "CLERK_SECRET_KEY",
            format!(
                "it is a {secret} key (sk_{secret}_…), but CLERK_PUBLISHABLE_KEY is a \
                 {publishable} key (pk_{publishable}_…): the two belong to different Clerk \
                 instances; set both keys of one instance"
            ),
        )),
        _ => Ok(()),
    }
}

/// Clerk's publishable key is `pk_(test|live)_` + base64(`<frontend api host>$`);
/// session tokens carry `iss = https://<frontend api host>`.
fn issuer_from_publishable_key(key: &str) -> Result<String, ConfigError> {
    let refuse = || {
        invalid(
            "CLERK_PUBLISHABLE_KEY",
            "expected pk_test_… or pk_live_… as shown in the Clerk dashboard",
        )
    };
    let encoded = key
        .strip_prefix("pk_test_")
        .or_else(|| key.strip_prefix("pk_live_"))
        .ok_or_else(refuse)?;
    let decoded = STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| refuse())?;
    let host = String::from_utf8(decoded).map_err(|_| refuse())?;
    let host = host.strip_suffix('$').ok_or_else(refuse)?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(refuse());
    }
    Ok(format!("https://{host}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_variables_table_names_exactly_what_the_parser_reads() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .expect("defaults are valid");
        let mut asked = asked.into_inner();
        // Read by its own crate (the log filter) and as an alias.
        asked.insert("RUST_LOG".into());
        asked.remove("CLERK_WEBHOOK_SIGNING_SECRET");
        let listed: std::collections::BTreeSet<String> =
            VARIABLES.iter().map(|v| v.name.to_owned()).collect();
        assert_eq!(asked, listed);
    }

    #[test]
    fn env_example_and_readme_list_every_variable_with_its_default() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        for variable in VARIABLES {
            let line = example
                .lines()
                .find(|line| {
                    line.trim_start_matches(['#', ' '])
                        .starts_with(&format!("{}=", variable.name))
                })
                .unwrap_or_else(|| panic!(".env.example lacks {}", variable.name));
            if !variable.default.starts_with("unset") && variable.name != "REPLICA_ID" {
                assert_eq!(
                    line.trim_start_matches(['#', ' ']),
                    format!("{}={}", variable.name, variable.default),
                    ".env.example: {}'s default",
                    variable.name
                );
            }
            let quoted = format!("`{}`", variable.name);
            assert!(
                readme
                    .lines()
                    .any(|line| line.starts_with("| `") && line.contains(&quoted)),
                "README's configuration table lacks {}",
                variable.name
            );
        }
        assert!(environment_help().contains("CLOCK_SKEW_ALLOWANCE_MS"));
    }

    #[test]
    fn defaults_match_the_design() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite("clerk-role-sync.db".into())
        );
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.clerk.api_url.as_str(), "https://api.clerk.com/");
        assert_eq!(config.clerk.api_version, "2026-05-12");
        assert!(config.clerk.secret_key.is_none());
        assert!(config.clerk.issuer.is_none());
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(
            config.clerk.push.clock_skew_allowance,
            Duration::from_secs(2)
        );
        assert_eq!(config.body_timeout, Duration::from_secs(10));
        assert_eq!(
            config.webhook_events_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.clerk.jwks_cache_ttl, Duration::from_secs(300));
        assert!(config.metrics_bind_addr.is_none());
        assert!(!config.replica_id.is_empty());
        assert_eq!(
            config.drift_audit.interval,
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn reconcile_intervals_read_as_durations_and_zero_turns_it_off() {
        for (value, seconds) in [
            ("90s", Some(90)),
            ("90", Some(90)),
            ("30m", Some(1_800)),
            ("24h", Some(86_400)),
            ("7d", Some(604_800)),
            ("365d", Some(31_536_000)),
            ("1s", Some(1)),
            ("0", None),
        ] {
            let config = config(&[("RECONCILE_INTERVAL", value)]).expect(value);
            assert_eq!(
                config.drift_audit.interval,
                seconds.map(Duration::from_secs),
                "{value}"
            );
        }
    }

    #[test]
    fn the_api_version_is_a_date_or_the_default_with_a_warning() {
        let dated = config(&[("CLERK_API_VERSION", "2025-04-10")]).expect("valid");
        assert_eq!(dated.clerk.api_version, "2025-04-10");
        assert!(dated.warnings.is_empty());
        for value in ["v1", "2025-13-40", "latest", "2025-4-1"] {
            let config = config(&[("CLERK_API_VERSION", value)]).expect("still starts");
            assert_eq!(
                config.clerk.api_version, DEFAULT_CLERK_API_VERSION,
                "{value}"
            );
            assert!(
                config.warnings[0].starts_with("CLERK_API_VERSION"),
                "{:?}",
                config.warnings
            );
        }
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let config = config(&[
            ("CLERK_TIMEOUT_SECS", "300"),
            ("CLERK_PUSH_RATE", "0.1"),
            ("CLOCK_SKEW_ALLOWANCE_MS", "0"),
            ("REPLICA_ID", "replica-a"),
        ])
        .expect("valid");
        assert_eq!(config.clerk.push.timeout, Duration::from_secs(300));
        assert_eq!(config.clerk.push.clock_skew_allowance, Duration::ZERO);
        assert_eq!(config.replica_id, "replica-a");
    }

    #[test]
    fn database_urls_select_the_backend() {
        let pg = DatabaseUrl::parse("postgres://u:p@localhost:5432/db").expect("valid");
        assert!(matches!(pg, DatabaseUrl::Postgres(_)));
        assert_eq!(
            DatabaseUrl::parse("sqlite:data/x.db").ok(),
            Some(DatabaseUrl::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("plain.db").ok(),
            Some(DatabaseUrl::Sqlite("plain.db".into()))
        );
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (variable, value) in [
            ("DATABASE_URL", "postgres://"),
            ("DATABASE_URL", "mysql://localhost/db"),
            ("DATABASE_URL", "sqlite://"),
            ("BIND_ADDR", "localhost"),
            ("BIND_ADDR", "127.0.0.1:99999"),
            ("CLERK_API_URL", "not a url"),
            ("CLERK_PUBLISHABLE_KEY", "sk_test_abc"),
            ("LOG_FORMAT", "xml"),
            ("CLERK_PUSH_RATE", "0"),
            ("CLERK_PUSH_RETRY_BASE_MS", "-5"),
            ("DATABASE_MAX_CONNECTIONS", "many"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("CLERK_TIMEOUT_SECS", "301"),
            ("CLERK_TIMEOUT_SECS", "18446744073709551615"),
            ("CLERK_PUSH_RETRY_MAX_SECS", "86401"),
            ("CLERK_PUSH_RATE", "inf"),
            ("CLERK_PUSH_RATE", "NaN"),
            ("CLERK_PUSH_RATE", "0.0000001"),
            ("CLOCK_SKEW_ALLOWANCE_MS", "-1"),
            ("HTTP_BODY_TIMEOUT_SECS", "0"),
            ("WEBHOOK_EVENTS_RETENTION_DAYS", "0"),
            ("METRICS_BIND_ADDR", "9090"),
            ("REPLICA_ID", "two words"),
            ("RECONCILE_INTERVAL", "0s"),
            ("RECONCILE_INTERVAL", "366d"),
            ("RECONCILE_INTERVAL", "1w"),
            ("RECONCILE_INTERVAL", "-1h"),
            ("RECONCILE_INTERVAL", "h"),
            ("RECONCILE_INTERVAL", "99999999999999999999d"),
            ("RECONCILE_RATE_SHARE", "0"),
            ("RECONCILE_RATE_SHARE", "1.5"),
        ] {
            let error = config(&[(variable, value)]).expect_err(value).to_string();
            assert!(error.starts_with(variable), "{error}");
        }
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db:5432/x").expect("valid");
        assert!(!format!("{url:?}").contains("hunter2"));
        let config = config(&[("CLERK_SECRET_KEY", "sk_live_topsecret")]).expect("valid");
        assert!(!format!("{config:?}").contains("topsecret"));
    }

    #[test]
    fn issuer_comes_from_the_publishable_key() {
        // base64("clerk.example.com$")
        let config = config(&[("CLERK_PUBLISHABLE_KEY", "pk_live_Y2xlcmsuZXhhbXBsZS5jb20k")])
            .expect("valid");
        assert_eq!(
            config.clerk.issuer.as_deref(),
            Some("https://clerk.example.com")
        );
    }

    #[test]
    fn a_live_secret_key_with_a_test_publishable_key_is_refused() {
        // base64("clerk.example.com$")
        let (live_pk, test_pk) = (
            "pk_live_Y2xlcmsuZXhhbXBsZS5jb20k",
            "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k",
        );
        for (secret, publishable) in [("sk_live_hush1234", test_pk), ("sk_test_hush1234", live_pk)]
        {
            let error = config(&[
                ("CLERK_SECRET_KEY", secret),
                ("CLERK_PUBLISHABLE_KEY", publishable),
            ])
            .expect_err("two environments")
            .to_string();
            assert!(error.starts_with("CLERK_SECRET_KEY"), "{error}");
            assert!(error.contains("CLERK_PUBLISHABLE_KEY"), "{error}");
            assert!(
                !error.contains("hush1234"),
                "the secret is never printed: {error}"
            );
        }
        // Also when CLERK_ISSUER pins the issuer instead of the key.
        assert!(
            config(&[
                ("CLERK_SECRET_KEY", "sk_live_hush1234"),
                ("CLERK_PUBLISHABLE_KEY", test_pk),
                ("CLERK_ISSUER", "https://clerk.example.com"),
            ])
            .is_err()
        );
        for (secret, publishable) in [("sk_live_x", live_pk), ("sk_test_x", test_pk)] {
            config(&[
                ("CLERK_SECRET_KEY", secret),
                ("CLERK_PUBLISHABLE_KEY", publishable),
            ])
            .expect("one environment");
        }
        // Either alone, or a key of another shape, is not compared.
        config(&[("CLERK_SECRET_KEY", "sk_live_x")]).expect("no publishable key");
        config(&[("CLERK_PUBLISHABLE_KEY", test_pk)]).expect("no secret key");
        config(&[
            ("CLERK_SECRET_KEY", "sk_emulator"),
            ("CLERK_PUBLISHABLE_KEY", live_pk),
        ])
        .expect("not a live or test secret key");
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        let config = config(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://a.example, https://b.example  https://c.example",
        )])
        .expect("valid");
        assert_eq!(config.cors_allowed_origins.len(), 3);
    }
}
