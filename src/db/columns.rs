//! The domain's values as column types: a role, an audit source and a
//! Clerk user id are stored as text and read back parsed, so a row holds
//! `Role`, not a string to parse again. A stored value the constraints
//! should have kept out fails the query as a deserialization error.
//!
//! The domain types only declare that they are text columns
//! (`#[derive(AsExpression, FromSqlRow)]`); how they are written and read is
//! here, with the rest of storage.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::{ClerkUserId, Role, RoleSource};

/// Writes a type as its `as_str` and reads it back with a fallible parse.
macro_rules! text_column {
    ($type:ty, $parse:expr) => {
        impl<DB> ToSql<Text, DB> for $type
        where
            DB: Backend,
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> FromSql<Text, DB> for $type
        where
            DB: Backend,
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let text = String::from_sql(bytes)?;
                Ok($parse(text)?)
            }
        }
    };
}

text_column!(Role, |text: String| text.parse::<Role>());
text_column!(RoleSource, |text: String| text.parse::<RoleSource>());
text_column!(ClerkUserId, ClerkUserId::parse);
