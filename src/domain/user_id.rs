//! [`ClerkUserId`]: the one user id type, checked once where an id enters.

use std::fmt;

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::Serialize;

/// The id Clerk gives a user (`user_2NNEqL2nrIRdJ194ndJqAHwEfxC`): the
/// primary key of our `users` table.
///
/// Accepted: 1 to 128 ASCII letters, digits, `_` or `-`. Anything else cannot
/// be a Clerk id, so it is refused before it reaches the database.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(transparent)]
pub struct ClerkUserId(String);

/// A string that cannot be a Clerk user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a Clerk user id is 1 to 128 ASCII letters, digits, '_' or '-'")]
pub struct UserIdError;

impl ClerkUserId {
    /// Largest id we accept.
    pub const MAX_LEN: usize = 128;

    /// Parses an id, refusing anything Clerk would never issue.
    pub fn parse(value: impl Into<String>) -> Result<Self, UserIdError> {
        let value = value.into();
        let valid = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(value))
        } else {
            Err(UserIdError)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A small, stable number in `0..n` derived from the id, used to spread
    /// counter updates over shards.
    pub fn shard(&self, n: u16) -> i16 {
        // FNV-1a: stable across releases and platforms, unlike `DefaultHasher`.
        let hash = self.0.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        i16::try_from(hash % u64::from(n)).unwrap_or(0)
    }
}

impl fmt::Display for ClerkUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ClerkUserId> for String {
    fn from(id: ClerkUserId) -> Self {
        id.0
    }
}

impl AsRef<str> for ClerkUserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clerk_shaped_ids() {
        assert!(ClerkUserId::parse("user_2NNEqL2nrIRdJ194ndJqAHwEfxC").is_ok());
        assert!(ClerkUserId::parse("u").is_ok());
    }

    #[test]
    fn refuses_what_clerk_never_issues() {
        for bad in ["", " user_1", "user/1", "user 1", "usér", "user%00"] {
            assert_eq!(ClerkUserId::parse(bad), Err(UserIdError), "{bad:?}");
        }
        assert!(ClerkUserId::parse("a".repeat(129)).is_err());
        assert!(ClerkUserId::parse("a".repeat(128)).is_ok());
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let id = ClerkUserId::parse("user_abc").expect("valid id");
        assert_eq!(id.shard(16), id.shard(16));
        for i in 0..500 {
            let id = ClerkUserId::parse(format!("user_{i}")).expect("valid id");
            assert!((0..16).contains(&id.shard(16)));
        }
    }
}
