//! Clerk's webhook events, parsed only after the signature has been checked.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::clerk::ClerkUser;
use crate::domain::ClerkUserId;

/// The events we act on; everything else is recorded and acknowledged.
#[derive(Debug, Clone)]
pub enum ClerkEvent {
    /// `user.created` or `user.updated`: the user's full, current state,
    /// and its id, parsed.
    UserUpserted {
        kind: EventKind,
        id: ClerkUserId,
        user: Box<ClerkUser>,
    },
    /// `user.deleted`; Clerk documents `data.id`, but it may be missing.
    UserDeleted { id: Option<ClerkUserId> },
    /// Any other type (sessions, organizations, …).
    Other { kind: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
}

impl ClerkEvent {
    /// The user the event is about, if it names one.
    pub fn user_id(&self) -> Option<&ClerkUserId> {
        match self {
            Self::UserUpserted { id, .. } => Some(id),
            Self::UserDeleted { id } => id.as_ref(),
            Self::Other { .. } => None,
        }
    }

    /// The event's `type` as Clerk sent it.
    pub fn kind(&self) -> &str {
        match self {
            Self::UserUpserted {
                kind: EventKind::Created,
                ..
            } => "user.created",
            Self::UserUpserted {
                kind: EventKind::Updated,
                ..
            } => "user.updated",
            Self::UserDeleted { .. } => "user.deleted",
            Self::Other { kind } => kind,
        }
    }
}

/// A signed body that is not a Clerk event we can read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a JSON event envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("the {kind} event's data is not a Clerk user: {source}")]
    User {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("the event's user id is not a Clerk user id")]
    UserId,
}

/// The envelope: `type` and `data` are all we need, and `instance_id` when
/// present; `object`, `timestamp` and `event_attributes` may be present or
/// not.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    instance_id: Option<String>,
}

/// A verified message: the event, and the Clerk instance that sent it when
/// the envelope says (`instance_id`).
#[derive(Debug, Clone)]
pub struct Message {
    pub instance_id: Option<String>,
    pub event: ClerkEvent,
}

#[derive(Deserialize)]
struct DeletedData {
    #[serde(default)]
    id: Option<String>,
}

/// Parses a verified body into its event.
pub fn parse(body: &[u8]) -> Result<ClerkEvent, EventError> {
    parse_message(body).map(|message| message.event)
}

/// Parses a verified body into its event and the instance that sent it.
pub fn parse_message(body: &[u8]) -> Result<Message, EventError> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(EventError::Envelope)?;
    let event = parse_event(&envelope)?;
    Ok(Message {
        instance_id: envelope.instance_id,
        event,
    })
}

fn parse_event(envelope: &Envelope<'_>) -> Result<ClerkEvent, EventError> {
    let upserted = |kind: EventKind, name: &'static str| {
        let user: ClerkUser = serde_json::from_str(envelope.data.get())
            .map_err(|source| EventError::User { kind: name, source })?;
        let id = ClerkUserId::parse(user.id.as_str()).map_err(|_| EventError::UserId)?;
        Ok(ClerkEvent::UserUpserted {
            kind,
            id,
            user: Box::new(user),
        })
    };
    match envelope.kind.as_str() {
        "user.created" => upserted(EventKind::Created, "user.created"),
        "user.updated" => upserted(EventKind::Updated, "user.updated"),
        "user.deleted" => {
            let data: DeletedData =
                serde_json::from_str(envelope.data.get()).map_err(|source| EventError::User {
                    kind: "user.deleted",
                    source,
                })?;
            let id = data
                .id
                .map(ClerkUserId::parse)
                .transpose()
                .map_err(|_| EventError::UserId)?;
            Ok(ClerkEvent::UserDeleted { id })
        }
        // Recorded as sent, but for NUL characters, which PostgreSQL's text
        // cannot hold: one would fail the message's record forever.
        _ => Ok(ClerkEvent::Other {
            kind: envelope.kind.replace('\0', ""),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MetadataRole, Role};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/clerk-webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn parses_every_fixture() {
        for (name, kind) in [
            ("user.created-received.json", "user.created"),
            ("user.created-documented.json", "user.created"),
            ("user.updated-received.json", "user.updated"),
            ("user.deleted-documented.json", "user.deleted"),
        ] {
            let event = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(event.kind(), kind, "{name}");
        }
    }

    #[test]
    fn a_received_update_has_its_profile_and_no_role() {
        let ClerkEvent::UserUpserted { user, .. } =
            parse(&fixture("user.updated-received.json")).expect("parses")
        else {
            panic!("an upsert");
        };
        assert_eq!(user.id, "user_2nhHMVwjQOw3wThowNX4ZveCjwB");
        assert_eq!(user.primary_email(), Some("ani@paragraph.ink"));
        assert_eq!(user.first_name.as_deref(), Some("Anakin"));
        assert_eq!(user.updated_at, 1_730_115_008_703);
        assert_eq!(user.metadata_role(), MetadataRole::Missing);
    }

    #[test]
    fn minimal_envelopes_parse() {
        let body = br#"{"type":"user.updated","data":{"id":"user_1","updated_at":5,
            "public_metadata":{"role":"admin"},"first_name":null,"last_name":null}}"#;
        let ClerkEvent::UserUpserted { user, kind, .. } = parse(body).expect("parses") else {
            panic!("an upsert");
        };
        assert_eq!(kind, EventKind::Updated);
        assert_eq!(user.metadata_role(), MetadataRole::Known(Role::Admin));
        assert!(matches!(
            parse(br#"{"type":"user.deleted","data":{"deleted":true}}"#),
            Ok(ClerkEvent::UserDeleted { id: None })
        ));
        assert!(matches!(
            parse(br#"{"type":"session.created","data":{"id":"sess_1"}}"#),
            Ok(ClerkEvent::Other { .. })
        ));
    }

    #[test]
    fn the_instance_comes_with_the_event_when_the_envelope_names_it() {
        let named = parse_message(
            br#"{"type":"user.deleted","instance_id":"ins_abc","data":{"id":"user_1"}}"#,
        )
        .expect("parses");
        assert_eq!(named.instance_id.as_deref(), Some("ins_abc"));
        assert_eq!(named.event.kind(), "user.deleted");
        for body in [
            br#"{"type":"user.deleted","data":{"id":"user_1"}}"#.as_slice(),
            br#"{"type":"user.deleted","instance_id":null,"data":{"id":"user_1"}}"#,
        ] {
            let message = parse_message(body).expect("parses");
            assert_eq!(message.instance_id, None);
        }
    }

    #[test]
    fn other_types_lose_their_nul_characters() {
        let event = parse(br#"{"type":"session.\u0000created","data":{}}"#).expect("parses");
        assert_eq!(event.kind(), "session.created");
        assert_eq!(event.user_id(), None);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            b"".as_slice(),
            b"not json",
            b"{}",
            br#"{"type":"user.updated"}"#,
            br#"{"type":"user.updated","data":{"id":"user_1"}}"#,
            br#"{"type":"user.updated","data":{"id":"user 1","updated_at":1}}"#,
            br#"{"type":"user.deleted","data":{"id":"../etc"}}"#,
            br#"{"type":5,"data":{}}"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
