//! Verification of Clerk session tokens (`Authorization: Bearer <jwt>`), as
//! Clerk's SDKs do it and a little stricter: RS256 only, the signature before
//! any claim, `exp`/`nbf` with 5 s of clock skew, `iss` pinned to the
//! instance, `azp` checked when authorized parties are configured, and only
//! session tokens (those with a `sid`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::ClerkClient;
use crate::domain::ClerkUserId;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Why a token was not accepted. Messages are fixed: nothing of the token
/// is echoed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the session token has expired")]
    Expired,
    #[error("invalid session token")]
    Invalid,
    /// Clerk's signing keys could not be fetched: not the caller's fault.
    #[error("Clerk's signing keys are unavailable")]
    KeysUnavailable,
}

/// The claims we use from a verified session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: ClerkUserId,
    pub session_id: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// Verifies session tokens against a fixed PEM key or Clerk's JWKS.
pub struct SessionVerifier {
    keys: Keys,
    validation: Validation,
    authorized_parties: Vec<String>,
}

enum Keys {
    /// `CLERK_JWT_KEY`: no network needed.
    Static(DecodingKey),
    /// Clerk's JWKS, fetched with the secret key and cached by `kid`.
    Jwks(Box<JwksCache>),
}

struct JwksCache {
    client: ClerkClient,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// When the set was last fetched; also serializes concurrent refetches.
    fetched_at: tokio::sync::Mutex<Option<Instant>>,
    /// Fewest seconds between two fetches, so that tokens with made-up
    /// `kid`s cannot make us hammer Clerk.
    min_refetch: Duration,
}

impl SessionVerifier {
    /// A verifier using `pem` (an RSA public key) for every token.
    pub fn with_pem(
        pem: &str,
        issuer: Option<&str>,
        authorized_parties: &[String],
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        // Environment variables often carry the PEM with literal `\n`s.
        let pem = pem.replace("\\n", "\n");
        let key = DecodingKey::from_rsa_pem(pem.trim().as_bytes())?;
        Ok(Self::new(Keys::Static(key), issuer, authorized_parties))
    }

    /// A verifier fetching Clerk's JWKS on demand.
    pub fn with_jwks(
        client: ClerkClient,
        min_refetch: Duration,
        issuer: Option<&str>,
        authorized_parties: &[String],
    ) -> Self {
        let cache = JwksCache {
            client,
            keys: RwLock::new(HashMap::new()),
            fetched_at: tokio::sync::Mutex::new(None),
            min_refetch,
        };
        Self::new(Keys::Jwks(Box::new(cache)), issuer, authorized_parties)
    }

    fn new(keys: Keys, issuer: Option<&str>, authorized_parties: &[String]) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        Self {
            keys,
            validation,
            authorized_parties: authorized_parties.to_vec(),
        }
    }

    /// Verifies a token and returns its session. The signature is checked
    /// before any claim is looked at.
    pub async fn verify(&self, token: &str) -> Result<Session, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid);
        }
        let claims = match &self.keys {
            Keys::Static(key) => self.decode(token, key)?,
            Keys::Jwks(cache) => {
                let kid = header.kid.as_deref().ok_or(AuthError::Invalid)?;
                let key = cache.key(kid).await?;
                self.decode(token, &key)?
            }
        };
        if !self.authorized_parties.is_empty()
            && !claims
                .azp
                .as_ref()
                .is_some_and(|azp| self.authorized_parties.contains(azp))
        {
            return Err(AuthError::Invalid);
        }
        let session_id = claims
            .sid
            .filter(|sid| !sid.is_empty())
            .ok_or(AuthError::Invalid)?;
        let user_id = ClerkUserId::parse(claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Session {
            user_id,
            session_id,
        })
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })
    }
}

impl JwksCache {
    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut fetched_at = self.fetched_at.lock().await;
        // Another request may have refreshed the set while we waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if fetched_at.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return Err(AuthError::Invalid);
        }
        *fetched_at = Some(Instant::now());
        let jwks = self.client.jwks().await.map_err(|error| {
            tracing::warn!(%error, "could not fetch Clerk's JWKS");
            AuthError::KeysUnavailable
        })?;
        let keys: HashMap<String, Arc<DecodingKey>> = jwks
            .keys
            .into_iter()
            .filter(|jwk| jwk.kty == "RSA")
            .filter_map(|jwk| {
                let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).ok()?;
                Some((jwk.kid, Arc::new(key)))
            })
            .collect();
        tracing::info!(keys = keys.len(), "fetched Clerk's JWKS");
        if let Ok(mut cached) = self.keys.write() {
            *cached = keys;
        }
        self.cached(kid).ok_or(AuthError::Invalid)
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }
}
