//! Every environment variable the service reads, each declared once: its
//! name, what it is for, its default and the values it takes. The parser
//! (`Config::from_lookup`), `--help` and `.env.example` all come from here.
//!
//! Database: `DATABASE_URL`, `DATABASE_LOCK_TIMEOUT_MS`,
//! `DATABASE_MAX_CONNECTIONS`. HTTP: `BIND_ADDR`, `METRICS_BIND_ADDR`,
//! `CORS_ALLOWED_ORIGINS`, `HTTP_BODY_TIMEOUT_SECS`. Clerk: `CLERK_*`,
//! `CLOCK_SKEW_ALLOWANCE_MS`, `WEBHOOK_EVENTS_RETENTION_DAYS`. The drift
//! audit: `RECONCILE_*`. This replica and its logs: `REPLICA_ID`,
//! `LOG_FORMAT`, `RUST_LOG`.

use super::values::{Address, Choice, Date, HttpUrl, Label, List, Number, Span, SpanOrOff, Text};
use super::variable::{Declared, DefaultValue, Variable};

/// The `Clerk-API-Version` sent when `CLERK_API_VERSION` is unset or not
/// a date.
pub const DEFAULT_CLERK_API_VERSION: &str = "2026-05-12";

/// The log filter when `RUST_LOG` is unset (or unreadable).
pub const DEFAULT_LOG_FILTER: &str = "info";

pub const DATABASE_URL: Variable<Text> = Variable {
    name: "DATABASE_URL",
    help: "where the data lives: sqlite://path (or a plain path) for SQLite, \
           postgres://user:password@host:5432/db for PostgreSQL",
    default: DefaultValue::Text("sqlite://clerk-role-sync.db"),
    values: Text,
};

pub const DATABASE_LOCK_TIMEOUT_MS: Variable<Span> = Variable {
    name: "DATABASE_LOCK_TIMEOUT_MS",
    help: "PostgreSQL: the longest a statement waits for a row or table lock; a webhook \
           batch blocked longer is split and its blocked events answer 503 (Svix retries); \
           keep it well under the webhook's 10 s answer deadline",
    default: DefaultValue::Text("2000"),
    values: Span::milliseconds(1..=60_000),
};

pub const DATABASE_MAX_CONNECTIONS: Variable<Number<usize>> = Variable {
    name: "DATABASE_MAX_CONNECTIONS",
    help: "PostgreSQL pool size per replica (SQLite uses one connection)",
    default: DefaultValue::Text("10"),
    values: Number(1..=1000),
};

pub const BIND_ADDR: Variable<Address> = Variable {
    name: "BIND_ADDR",
    help: "the address the HTTP API listens on",
    default: DefaultValue::Text("127.0.0.1:8080"),
    values: Address,
};

pub const METRICS_BIND_ADDR: Variable<Address> = Variable {
    name: "METRICS_BIND_ADDR",
    help: "the address that alone serves /metrics (recommended in production)",
    default: DefaultValue::Unset {
        meaning: "/metrics on the main port",
        example: "127.0.0.1:9090",
    },
    values: Address,
};

pub const CLERK_SECRET_KEY: Variable<Text> = Variable {
    name: "CLERK_SECRET_KEY",
    help: "Clerk secret key (sk_…), for pushes, backfill and reconcile",
    default: DefaultValue::Unset {
        meaning: "pushes to Clerk wait",
        example: "sk_live_...",
    },
    values: Text,
};

pub const CLERK_WEBHOOK_SECRET: Variable<Text> = Variable {
    name: "CLERK_WEBHOOK_SECRET",
    help: "the webhook endpoint's Svix signing secret (whsec_…; several, space- or \
           comma-separated, while rotating)",
    default: DefaultValue::Unset {
        meaning: "the webhook answers 503",
        example: "whsec_...",
    },
    values: Text,
};

pub const CLERK_WEBHOOK_SIGNING_SECRET: Variable<Text> = Variable {
    name: "CLERK_WEBHOOK_SIGNING_SECRET",
    help: "another name of CLERK_WEBHOOK_SECRET (Clerk's docs use it); both set to \
           different values is refused",
    default: DefaultValue::Unset {
        meaning: "the webhook answers 503",
        example: "whsec_...",
    },
    values: Text,
};

pub const CLERK_API_URL: Variable<HttpUrl> = Variable {
    name: "CLERK_API_URL",
    help: "Clerk's Backend API",
    default: DefaultValue::Text("https://api.clerk.com"),
    values: HttpUrl,
};

pub const CLERK_JWT_KEY: Variable<Text> = Variable {
    name: "CLERK_JWT_KEY",
    help: "PEM public key that verifies session tokens without fetching the JWKS",
    default: DefaultValue::Unset {
        meaning: "Clerk's JWKS is used",
        example: "",
    },
    values: Text,
};

pub const CLERK_PUBLISHABLE_KEY: Variable<Text> = Variable {
    name: "CLERK_PUBLISHABLE_KEY",
    help: "pk_… key; the issuer it names is required in session tokens (or set CLERK_ISSUER)",
    default: DefaultValue::Unset {
        meaning: "iss is not pinned",
        example: "pk_live_...",
    },
    values: Text,
};

pub const CLERK_ISSUER: Variable<Text> = Variable {
    name: "CLERK_ISSUER",
    help: "the issuer required in session tokens; wins over CLERK_PUBLISHABLE_KEY",
    default: DefaultValue::Unset {
        meaning: "iss is not pinned",
        example: "https://your-instance.clerk.accounts.dev",
    },
    values: Text,
};

pub const CLERK_API_VERSION: Variable<Date> = Variable {
    name: "CLERK_API_VERSION",
    help: "the Clerk-API-Version header sent to Clerk (Clerk's SDKs use this name for \
           the path version, v1: a value that is not a date is ignored with a warning)",
    default: DefaultValue::Text(DEFAULT_CLERK_API_VERSION),
    values: Date,
};

pub const CLERK_AUTHORIZED_PARTIES: Variable<List> = Variable {
    name: "CLERK_AUTHORIZED_PARTIES",
    help: "comma-separated origins allowed in a token's azp",
    default: DefaultValue::Unset {
        meaning: "azp is not checked",
        example: "https://admin.example.com",
    },
    values: List,
};

pub const CLERK_PUSH_RATE: Variable<Number<f64>> = Variable {
    name: "CLERK_PUSH_RATE",
    help: "requests per second to Clerk of the whole deployment: every replica and \
           command on the database shares it",
    default: DefaultValue::Text("10"),
    values: Number(0.1..=1000.0),
};

pub const CLERK_PUSH_RETRY_BASE_MS: Variable<Span> = Variable {
    name: "CLERK_PUSH_RETRY_BASE_MS",
    help: "first retry delay of a failed push, doubled per attempt, with jitter",
    default: DefaultValue::Text("1000"),
    values: Span::milliseconds(1..=3_600_000),
};

pub const CLERK_PUSH_RETRY_MAX_SECS: Variable<Span> = Variable {
    name: "CLERK_PUSH_RETRY_MAX_SECS",
    help: "longest retry delay, and the longest Retry-After from Clerk that is honoured",
    default: DefaultValue::Text("600"),
    values: Span::seconds(1..=86_400),
};

pub const CLERK_TIMEOUT_SECS: Variable<Span> = Variable {
    name: "CLERK_TIMEOUT_SECS",
    help: "timeout of one request to Clerk",
    default: DefaultValue::Text("10"),
    values: Span::seconds(1..=300),
};

pub const CLERK_JWKS_REFRESH_SECS: Variable<Span> = Variable {
    name: "CLERK_JWKS_REFRESH_SECS",
    help: "the shortest time between two fetches of Clerk's JWKS (an unknown kid triggers one)",
    default: DefaultValue::Text("5"),
    values: Span::seconds(1..=3600),
};

pub const CLERK_JWKS_CACHE_SECS: Variable<Span> = Variable {
    name: "CLERK_JWKS_CACHE_SECS",
    help: "how long fetched JWKS keys are trusted",
    default: DefaultValue::Text("300"),
    values: Span::seconds(1..=86_400),
};

pub const CLOCK_SKEW_ALLOWANCE_MS: Variable<Span> = Variable {
    name: "CLOCK_SKEW_ALLOWANCE_MS",
    help: "how far Clerk's clock and ours may be apart: within it of an admin's change, \
           a racing lower role wins",
    default: DefaultValue::Text("2000"),
    values: Span::milliseconds(0..=60_000),
};

pub const CORS_ALLOWED_ORIGINS: Variable<List> = Variable {
    name: "CORS_ALLOWED_ORIGINS",
    help: "comma-separated origins of the admin frontend",
    default: DefaultValue::Unset {
        meaning: "no cross-origin access",
        example: "https://admin.example.com",
    },
    values: List,
};

pub const HTTP_BODY_TIMEOUT_SECS: Variable<Span> = Variable {
    name: "HTTP_BODY_TIMEOUT_SECS",
    help: "a request body must arrive within it, else 408",
    default: DefaultValue::Text("10"),
    values: Span::seconds(1..=300),
};

pub const WEBHOOK_EVENTS_RETENTION_DAYS: Variable<Span> = Variable {
    name: "WEBHOOK_EVENTS_RETENTION_DAYS",
    help: "how long processed Svix messages are kept",
    default: DefaultValue::Text("30"),
    values: Span::days(1..=3650),
};

pub const RECONCILE_INTERVAL: Variable<SpanOrOff> = Variable {
    name: "RECONCILE_INTERVAL",
    help: "time between two drift audits inside serve (e.g. 30m, 24h, 7d); needs \
           CLERK_SECRET_KEY",
    default: DefaultValue::Text("24h"),
    values: SpanOrOff(Span::seconds(1..=365 * 86_400)),
};

pub const RECONCILE_RATE_SHARE: Variable<Number<f64>> = Variable {
    name: "RECONCILE_RATE_SHARE",
    help: "the most of CLERK_PUSH_RATE the drift audit takes (it takes what pushes leave)",
    default: DefaultValue::Text("0.2"),
    values: Number(0.01..=1.0),
};

pub const RECONCILE_MAX_DELETIONS: Variable<Number<i64>> = Variable {
    name: "RECONCILE_MAX_DELETIONS",
    help: "deletions and ADMIN demotions one drift audit run may make; a run that finds \
           more makes none and waits for `reconcile --fix --max-deletions N`",
    default: DefaultValue::Text("10"),
    values: Number(0..=1_000_000),
};

pub const REPLICA_ID: Variable<Label> = Variable {
    name: "REPLICA_ID",
    help: "names this replica's claims on pushes; unique per live replica, stable \
           across its restarts",
    default: DefaultValue::Unset {
        meaning: "the host name",
        example: "replica-a",
    },
    values: Label,
};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub const LOG_FORMAT: Variable<Choice<LogFormat>> = Variable {
    name: "LOG_FORMAT",
    help: "the shape of log lines: pretty for people (coloured only on a terminal, and \
           not when NO_COLOR is set), json (one object per line) for log collectors",
    default: DefaultValue::Text("pretty"),
    values: Choice(&[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)]),
};

/// Read by `tracing`'s filter itself (see `telemetry`).
pub const RUST_LOG: Variable<Text> = Variable {
    name: "RUST_LOG",
    help: "log levels, as a tracing filter, e.g. clerk_role_sync=debug",
    default: DefaultValue::Text(DEFAULT_LOG_FILTER),
    values: Text,
};

/// Every variable, in the order `--help`, `.env.example` and README's
/// table list them.
pub const VARIABLES: &[&dyn Declared] = &[
    &DATABASE_URL,
    &DATABASE_LOCK_TIMEOUT_MS,
    &DATABASE_MAX_CONNECTIONS,
    &BIND_ADDR,
    &METRICS_BIND_ADDR,
    &CLERK_SECRET_KEY,
    &CLERK_WEBHOOK_SECRET,
    &CLERK_WEBHOOK_SIGNING_SECRET,
    &CLERK_API_URL,
    &CLERK_JWT_KEY,
    &CLERK_PUBLISHABLE_KEY,
    &CLERK_ISSUER,
    &CLERK_API_VERSION,
    &CLERK_AUTHORIZED_PARTIES,
    &CLERK_PUSH_RATE,
    &CLERK_PUSH_RETRY_BASE_MS,
    &CLERK_PUSH_RETRY_MAX_SECS,
    &CLERK_TIMEOUT_SECS,
    &CLERK_JWKS_REFRESH_SECS,
    &CLERK_JWKS_CACHE_SECS,
    &CLOCK_SKEW_ALLOWANCE_MS,
    &CORS_ALLOWED_ORIGINS,
    &HTTP_BODY_TIMEOUT_SECS,
    &WEBHOOK_EVENTS_RETENTION_DAYS,
    &RECONCILE_INTERVAL,
    &RECONCILE_RATE_SHARE,
    &RECONCILE_MAX_DELETIONS,
    &REPLICA_ID,
    &LOG_FORMAT,
    &RUST_LOG,
];
