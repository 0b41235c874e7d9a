//! How one environment variable is declared: its name, what it is for, its
//! default and the values it takes. Reading a value, `--help` and
//! `.env.example` all work from a declaration, so none of them can say
//! something another does not.

/// One environment variable the service reads.
#[derive(Debug)]
pub struct Variable<V> {
    pub name: &'static str,
    /// What it is for, as `--help` and `.env.example` say it.
    pub help: &'static str,
    pub default: DefaultValue,
    /// The values it takes (see `values.rs`).
    pub values: V,
}

/// What an unset (or blank) variable stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// The variable reads as if it held this text.
    Text(&'static str),
    /// No value; `meaning` says what the service does then, `example` is a
    /// value `.env.example` shows.
    Unset {
        meaning: &'static str,
        example: &'static str,
    },
}

impl DefaultValue {
    /// As `--help` shows it after `default:`.
    pub fn shown(&self) -> String {
        match self {
            Self::Text(text) => (*text).to_owned(),
            Self::Unset { meaning, .. } => format!("unset: {meaning}"),
        }
    }
}

/// The values one kind of variable takes, and how a text reads as one.
pub trait Values {
    type Value;

    /// What a value may be, for `--help` and error messages ("a number from
    /// 1 to 1000"); `None` where any text is taken.
    fn allowed(&self) -> Option<String>;

    /// The value `text` stands for; `None` when it stands for none.
    fn parse(&self, text: &str) -> Option<Self::Value>;
}

/// The variables as set: a lookup in which a blank value counts as unset.
pub struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(lookup)
    }

    /// The value of `name`, unless it is unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.trim().is_empty())
    }
}

impl<V: Values> Variable<V> {
    /// The value set, else the default; `None` when the variable is unset
    /// and has no default value.
    pub fn get(&self, env: &Env) -> Result<Option<V::Value>, ConfigError> {
        match env.get(self.name) {
            Some(text) => self.parse(&text).map(Some),
            None => self.default_value(),
        }
    }

    /// The value set, else the default, of a variable that cannot do
    /// without one.
    pub fn read(&self, env: &Env) -> Result<V::Value, ConfigError> {
        self.get(env)?
            .ok_or_else(|| invalid(self.name, "it is not set"))
    }

    /// The default, read as if it were set.
    pub fn default_value(&self) -> Result<Option<V::Value>, ConfigError> {
        match self.default {
            DefaultValue::Text(text) => self.parse(text).map(Some),
            DefaultValue::Unset { .. } => Ok(None),
        }
    }

    /// `text` as a value of this variable, or an error naming the variable
    /// and what it takes.
    pub fn parse(&self, text: &str) -> Result<V::Value, ConfigError> {
        self.values.parse(text).ok_or_else(|| {
            let allowed = self.values.allowed();
            invalid(
                self.name,
                format!("expected {}", allowed.as_deref().unwrap_or("a value")),
            )
        })
    }
}

/// A variable as `--help`, `.env.example` and the tests see it, whatever
/// the type of its values.
pub trait Declared {
    fn name(&self) -> &'static str;
    fn help(&self) -> &'static str;
    fn default(&self) -> DefaultValue;
    /// What a value may be; `None` where any text is taken.
    fn allowed(&self) -> Option<String>;
    /// Whether `text` is a value of this variable.
    fn accepts(&self, text: &str) -> bool;
}

impl<V: Values> Declared for Variable<V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn help(&self) -> &'static str {
        self.help
    }

    fn default(&self) -> DefaultValue {
        self.default
    }

    fn allowed(&self) -> Option<String> {
        self.values.allowed()
    }

    fn accepts(&self, text: &str) -> bool {
        self.values.parse(text).is_some()
    }
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

pub(super) fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}
