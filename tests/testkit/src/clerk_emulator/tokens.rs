//! Clerk's signing keys and session tokens: the JWKS `GET /v1/jwks` serves
//! (the primary key; the rotated one once published; the primary gone once
//! retired) and RS256 session tokens as Clerk's Frontend API issues them.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{ClerkEmulator, random_token};

/// The `iss` of the session tokens the emulator mints.
pub const ISSUER: &str = "https://clerk.emulator.test";
/// The default `azp` of minted session tokens.
pub const AUTHORIZED_PARTY: &str = "http://localhost:3000";
/// The `kid` of the primary signing key.
pub const PRIMARY_KID: &str = "ins_test_primary";
/// The `kid` of the rotated signing key (served after `publish_rotated_key`).
pub const ROTATED_KID: &str = "ins_test_rotated";

const PRIMARY_PRIVATE_PEM: &str = include_str!("../../keys/primary.key.pem");
const PRIMARY_PUBLIC_PEM: &str = include_str!("../../keys/primary.pub.pem");
const PRIMARY_JWK_N: &str = include_str!("../../keys/primary.jwk.n");
const ROTATED_PRIVATE_PEM: &str = include_str!("../../keys/rotated.key.pem");
const ROTATED_JWK_N: &str = include_str!("../../keys/rotated.jwk.n");
const JWK_E: &str = "AQAB";

/// The PEM public key of the primary signing key (for `CLERK_JWT_KEY`).
pub fn primary_public_pem() -> &'static str {
    PRIMARY_PUBLIC_PEM
}

/// Which key signs a minted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    Primary,
    Rotated,
}

impl SigningKey {
    fn kid(self) -> &'static str {
        match self {
            Self::Primary => PRIMARY_KID,
            Self::Rotated => ROTATED_KID,
        }
    }

    fn private_pem(self) -> &'static str {
        match self {
            Self::Primary => PRIMARY_PRIVATE_PEM,
            Self::Rotated => ROTATED_PRIVATE_PEM,
        }
    }

    fn jwk(self) -> Value {
        let n = match self {
            Self::Primary => PRIMARY_JWK_N,
            Self::Rotated => ROTATED_JWK_N,
        };
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid(),
            "n": n.trim(),
            "e": JWK_E,
        })
    }

    /// `claims` signed RS256 under this key's `kid`, with `typ` in the
    /// header (`None`: no `typ`).
    fn sign(self, claims: &Value, typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid().to_owned());
        header.typ = typ.map(str::to_owned);
        let encoding_key = EncodingKey::from_rsa_pem(self.private_pem().as_bytes())
            .expect("the test signing key is an RSA PEM");
        jsonwebtoken::encode(&header, claims, &encoding_key).expect("signing a test token")
    }
}

/// Which keys `GET /v1/jwks` serves.
#[derive(Default)]
pub(super) struct PublishedKeys {
    rotated_published: bool,
    /// The primary key is no longer served (Clerk rotated it out).
    primary_retired: bool,
}

impl PublishedKeys {
    /// The body of `GET /v1/jwks`.
    pub(super) fn jwks(&self) -> Value {
        let mut keys = Vec::new();
        if !self.primary_retired {
            keys.push(SigningKey::Primary.jwk());
        }
        if self.rotated_published {
            keys.push(SigningKey::Rotated.jwk());
        }
        json!({ "keys": keys })
    }
}

/// Session tokens, and the keys that sign them.
impl ClerkEmulator {
    /// A session token for `sub`, as Clerk's Frontend API issues it.
    pub fn mint_token(&self, sub: &str) -> String {
        self.mint_token_custom(sub, json!({}), Some("JWT"))
    }

    /// A session token for `sub` with extra or changed `claims`, and the
    /// header's `typ` set to `typ` (`None`: no `typ`).
    pub fn mint_token_custom(&self, sub: &str, claims: Value, typ: Option<&str>) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut all = json!({
            "iss": ISSUER,
            "sub": sub,
            "sid": format!("sess_{}", random_token(27)),
            "azp": AUTHORIZED_PARTY,
            "iat": now,
            "nbf": now - 2,
            "exp": now + 60,
        });
        if let (Some(all), Value::Object(extra)) = (all.as_object_mut(), claims) {
            all.extend(extra);
        }
        SigningKey::Primary.sign(&all, typ)
    }

    /// A token with exactly `claims`, signed RS256 by `key` under its `kid`.
    pub fn mint_token_with(&self, key: SigningKey, claims: Value) -> String {
        key.sign(&claims, Some("JWT"))
    }

    /// From now on `GET /v1/jwks` also serves the rotated key.
    pub fn publish_rotated_key(&self) {
        self.shared.lock().keys.rotated_published = true;
    }

    /// From now on `GET /v1/jwks` no longer serves the primary key.
    pub fn retire_primary_key(&self) {
        self.shared.lock().keys.primary_retired = true;
    }
}
