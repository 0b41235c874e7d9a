//! [`Role`], the set of roles a push may have left in Clerk ([`RoleSet`]),
//! and where a role change came from ([`RoleSource`]).

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user's role on the learning platform, ordered by privilege
/// (STUDENT < INSTRUCTOR < ADMIN).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    AsExpression,
    FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Student,
    Instructor,
    Admin,
}

/// A role name outside the three we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of STUDENT, INSTRUCTOR, ADMIN")]
pub struct RoleParseError;

impl Role {
    /// Every role, in the order the API lists them.
    pub const ALL: [Role; 3] = [Role::Student, Role::Instructor, Role::Admin];

    /// The stored and serialized name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Student => "STUDENT",
            Role::Instructor => "INSTRUCTOR",
            Role::Admin => "ADMIN",
        }
    }

    /// Reads a role the lenient way Clerk metadata needs: surrounding
    /// whitespace and letter case are ignored (`" admin "` is ADMIN).
    pub fn parse_lenient(value: &str) -> Result<Role, RoleParseError> {
        let trimmed = value.trim();
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or(RoleParseError)
    }
}

/// Strict parsing: exactly one of the three stored names.
impl FromStr for Role {
    type Err = RoleParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or(RoleParseError)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles, stored as bits: STUDENT 1, INSTRUCTOR 2, ADMIN 4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    pub const EMPTY: RoleSet = RoleSet(0);

    const fn bit(role: Role) -> u8 {
        match role {
            Role::Student => 1,
            Role::Instructor => 2,
            Role::Admin => 4,
        }
    }

    /// The set the stored bits name; bits of no role are dropped.
    pub fn from_bits(bits: i32) -> Self {
        Self(u8::try_from(bits & 7).unwrap_or(0))
    }

    pub const fn bits(self) -> i32 {
        self.0 as i32
    }

    pub const fn only(role: Role) -> Self {
        Self(Self::bit(role))
    }

    /// The set with `role` added.
    pub const fn with(self, role: Role) -> Self {
        Self(self.0 | Self::bit(role))
    }

    pub const fn contains(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }
}

/// Where a role change came from, as recorded in the audit log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    AdminApi,
    ClerkWebhook,
    Backfill,
    Cli,
    /// `reconcile --fix`, or the drift audit inside `serve`.
    Reconcile,
}

impl RoleSource {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoleSource::AdminApi => "admin_api",
            RoleSource::ClerkWebhook => "clerk_webhook",
            RoleSource::Backfill => "backfill",
            RoleSource::Cli => "cli",
            RoleSource::Reconcile => "reconcile",
        }
    }
}

/// A stored audit source outside the five we write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source must be one of admin_api, clerk_webhook, backfill, cli, reconcile")]
pub struct RoleSourceParseError;

impl FromStr for RoleSource {
    type Err = RoleSourceParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [
            RoleSource::AdminApi,
            RoleSource::ClerkWebhook,
            RoleSource::Backfill,
            RoleSource::Cli,
            RoleSource::Reconcile,
        ]
        .into_iter()
        .find(|source| source.as_str() == value)
        .ok_or(RoleSourceParseError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_sets_hold_the_roles_their_bits_name() {
        for role in Role::ALL {
            let set = RoleSet::only(role);
            assert!(set.contains(role));
            assert_eq!(RoleSet::from_bits(set.bits()), set);
            assert!(Role::ALL.iter().filter(|r| set.contains(**r)).count() == 1);
        }
        assert_eq!(RoleSet::from_bits(7 | 8).bits(), 7);
        assert!(!RoleSet::EMPTY.contains(Role::Admin));
        assert_eq!(RoleSet::from_bits(-1).bits(), 7);
    }

    #[test]
    fn strict_parsing_accepts_only_the_stored_names() {
        assert_eq!("ADMIN".parse(), Ok(Role::Admin));
        assert_eq!("admin".parse::<Role>(), Err(RoleParseError));
        assert_eq!(" ADMIN".parse::<Role>(), Err(RoleParseError));
        assert_eq!("".parse::<Role>(), Err(RoleParseError));
    }

    #[test]
    fn lenient_parsing_trims_and_folds_case() {
        assert_eq!(Role::parse_lenient(" instructor\n"), Ok(Role::Instructor));
        assert_eq!(Role::parse_lenient("Admin"), Ok(Role::Admin));
        assert_eq!(Role::parse_lenient("teacher"), Err(RoleParseError));
    }

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::Student < Role::Instructor && Role::Instructor < Role::Admin);
    }

    #[test]
    fn every_role_round_trips_through_its_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse(), Ok(role));
            assert_eq!(serde_json::to_value(role).ok(), Some(role.as_str().into()));
        }
    }
}
