//! Verification of Clerk session tokens (`Authorization: Bearer <jwt>`), as
//! Clerk's SDKs do it and a little stricter: RS256 only, the signature before
//! any claim, `exp`/`nbf` with 5 s of clock skew, `iss` pinned to the
//! instance, `azp` checked when authorized parties are configured, `iat` not
//! in the future, `typ` absent or `JWT`, and only active session tokens
//! (a `sid`, and `sts` absent or `active`: Clerk treats `pending` sessions
//! as signed out). Clerk's JWKS is cached for five minutes, as Clerk's SDKs
//! do, and fetched again early for an unknown `kid`, at most every few seconds.

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
    /// The next fetch may be tried after `retry_after`.
    #[error("Clerk's signing keys are unavailable")]
    KeysUnavailable { retry_after: Duration },
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
    /// Issued at, Unix seconds.
    #[serde(default)]
    iat: Option<i64>,
    /// The session's status (`active`, `pending`), in Clerk's v2 tokens.
    #[serde(default)]
    sts: Option<String>,
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
    keys: RwLock<KeySet>,
    /// The last fetch tried; also serializes concurrent refetches.
    last_fetch: tokio::sync::Mutex<Option<Fetch>>,
    /// Fewest time between two fetches, so that tokens with made-up `kid`s
    /// (or an unreachable Clerk) cannot make us hammer Clerk.
    min_refetch: Duration,
    /// How long a fetched set is trusted: a key Clerk removed stops
    /// verifying at most this long after.
    ttl: Duration,
}

/// The keys of the last successful fetch.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched_at: Option<Instant>,
}

/// A fetch of the JWKS, and whether it worked.
#[derive(Clone, Copy)]
struct Fetch {
    at: Instant,
    failed: bool,
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
        ttl: Duration,
        issuer: Option<&str>,
        authorized_parties: &[String],
    ) -> Self {
        let cache = JwksCache {
            client,
            keys: RwLock::new(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
            ttl,
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
        // OAuth access tokens (`at+jwt`) and the like are not session tokens.
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
        {
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
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(leeway))
        {
            return Err(AuthError::Invalid);
        }
        if claims.sts.as_deref().is_some_and(|sts| sts != "active") {
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
        if let Some(key) = self.fresh(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have refreshed the set while we waited.
        if let Some(key) = self.fresh(kid) {
            return Ok(key);
        }
        if let Some(fetch) = *last_fetch {
            let since = fetch.at.elapsed();
            if since < self.min_refetch {
                let retry_after = self.min_refetch - since;
                return Err(if fetch.failed || !self.is_fresh() {
                    // No trusted keys to check against: not the token's fault.
                    AuthError::KeysUnavailable { retry_after }
                } else {
                    // The set is fresh and does not have this `kid`.
                    AuthError::Invalid
                });
            }
        }
        let fetched = self.client.jwks().await;
        *last_fetch = Some(Fetch {
            at: Instant::now(),
            failed: fetched.is_err(),
        });
        let jwks = fetched.map_err(|error| {
            tracing::warn!(%error, "could not fetch Clerk's JWKS");
            AuthError::KeysUnavailable {
                retry_after: self.min_refetch,
            }
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
            *cached = KeySet {
                keys,
                fetched_at: Some(Instant::now()),
            };
        }
        self.fresh(kid).ok_or(AuthError::Invalid)
    }

    /// Whether the cached set is younger than the TTL.
    fn is_fresh(&self) -> bool {
        self.keys
            .read()
            .ok()
            .is_some_and(|set| set.fetched_at.is_some_and(|at| at.elapsed() < self.ttl))
    }

    /// The key for `kid` from a set younger than the TTL.
    fn fresh(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let set = self.keys.read().ok()?;
        set.fetched_at.filter(|at| at.elapsed() < self.ttl)?;
        set.keys.get(kid).cloned()
    }
}
