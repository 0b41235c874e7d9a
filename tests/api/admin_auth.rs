//! Who may call the admin API: every forged, stale or foreign token is a 401,
//! a valid non-admin a 403.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, problem, spawn_app_with, spawn_synced_app, spawn_synced_app_with, wait_until,
};
use testkit::clerk_emulator::{
    self, AUTHORIZED_PARTY, ClerkEmulator, ISSUER, PRIMARY_KID, SigningKey,
};

/// Creates users in Clerk and waits until their webhooks have landed here.
pub async fn seed(app: &TestApp, clerk: &ClerkEmulator, users: &[(&str, Option<&str>)]) {
    for (id, role) in users {
        clerk.add_user(id, *role);
    }
    clerk.wait_for_deliveries().await;
    for (id, _) in users {
        assert!(app.user(id).await.is_some(), "{id} arrived by webhook");
    }
}

fn claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "sub": sub, "sid": "sess_test", "azp": AUTHORIZED_PARTY,
        "iat": now, "nbf": now - 2, "exp": now + 60,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("an object").remove(key);
    claims
}

/// A token with an arbitrary header, signed by the primary key.
fn token_with_kid(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../testkit/keys/primary.key.pem"))
        .expect("test key");
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn stats_status(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(Method::GET, app.url("/api/admin/stats"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request sent")
}

async fn refused(app: &TestApp, token: &str, why: &str) -> Value {
    let response = stats_status(app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), 401, "{why}");
    assert_eq!(response.headers()["www-authenticate"], "Bearer", "{why}");
    problem(response, 401).await
}

both_backends!(
    only_valid_session_tokens_of_admins_pass,
    a_rotated_signing_key_is_picked_up_with_one_refetch,
    made_up_key_ids_cannot_make_us_hammer_clerk,
    a_pem_key_needs_no_network,
    without_any_key_the_admin_api_is_503,
    tokens_clerk_treats_as_signed_out_are_refused,
    a_key_clerk_removed_stops_verifying_once_the_cache_expires,
    unreachable_keys_are_503_with_retry_after_never_401
);

async fn only_valid_session_tokens_of_admins_pass(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(
        &app,
        &clerk,
        &[
            ("user_admin", Some("ADMIN")),
            ("user_student", None),
            ("user_teacher", Some("INSTRUCTOR")),
            ("user_gone", Some("ADMIN")),
        ],
    )
    .await;
    clerk.delete_user("user_gone");
    clerk.wait_for_deliveries().await;
    let valid = clerk.mint_token("user_admin");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {valid}")))
            .await
            .status(),
        200
    );
    assert_eq!(
        stats_status(&app, Some(&format!("bearer {valid}")))
            .await
            .status(),
        200
    );

    // No token, or not a bearer token at all.
    let missing = problem(stats_status(&app, None).await, 401).await;
    assert_eq!(missing["detail"], "missing bearer token");
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not.a.jwt",
        valid.as_str(),
    ] {
        let response = stats_status(&app, Some(header)).await;
        assert_eq!(response.status(), 401, "{header}");
    }

    // A valid token with its signature changed.
    let mut forged = valid.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    refused(&app, &forged, "tampered signature").await;
    // Claims swapped under the admin's signature.
    let parts: Vec<&str> = valid.split('.').collect();
    let other = format!("{}.{}.{}", parts[0], b64(&claims("user_student")), parts[2]);
    refused(&app, &other, "claims swapped").await;

    // alg "none", and HS256 keyed with the public key (algorithm confusion).
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": PRIMARY_KID});
    let unsigned = format!("{}.{}.", b64(&none_header), b64(&claims("user_admin")));
    refused(&app, &unsigned, "alg none").await;
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(PRIMARY_KID.into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims("user_admin"),
        &EncodingKey::from_secret(clerk_emulator::primary_public_pem().as_bytes())
            .expect("an HMAC key"),
    )
    .expect("signed");
    refused(&app, &confused, "HS256 with the public key").await;

    // Time: expired beyond the 5 s skew, or not valid yet.
    let now = chrono::Utc::now().timestamp();
    let expired = clerk.mint_token_with(
        SigningKey::Primary,
        with(claims("user_admin"), "exp", json!(now - 10)),
    );
    let body = refused(&app, &expired, "expired").await;
    assert_eq!(body["detail"], "the session token has expired");
    let skewed = clerk.mint_token_with(
        SigningKey::Primary,
        with(claims("user_admin"), "exp", json!(now - 2)),
    );
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {skewed}")))
            .await
            .status(),
        200,
        "within 5 s of skew"
    );
    let early = clerk.mint_token_with(
        SigningKey::Primary,
        with(claims("user_admin"), "nbf", json!(now + 30)),
    );
    refused(&app, &early, "not yet valid").await;
    let no_exp = clerk.mint_token_with(SigningKey::Primary, without(claims("user_admin"), "exp"));
    refused(&app, &no_exp, "no exp").await;

    // Someone else's instance, an unlisted origin, not a session token.
    let wrong_iss = clerk.mint_token_with(
        SigningKey::Primary,
        with(
            claims("user_admin"),
            "iss",
            json!("https://evil.clerk.accounts.dev"),
        ),
    );
    refused(&app, &wrong_iss, "wrong iss").await;
    let wrong_azp = clerk.mint_token_with(
        SigningKey::Primary,
        with(claims("user_admin"), "azp", json!("https://evil.example")),
    );
    refused(&app, &wrong_azp, "azp not allowed").await;
    let no_azp = clerk.mint_token_with(SigningKey::Primary, without(claims("user_admin"), "azp"));
    refused(&app, &no_azp, "azp missing while parties are configured").await;
    let no_sid = clerk.mint_token_with(SigningKey::Primary, without(claims("user_admin"), "sid"));
    refused(&app, &no_sid, "not a session token").await;

    // Users we do not know, or no longer.
    refused(&app, &clerk.mint_token("user_stranger"), "unknown sub").await;
    refused(&app, &clerk.mint_token("user_gone"), "deleted user").await;

    // Valid, but not an admin.
    for user in ["user_student", "user_teacher"] {
        let token = clerk.mint_token(user);
        let body = problem(
            stats_status(&app, Some(&format!("Bearer {token}"))).await,
            403,
        )
        .await;
        assert_eq!(body["detail"], "this needs the ADMIN role", "{user}");
    }
}

async fn a_rotated_signing_key_is_picked_up_with_one_refetch(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let before = clerk.mint_token("user_admin");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {before}")))
            .await
            .status(),
        200
    );
    assert_eq!(clerk.jwks_requests(), 1);

    clerk.publish_rotated_key();
    let rotated = clerk.mint_token_with(SigningKey::Rotated, claims("user_admin"));
    // The refetch is allowed once a second (CLERK_JWKS_REFRESH_SECS=1 here).
    wait_until("the rotated key is accepted", || async {
        stats_status(&app, Some(&format!("Bearer {rotated}")))
            .await
            .status()
            == 200
    })
    .await;

    assert_eq!(clerk.jwks_requests(), 2, "exactly one refetch");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {before}")))
            .await
            .status(),
        200
    );
}

async fn made_up_key_ids_cannot_make_us_hammer_clerk(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let valid = clerk.mint_token("user_admin");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {valid}")))
            .await
            .status(),
        200
    );
    let fetched = clerk.jwks_requests();

    let started = std::time::Instant::now();
    for i in 0..30 {
        let token = token_with_kid(&format!("kid_made_up_{i}"), &claims("user_admin"));
        refused(&app, &token, "unknown kid").await;
    }

    // At most one refetch per CLERK_JWKS_REFRESH_SECS (1 s here), however
    // many made-up kids come in.
    let allowed = fetched + 1 + usize::try_from(started.elapsed().as_secs()).unwrap_or(0);
    assert!(
        clerk.jwks_requests() <= allowed,
        "{} fetches",
        clerk.jwks_requests()
    );
    assert!(
        clerk.jwks_requests() < fetched + 30,
        "not one fetch per token"
    );
}

async fn a_pem_key_needs_no_network(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
            ("CLERK_ISSUER", ISSUER),
        ],
    )
    .await;
    let clerk = ClerkEmulator::start().await;
    app.post_webhook(&testkit::clerk_payloads::user_event(
        "user.created",
        "user_admin",
        1,
        Some("ADMIN"),
    ))
    .await;

    let token = clerk.mint_token("user_admin");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {token}")))
            .await
            .status(),
        200
    );
    let rotated = clerk.mint_token_with(SigningKey::Rotated, claims("user_admin"));
    refused(&app, &rotated, "another key").await;
    assert_eq!(clerk.jwks_requests(), 0);
}

async fn without_any_key_the_admin_api_is_503(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let clerk = ClerkEmulator::start().await;

    let response = stats_status(
        &app,
        Some(&format!("Bearer {}", clerk.mint_token("user_admin"))),
    )
    .await;

    problem(response, 503).await;
}

async fn tokens_clerk_treats_as_signed_out_are_refused(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let now = chrono::Utc::now().timestamp();
    let status = |claims: Value, typ: Option<&'static str>| {
        let token = clerk.mint_token_custom("user_admin", claims, typ);
        let app = &app;
        async move {
            stats_status(app, Some(&format!("Bearer {token}")))
                .await
                .status()
        }
    };

    // Session status: only active sessions (or tokens without `sts`).
    assert_eq!(status(json!({"sts": "active"}), Some("JWT")).await, 200);
    assert_eq!(
        status(json!({"sts": "pending"}), Some("JWT")).await,
        401,
        "a session with unfinished tasks"
    );
    assert_eq!(status(json!({"sts": "ended"}), Some("JWT")).await, 401);
    // Issued in the future beyond the 5 s skew.
    assert_eq!(
        status(json!({"iat": now + 3}), Some("JWT")).await,
        200,
        "within the skew"
    );
    assert_eq!(
        status(json!({"iat": now + 60}), Some("JWT")).await,
        401,
        "issued in the future"
    );
    // The header's type: absent or JWT, never an OAuth access token.
    assert_eq!(status(json!({}), None).await, 200);
    assert_eq!(status(json!({}), Some("jwt")).await, 200);
    assert_eq!(status(json!({}), Some("at+jwt")).await, 401);
    assert_eq!(status(json!({}), Some("JWS")).await, 401);
}

async fn a_key_clerk_removed_stops_verifying_once_the_cache_expires(backend: Backend) {
    let (app, clerk) = spawn_synced_app_with(backend, &[("CLERK_JWKS_CACHE_SECS", "1")]).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    let old = clerk.mint_token("user_admin");
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {old}")))
            .await
            .status(),
        200
    );

    clerk.retire_primary_key();
    clerk.publish_rotated_key();

    wait_until("the removed key is refused", || async {
        stats_status(
            &app,
            Some(&format!("Bearer {}", clerk.mint_token("user_admin"))),
        )
        .await
        .status()
            == 401
    })
    .await;
    let rotated = clerk.mint_token_with(SigningKey::Rotated, claims("user_admin"));
    assert_eq!(
        stats_status(&app, Some(&format!("Bearer {rotated}")))
            .await
            .status(),
        200
    );
}

async fn unreachable_keys_are_503_with_retry_after_never_401(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_admin", Some("ADMIN"))]).await;
    clerk.set_jwks_down(true);
    let token = clerk.mint_token("user_admin");

    // The first request's fetch fails; the next ones come before another
    // fetch is allowed. None of them may sign the user out.
    for _ in 0..3 {
        let response = stats_status(&app, Some(&format!("Bearer {token}"))).await;
        assert!(
            response.headers().contains_key("retry-after"),
            "{:?}",
            response.headers()
        );
        problem(response, 503).await;
    }

    clerk.set_jwks_down(false);
    wait_until("keys are fetched again", || async {
        stats_status(&app, Some(&format!("Bearer {token}")))
            .await
            .status()
            == 200
    })
    .await;
}
