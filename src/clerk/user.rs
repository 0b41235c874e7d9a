//! [`ClerkUser`]: a user as Clerk sends it, read leniently (the id stays
//! Clerk's text: one malformed id in a page of users must not fail the page;
//! each caller parses it where it enters our vocabulary).

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{MetadataRole, Role};

/// A Clerk user as webhooks and the Backend API return it. Only the fields we
/// use are read; every other field, documented or not, is ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ClerkUser {
    pub id: String,
    #[serde(default)]
    pub email_addresses: Vec<EmailAddress>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    #[serde(default, deserialize_with = "text_without_nul")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "text_without_nul")]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "text_without_nul")]
    pub image_url: Option<String>,
    #[serde(default)]
    pub public_metadata: Option<Value>,
    /// Milliseconds since the epoch; larger after every write in Clerk.
    pub updated_at: i64,
    /// When the user signed up, milliseconds since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// One of a user's email addresses.
#[derive(Debug, Clone, Deserialize)]
pub struct EmailAddress {
    pub id: String,
    #[serde(deserialize_with = "without_nul")]
    pub email_address: String,
}

/// A profile text with any NUL characters removed: PostgreSQL text cannot
/// hold them, and a user whose name had one would otherwise never be stored.
fn text_without_nul<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text: Option<String> = Deserialize::deserialize(deserializer)?;
    Ok(text.map(strip_nul))
}

fn without_nul<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    String::deserialize(deserializer).map(strip_nul)
}

fn strip_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    }
}

impl ClerkUser {
    /// The address `primary_email_address_id` points at, if any.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|address| address.id == primary)
            .map(|address| address.email_address.as_str())
    }

    /// When the user signed up, as stored (UTC); `None` when Clerk did not
    /// say, or said something no calendar holds.
    pub fn created_at(&self) -> Option<chrono::NaiveDateTime> {
        let at = chrono::DateTime::from_timestamp_millis(self.created_at?)?;
        (1970..=9999)
            .contains(&chrono::Datelike::year(&at))
            .then(|| at.naive_utc())
    }

    /// `public_metadata.role`, read leniently (trimmed, any case).
    pub fn metadata_role(&self) -> MetadataRole {
        match self.public_metadata.as_ref().and_then(|m| m.get("role")) {
            None | Some(Value::Null) => MetadataRole::Missing,
            // An empty role is no role.
            Some(Value::String(text)) if text.trim().is_empty() => MetadataRole::Missing,
            Some(Value::String(text)) => match Role::parse_lenient(text) {
                Ok(role) => MetadataRole::Known(role),
                Err(_) => MetadataRole::Unknown,
            },
            Some(_) => MetadataRole::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(metadata: Value) -> ClerkUser {
        serde_json::from_value(json!({
            "id": "user_1",
            "updated_at": 1,
            "public_metadata": metadata,
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "email_address": "old@example.com"},
                {"id": "idn_2", "email_address": "primary@example.com"}
            ],
            "first_name": null
        }))
        .expect("a valid user")
    }

    #[test]
    fn the_primary_email_is_the_one_pointed_at() {
        assert_eq!(user(json!({})).primary_email(), Some("primary@example.com"));
    }

    #[test]
    fn metadata_roles_are_read_leniently() {
        assert_eq!(user(json!({})).metadata_role(), MetadataRole::Missing);
        assert_eq!(user(Value::Null).metadata_role(), MetadataRole::Missing);
        assert_eq!(
            user(json!({"role": null})).metadata_role(),
            MetadataRole::Missing
        );
        assert_eq!(
            user(json!({"role": " Instructor "})).metadata_role(),
            MetadataRole::Known(Role::Instructor)
        );
        assert_eq!(
            user(json!({"role": ""})).metadata_role(),
            MetadataRole::Missing
        );
        assert_eq!(
            user(json!({"role": "  "})).metadata_role(),
            MetadataRole::Missing
        );
        assert_eq!(
            user(json!({"role": "owner"})).metadata_role(),
            MetadataRole::Unknown
        );
        assert_eq!(
            user(json!({"role": 3})).metadata_role(),
            MetadataRole::Unknown
        );
    }
}
