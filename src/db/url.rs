//! Where the data lives: a PostgreSQL connection string or a SQLite file.

use std::fmt;
use std::path::PathBuf;

use url::Url;

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A `postgres://` or `postgresql://` connection string.
    Postgres(String),
    /// A SQLite database file, created on first use.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// `postgres://…` or `postgresql://…` select PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a plain path select SQLite. Other schemes are refused.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            let url = Url::parse(value).map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
            if !url.has_host() {
                return Err("a PostgreSQL URL needs a host".into());
            }
            return Ok(Self::Postgres(value.to_owned()));
        }
        let path = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
            .unwrap_or(value);
        if path.is_empty() {
            return Err("a SQLite URL needs a file path".into());
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(format!(
                "unsupported scheme `{scheme}` (use postgres:// or sqlite://)"
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// Shows the backend and location without the password.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => {
                let mut shown = Url::parse(url).map_err(|_| fmt::Error)?;
                if shown.password().is_some() {
                    shown
                        .set_password(Some("redacted"))
                        .map_err(|_| fmt::Error)?;
                }
                write!(f, "Postgres({shown})")
            }
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}
