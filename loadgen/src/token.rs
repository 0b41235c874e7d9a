//! Session tokens shaped like Clerk's, signed RS256 with a local key.

use std::path::Path;

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The claims of a minted token.
#[derive(Debug, Clone, clap::Args)]
pub struct Claims {
    /// The user the token is for (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Seconds the token stays valid.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: i64,
    /// `iss`, when the service pins one (`CLERK_ISSUER`).
    #[arg(long)]
    pub issuer: Option<String>,
    /// `azp`, when the service checks it (`CLERK_AUTHORIZED_PARTIES`).
    #[arg(long)]
    pub azp: Option<String>,
}

/// A token for `claims`, signed with the PEM private key at `key`.
pub fn mint(key: &Path, claims: &Claims) -> anyhow::Result<String> {
    let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let key =
        EncodingKey::from_rsa_pem(&pem).context("the key must be an RSA private key (PEM)")?;
    let now = chrono::Utc::now().timestamp();
    let mut body = json!({
        "sub": claims.sub,
        "sid": format!("sess_loadgen{now}"),
        "iat": now,
        "nbf": now - 5,
        "exp": now + claims.ttl_secs,
    });
    if let Some(issuer) = &claims.issuer {
        body["iss"] = json!(issuer);
    }
    if let Some(azp) = &claims.azp {
        body["azp"] = json!(azp);
    }
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &body,
        &key,
    )?)
}
