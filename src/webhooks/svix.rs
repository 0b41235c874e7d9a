//! Verification of Svix-signed webhooks (also the "Standard Webhooks" spec).
//!
//! A message is signed with HMAC-SHA256 over `{id}.{timestamp}.{raw body}`,
//! keyed with the base64 secret after `whsec_`. The signature header holds
//! space-separated `v1,<base64>` entries; any one may match, other versions
//! are ignored. Timestamps more than five minutes away from now, in either
//! direction, are refused so that a captured message cannot be replayed later.
//! Several secrets may be configured at once so the secret can be rotated
//! without refusing messages signed with the old one.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// How far a message's timestamp may be from now, in seconds, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Longest message id we look at; Svix ids are about 30 characters.
const MAX_ID_LEN: usize = 256;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";

/// The three headers of a signed message, by either of their names.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Why a message was refused. Each variant maps to one fixed HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header is absent or empty (400).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but cannot be what Svix sends (400).
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    /// The timestamp is more than [`TOLERANCE_SECS`] in the past (401).
    #[error("timestamp too old")]
    TimestampTooOld,
    /// The timestamp is more than [`TOLERANCE_SECS`] in the future (401).
    #[error("timestamp too far in the future")]
    TimestampInFuture,
    /// No `v1` signature matches any configured secret (401).
    #[error("no matching signature")]
    InvalidSignature,
}

/// A configured secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no webhook secret given")]
    Empty,
    #[error("webhook secret #{0} is not valid base64 after the whsec_ prefix")]
    NotBase64(usize),
}

impl<'a> SignedHeaders<'a> {
    /// Reads the `svix-*` headers, falling back to the `webhook-*` names of
    /// Standard Webhooks. `get` looks a header up by its lower-case name.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, VerifyError> {
        let header = |svix: &'static str, standard: &'static str| {
            get(svix)
                .or_else(|| get(standard))
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .ok_or(VerifyError::MissingHeader(svix))
        };
        Ok(Self {
            id: header("svix-id", "webhook-id")?,
            timestamp: header("svix-timestamp", "webhook-timestamp")?,
            signature: header("svix-signature", "webhook-signature")?,
        })
    }
}

/// Verifies messages against one or more secrets.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Vec<u8>>,
}

/// Never prints the keys.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({} key(s), redacted)", self.keys.len())
    }
}

impl Verifier {
    /// Builds a verifier from one secret or a space- or comma-separated list
    /// of them, each `whsec_<base64>` (the prefix is optional).
    pub fn new(secrets: &str) -> Result<Self, SecretError> {
        let keys = secrets
            .split([' ', ','])
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .enumerate()
            .map(|(index, secret)| {
                let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
                STANDARD
                    .decode(encoded)
                    .ok()
                    .filter(|key| !key.is_empty())
                    .ok_or(SecretError::NotBase64(index + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { keys })
    }

    /// Checks headers and raw body, with `now` in Unix seconds. Nothing of the
    /// body is parsed or trusted before this returns `Ok`.
    pub fn verify(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        if headers.id.len() > MAX_ID_LEN {
            return Err(VerifyError::MalformedHeader("svix-id"));
        }
        let timestamp = parse_timestamp(headers.timestamp)?;
        if timestamp < now.saturating_sub(TOLERANCE_SECS) {
            return Err(VerifyError::TimestampTooOld);
        }
        if timestamp > now.saturating_add(TOLERANCE_SECS) {
            return Err(VerifyError::TimestampInFuture);
        }

        let candidates: Vec<Vec<u8>> = headers
            .signature
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == SIGNATURE_VERSION)
            .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
            .collect();
        // Every key is tried against every candidate without stopping early,
        // so the time taken says nothing about which entry came close.
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let expected = mac(key, headers.id, headers.timestamp, body);
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(VerifyError::InvalidSignature)
        }
    }

    /// The `v1,<base64>` signature of a message under the first secret, as
    /// Svix would send it (used by tests, the emulator and the load generator).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.keys.first().map(Vec::as_slice).unwrap_or_default();
        let tag = mac(key, id, &timestamp.to_string(), body);
        format!("{SIGNATURE_VERSION},{}", STANDARD.encode(tag))
    }
}

/// A timestamp is plain decimal Unix seconds: no sign, no spaces, no
/// fraction, so that exactly one spelling of a time is ever signed.
fn parse_timestamp(value: &str) -> Result<i64, VerifyError> {
    let malformed = VerifyError::MalformedHeader("svix-timestamp");
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed);
    }
    value.parse().map_err(|_| malformed)
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    // The known-answer vector of the official Svix Rust library's tests.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1_649_367_553;
    const PAYLOAD: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn verifier() -> Verifier {
        Verifier::new(SECRET).expect("valid secret")
    }

    fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id,
            timestamp,
            signature,
        }
    }

    fn check(signature: &str) -> Result<(), VerifyError> {
        verifier().verify(
            &headers(MSG_ID, &TIMESTAMP.to_string(), signature),
            PAYLOAD,
            TIMESTAMP,
        )
    }

    #[test]
    fn known_answer_vector_signs_and_verifies() {
        assert_eq!(verifier().sign(MSG_ID, TIMESTAMP, PAYLOAD), SIGNATURE);
        assert_eq!(check(SIGNATURE), Ok(()));
    }

    #[test]
    fn the_prefix_is_optional() {
        let bare = Verifier::new(SECRET.trim_start_matches("whsec_")).expect("valid");
        assert_eq!(bare.sign(MSG_ID, TIMESTAMP, PAYLOAD), SIGNATURE);
    }

    #[test]
    fn tampering_with_any_signed_part_fails() {
        let ts = TIMESTAMP.to_string();
        let v = verifier();
        let cases = [
            (
                headers("msg_27UH4WbU6Z5A5EzD8u03UvzRbpK", &ts, SIGNATURE),
                PAYLOAD,
            ),
            (headers(MSG_ID, "1649367554", SIGNATURE), PAYLOAD),
            (
                headers(MSG_ID, &ts, SIGNATURE),
                br#"{"email":"test@example.com","username":"test_usen"}"#.as_slice(),
            ),
            (
                headers(
                    MSG_ID,
                    &ts,
                    "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=",
                ),
                PAYLOAD,
            ),
        ];
        for (h, body) in cases {
            assert_eq!(
                v.verify(&h, body, TIMESTAMP),
                Err(VerifyError::InvalidSignature),
                "{h:?}"
            );
        }
    }

    #[test]
    fn partial_and_foreign_signatures_fail() {
        for signature in [
            "v1,",
            "v1",
            &SIGNATURE[..8],
            &SIGNATURE[..SIGNATURE.len() - 4],
            "v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            "v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw= v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            "v1,!!!!",
        ] {
            assert_eq!(
                check(signature),
                Err(VerifyError::InvalidSignature),
                "{signature}"
            );
        }
    }

    #[test]
    fn any_entry_of_a_list_may_match() {
        let last = format!(
            "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= \
             v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw= \
             v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= {SIGNATURE}"
        );
        assert_eq!(check(&last), Ok(()));
        let none = "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= \
                    v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=";
        assert_eq!(check(none), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn timestamps_are_allowed_exactly_five_minutes_either_way() {
        let v = verifier();
        let now = 1_700_000_000;
        for (offset, expected) in [
            (-300, Ok(())),
            (300, Ok(())),
            (0, Ok(())),
            (-301, Err(VerifyError::TimestampTooOld)),
            (301, Err(VerifyError::TimestampInFuture)),
        ] {
            let ts = now + offset;
            let signature = v.sign(MSG_ID, ts, PAYLOAD);
            let result = v.verify(&headers(MSG_ID, &ts.to_string(), &signature), PAYLOAD, now);
            assert_eq!(result, expected, "offset {offset}");
        }
    }

    #[test]
    fn timestamps_have_one_spelling() {
        for ts in [
            "",
            "+1649367553",
            "-1",
            "1649367553.0",
            " 1649367553",
            "01649367553",
            "abc",
        ] {
            let result = verifier().verify(&headers(MSG_ID, ts, SIGNATURE), PAYLOAD, TIMESTAMP);
            assert!(result.is_err(), "{ts:?}");
        }
    }

    #[test]
    fn headers_fall_back_to_standard_webhooks_names() {
        let ts = TIMESTAMP.to_string();
        let map: HashMap<&str, &str> = HashMap::from([
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", SIGNATURE),
        ]);
        let h = SignedHeaders::from_lookup(|name| map.get(name).copied()).expect("found");
        assert_eq!(verifier().verify(&h, PAYLOAD, TIMESTAMP), Ok(()));
    }

    #[test]
    fn missing_or_empty_headers_are_named() {
        let ts = TIMESTAMP.to_string();
        for (absent, name) in [
            ("svix-id", "svix-id"),
            ("svix-timestamp", "svix-timestamp"),
            ("svix-signature", "svix-signature"),
        ] {
            let mut map: HashMap<&str, &str> = HashMap::from([
                ("svix-id", MSG_ID),
                ("svix-timestamp", ts.as_str()),
                ("svix-signature", SIGNATURE),
            ]);
            map.remove(absent);
            let missing = SignedHeaders::from_lookup(|n| map.get(n).copied());
            assert_eq!(missing.err(), Some(VerifyError::MissingHeader(name)));
            map.insert(absent, "  ");
            let empty = SignedHeaders::from_lookup(|n| map.get(n).copied());
            assert_eq!(empty.err(), Some(VerifyError::MissingHeader(name)));
        }
    }

    #[test]
    fn either_of_two_secrets_verifies() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let both = Verifier::new(&format!("{old}, {SECRET}")).expect("valid");
        let old_only = Verifier::new(old).expect("valid");
        let new_only = verifier();
        let ts = TIMESTAMP.to_string();
        for signer in [&old_only, &new_only] {
            let signature = signer.sign(MSG_ID, TIMESTAMP, PAYLOAD);
            assert_eq!(
                both.verify(&headers(MSG_ID, &ts, &signature), PAYLOAD, TIMESTAMP),
                Ok(())
            );
        }
        let by_old = old_only.sign(MSG_ID, TIMESTAMP, PAYLOAD);
        assert_eq!(
            new_only.verify(&headers(MSG_ID, &ts, &by_old), PAYLOAD, TIMESTAMP),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn secrets_that_are_not_base64_are_refused() {
        assert_eq!(
            Verifier::new("whsec_not*base64").err(),
            Some(SecretError::NotBase64(1))
        );
        assert_eq!(
            Verifier::new(&format!("{SECRET} whsec_%%%")).err(),
            Some(SecretError::NotBase64(2))
        );
        assert_eq!(Verifier::new(" , ").err(), Some(SecretError::Empty));
        assert_eq!(
            Verifier::new("whsec_").err(),
            Some(SecretError::NotBase64(1))
        );
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let shown = format!("{:?}", verifier());
        assert!(!shown.contains("C2FVsBQ"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    proptest! {
        #[test]
        fn any_body_signed_with_any_key_verifies(
            key in proptest::collection::vec(any::<u8>(), 1..64),
            id in "[a-zA-Z0-9_]{1,40}",
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            ts in 0i64..4_000_000_000,
        ) {
            let v = Verifier::new(&format!("whsec_{}", STANDARD.encode(&key))).expect("valid");
            let signature = v.sign(&id, ts, &body);
            prop_assert_eq!(v.verify(&headers(&id, &ts.to_string(), &signature), &body, ts), Ok(()));
        }

        #[test]
        fn any_single_byte_change_fails(
            key in proptest::collection::vec(any::<u8>(), 1..64),
            id in "[a-zA-Z0-9_]{1,40}",
            body in proptest::collection::vec(any::<u8>(), 1..512),
            ts in 1_000_000_000i64..4_000_000_000,
            part in 0usize..3,
            position in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let v = Verifier::new(&format!("whsec_{}", STANDARD.encode(&key))).expect("valid");
            let signature = v.sign(&id, ts, &body);
            let (mut id, mut ts_text, mut body) = (id.into_bytes(), ts.to_string().into_bytes(), body);
            let target = match part { 0 => &mut id, 1 => &mut ts_text, _ => &mut body };
            let at = position.index(target.len());
            target[at] ^= flip;
            let id = String::from_utf8_lossy(&id).into_owned();
            let ts_text = String::from_utf8_lossy(&ts_text).into_owned();
            prop_assert!(v.verify(&headers(&id, &ts_text, &signature), &body, ts).is_err());
        }
    }
}
