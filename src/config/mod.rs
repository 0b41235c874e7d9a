//! Configuration, read once at start-up from the environment (and from a
//! `.env` file in the working directory when one exists).
//!
//! Every variable is declared once, in [`variables`]: its name, what it is
//! for, its default and the values it takes. [`Config::from_lookup`] reads
//! each through its declaration; `--help` and `.env.example` are written
//! from the same declarations (`listing`), and tests hold README's table
//! to them.
//!
//! A malformed or out-of-range value is a [`ConfigError`] naming the
//! variable and what it takes, never a panic: every accepted value works.

mod listing;
pub mod values;
pub mod variable;
pub mod variables;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use url::Url;

use crate::clerk::Connection;
pub use crate::db::DatabaseUrl;
pub use crate::secret::Secret;

pub use listing::{env_example, environment_help};
pub use variable::{ConfigError, Declared, DefaultValue, Variable};
use variable::{Env, invalid};
use variables::*;
pub use variables::{DEFAULT_CLERK_API_VERSION, DEFAULT_LOG_FILTER, LogFormat, VARIABLES};

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
        let env = Env::new(&lookup);
        let database = DatabaseUrl::parse(&DATABASE_URL.read(&env)?)
            .map_err(|reason| invalid(DATABASE_URL.name, reason))?;

        let secret_key = CLERK_SECRET_KEY.get(&env)?;
        let publishable_key = CLERK_PUBLISHABLE_KEY.get(&env)?;
        key_environments_match(secret_key.as_deref(), publishable_key.as_deref())?;
        let issuer = match (CLERK_ISSUER.get(&env)?, publishable_key) {
            (Some(issuer), _) => Some(issuer.trim().trim_end_matches('/').to_owned()),
            (None, Some(key)) => Some(issuer_from_publishable_key(key.trim())?),
            (None, None) => None,
        };
        let webhook_secrets = webhook_secrets(
            CLERK_WEBHOOK_SECRET.get(&env)?,
            CLERK_WEBHOOK_SIGNING_SECRET.get(&env)?,
        )?;

        let replica_id = match REPLICA_ID.get(&env)? {
            Some(id) => id,
            None => REPLICA_ID.parse(&hostname())?,
        };
        let mut warnings = Vec::new();
        let api_version = api_version(&env, &mut warnings);
        Ok(Self {
            database,
            database_max_connections: DATABASE_MAX_CONNECTIONS.read(&env)?,
            database_lock_timeout: DATABASE_LOCK_TIMEOUT_MS.read(&env)?,
            bind_addr: BIND_ADDR.read(&env)?,
            metrics_bind_addr: METRICS_BIND_ADDR.get(&env)?,
            clerk: ClerkConfig {
                secret_key: secret_key.map(Secret::new),
                webhook_secrets: webhook_secrets.map(Secret::new),
                api_url: CLERK_API_URL.read(&env)?,
                jwt_key: CLERK_JWT_KEY.get(&env)?,
                issuer,
                api_version,
                authorized_parties: CLERK_AUTHORIZED_PARTIES.get(&env)?.unwrap_or_default(),
                push: PushConfig {
                    rate_per_sec: CLERK_PUSH_RATE.read(&env)?,
                    retry_base: CLERK_PUSH_RETRY_BASE_MS.read(&env)?,
                    retry_max: CLERK_PUSH_RETRY_MAX_SECS.read(&env)?,
                    timeout: CLERK_TIMEOUT_SECS.read(&env)?,
                    clock_skew_allowance: CLOCK_SKEW_ALLOWANCE_MS.read(&env)?,
                },
                jwks_min_refetch: CLERK_JWKS_REFRESH_SECS.read(&env)?,
                jwks_cache_ttl: CLERK_JWKS_CACHE_SECS.read(&env)?,
                user_agent: format!(
                    "clerk-role-sync/{} ({replica_id})",
                    env!("CARGO_PKG_VERSION")
                ),
            },
            cors_allowed_origins: CORS_ALLOWED_ORIGINS.get(&env)?.unwrap_or_default(),
            log_format: LOG_FORMAT.read(&env)?,
            body_timeout: HTTP_BODY_TIMEOUT_SECS.read(&env)?,
            webhook_events_retention: WEBHOOK_EVENTS_RETENTION_DAYS.read(&env)?,
            replica_id,
            drift_audit: DriftAuditConfig {
                interval: RECONCILE_INTERVAL.read(&env)?,
                rate_share: RECONCILE_RATE_SHARE.read(&env)?,
                max_deletions: RECONCILE_MAX_DELETIONS.read(&env)?,
            },
            warnings,
        })
    }
}

/// `CLERK_API_VERSION`, or the default with a warning where it is not a
/// date: Clerk's own SDKs read this name as the URL path version (`v1`),
/// and a shared `.env` must not send that as the header.
fn api_version(env: &Env, warnings: &mut Vec<String>) -> String {
    CLERK_API_VERSION.read(env).unwrap_or_else(|_| {
        let value = env.get(CLERK_API_VERSION.name).unwrap_or_default();
        warnings.push(format!(
            "CLERK_API_VERSION={value:?} is not a date (YYYY-MM-DD), as the Clerk-API-Version \
             header needs (Clerk's SDKs use the name for the path version); using \
             {DEFAULT_CLERK_API_VERSION}"
        ));
        DEFAULT_CLERK_API_VERSION.to_owned()
    })
}

/// The webhook's signing secrets, from either of their two names. Both set
/// to different secrets is refused: one would silently win, and every
/// webhook signed with the other would be refused. The error names the
/// variables, never the secrets.
fn webhook_secrets(
    secret: Option<String>,
    signing_secret: Option<String>,
) -> Result<Option<String>, ConfigError> {
    // The same secrets, whatever their order, separators or optional
    // `whsec_` prefix (as the verifier reads them), are one value.
    fn secrets(text: &str) -> Vec<&str> {
        let mut secrets: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|secret| !secret.is_empty())
            .map(|secret| secret.strip_prefix("whsec_").unwrap_or(secret))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        secrets
    }
    match (secret, signing_secret) {
        (Some(secret), Some(signing_secret)) if secrets(&secret) != secrets(&signing_secret) => {
            Err(invalid(
                CLERK_WEBHOOK_SECRET.name,
                format!(
                    "{} (another name for it) is also set, to a different value: the \
                     webhook would check signatures with one and refuse every event signed \
                     with the other; set only one of the two (or both to the same value)",
                    CLERK_WEBHOOK_SIGNING_SECRET.name
                ),
            ))
        }
        (Some(secret), _) => Ok(Some(secret)),
        (None, signing_secret) => Ok(signing_secret),
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
        // Read by its own crate (the log filter).
        asked.insert("RUST_LOG".into());
        let listed: std::collections::BTreeSet<String> =
            VARIABLES.iter().map(|v| v.name().to_owned()).collect();
        assert_eq!(asked, listed);
    }

    #[test]
    fn env_example_and_readme_list_every_variable_with_its_default() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
        assert_eq!(
            example,
            env_example(),
            ".env.example is out of date: run `cargo run -q -- env-example > .env.example`"
        );

        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let table: Vec<Vec<&str>> = readme
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| line.split(" | ").collect())
            .collect();
        for variable in VARIABLES {
            let quoted = format!("`{}`", variable.name());
            let row = table
                .iter()
                .find(|cells| cells[0].contains(&quoted))
                .unwrap_or_else(|| panic!("README's configuration table lacks {quoted}"));
            let default = match variable.default() {
                DefaultValue::Text(text) => format!("`{text}`"),
                DefaultValue::Unset { .. } => variable.default().shown(),
            };
            assert!(
                row[1].starts_with(&default),
                "README gives {quoted} the default {:?}, declared: {default}",
                row[1]
            );
        }
    }

    #[test]
    fn every_default_and_example_is_a_value_its_variable_takes() {
        for variable in VARIABLES {
            let (DefaultValue::Text(value) | DefaultValue::Unset { example: value, .. }) =
                variable.default();
            assert!(
                variable.accepts(value),
                "{}={value:?} is not within {:?}",
                variable.name(),
                variable.allowed()
            );
        }
    }

    #[test]
    fn the_clock_skew_default_is_the_domains() {
        let allowance = CLOCK_SKEW_ALLOWANCE_MS.default_value().expect("valid");
        assert_eq!(
            allowance,
            Some(Duration::from_millis(
                crate::domain::DEFAULT_CLOCK_SKEW_ALLOWANCE_MS.unsigned_abs()
            ))
        );
    }

    #[test]
    fn durations_take_a_bare_number_in_the_unit_of_their_name_or_a_duration() {
        for (variable, value, expected) in [
            ("CLERK_TIMEOUT_SECS", "5", Duration::from_secs(5)),
            ("CLERK_TIMEOUT_SECS", "5s", Duration::from_secs(5)),
            (
                "DATABASE_LOCK_TIMEOUT_MS",
                "2s",
                Duration::from_millis(2_000),
            ),
            (
                "CLERK_PUSH_RETRY_BASE_MS",
                "250",
                Duration::from_millis(250),
            ),
        ] {
            let config = config(&[(variable, value)]).expect(value);
            let read = match variable {
                "CLERK_TIMEOUT_SECS" => config.clerk.push.timeout,
                "DATABASE_LOCK_TIMEOUT_MS" => config.database_lock_timeout,
                _ => config.clerk.push.retry_base,
            };
            assert_eq!(read, expected, "{variable}={value}");
        }
        let config = config(&[("WEBHOOK_EVENTS_RETENTION_DAYS", "7")]).expect("valid");
        assert_eq!(
            config.webhook_events_retention,
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn an_out_of_range_value_names_the_range() {
        for (variable, value, range) in [
            ("CLERK_TIMEOUT_SECS", "301", "from 1s to 5m"),
            ("DATABASE_MAX_CONNECTIONS", "0", "from 1 to 1000"),
            ("CLERK_PUSH_RATE", "0", "from 0.1 to 1000"),
            (
                "RECONCILE_INTERVAL",
                "366d",
                "0 (off) or a duration from 1s to 365d",
            ),
            ("LOG_FORMAT", "xml", "pretty or json"),
        ] {
            let error = config(&[(variable, value)]).expect_err(value).to_string();
            assert!(error.starts_with(variable), "{error}");
            assert!(error.contains(range), "{error}");
        }
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
            ("RECONCILE_INTERVAL", "1x"),
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
    fn the_two_names_of_the_webhook_secret_set_to_different_secrets_are_refused() {
        let error = config(&[
            ("CLERK_WEBHOOK_SECRET", "whsec_hushAAAA"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_hushBBBB"),
        ])
        .expect_err("two different secrets")
        .to_string();
        assert!(error.starts_with("CLERK_WEBHOOK_SECRET"), "{error}");
        assert!(error.contains("CLERK_WEBHOOK_SIGNING_SECRET"), "{error}");
        assert!(
            !error.contains("hush"),
            "the secrets are never printed: {error}"
        );

        // The same secrets under both names, whatever the separators and
        // the optional prefix.
        let same = config(&[
            ("CLERK_WEBHOOK_SECRET", "whsec_old whsec_new"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "new,whsec_old"),
        ])
        .expect("the same secrets");
        assert_eq!(
            same.clerk.webhook_secrets.as_ref().map(Secret::expose),
            Some("whsec_old whsec_new")
        );
        // Either name alone.
        for name in ["CLERK_WEBHOOK_SECRET", "CLERK_WEBHOOK_SIGNING_SECRET"] {
            let alone = config(&[(name, "whsec_one")]).expect(name);
            assert_eq!(
                alone.clerk.webhook_secrets.as_ref().map(Secret::expose),
                Some("whsec_one"),
                "{name}"
            );
        }
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
