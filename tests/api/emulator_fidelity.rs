//! The Clerk emulator behaves as Clerk does where the service depends on it,
//! so that tests run against it prove something about the real thing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use testkit::clerk_emulator::{
    AUTHORIZED_PARTY, ClerkEmulator, Delivery, INSTANCE_ID, ISSUER, PRIMARY_KID, ROTATED_KID,
    SECRET_KEY, SigningKey, primary_public_pem,
};
use testkit::clerk_payloads::fixture_bodies;
use testkit::svix::{self, TEST_SECRET};

const API_VERSION: &str = "2026-05-12";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn bearer() -> String {
    format!("Bearer {SECRET_KEY}")
}

async fn get(emu: &ClerkEmulator, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", emu.url()))
        .header("Authorization", bearer())
        .send()
        .await
        .expect("the emulator answers")
}

/// `PATCH /v1/users/{id}/metadata` as the service sends it.
async fn patch_metadata(emu: &ClerkEmulator, id: &str, body: &Value) -> reqwest::Response {
    client()
        .patch(format!("{}/v1/users/{id}/metadata", emu.url()))
        .header("Authorization", bearer())
        .header("Clerk-API-Version", API_VERSION)
        .json(body)
        .send()
        .await
        .expect("the emulator answers")
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// The `code` of a Clerk error body, checking its shape on the way.
async fn error_code(response: reqwest::Response) -> String {
    let body = json_of(response).await;
    assert!(body["clerk_trace_id"].is_string(), "{body}");
    let error = &body["errors"][0];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["long_message"].is_string(), "{body}");
    error["code"].as_str().expect("an error code").to_owned()
}

fn updated_at(user: &Value) -> i64 {
    user["updated_at"].as_i64().expect("updated_at in ms")
}

/// Polls `condition` every few ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One webhook as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    svix_id: String,
    timestamp: i64,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON webhook body")
    }

    /// The signature header is what an independent Svix signer computes.
    fn assert_signed_with(&self, secret: &str) {
        assert_eq!(
            self.signature,
            svix::sign(secret, &self.svix_id, self.timestamp, &self.body),
            "signature of {}",
            self.svix_id
        );
        assert!(
            (svix::now() - self.timestamp).abs() <= 60,
            "svix-timestamp {} is now",
            self.timestamp
        );
        assert_eq!(self.content_type, "application/json");
    }
}

/// A webhook endpoint standing in for the service: records what arrives,
/// then waits at `gate` (when closed) before answering `status`.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<Vec<Received>>>,
    answered: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

struct ReceiverState {
    arrived: Arc<Mutex<Vec<Received>>>,
    answered: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    status: u16,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.arrived.lock().expect("receiver lock").push(Received {
        svix_id: header("svix-id"),
        timestamp: header("svix-timestamp")
            .parse()
            .expect("a numeric svix-timestamp"),
        signature: header("svix-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    state
        .gate
        .acquire()
        .await
        .expect("the gate stays open")
        .forget();
    state.answered.fetch_add(1, Ordering::SeqCst);
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(state.status).expect("a valid status"),
    )
    .finish()
}

impl Receiver {
    async fn start(status: u16, gated: bool) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound address").port();
        let permits = if gated { 0 } else { Semaphore::MAX_PERMITS };
        let state = web::Data::new(ReceiverState {
            arrived: Arc::default(),
            answered: Arc::default(),
            gate: Arc::new(Semaphore::new(permits)),
            status,
        });
        let receiver = Self {
            url: format!("http://127.0.0.1:{port}/api/webhooks/clerk"),
            arrived: Arc::clone(&state.arrived),
            answered: Arc::clone(&state.answered),
            gate: Arc::clone(&state.gate),
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("the receiver listens")
        .run();
        tokio::spawn(server);
        receiver
    }

    fn arrived(&self) -> Vec<Received> {
        self.arrived.lock().expect("receiver lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_have_the_shape_clerk_gives_them() {
    let emu = ClerkEmulator::start().await;
    assert!(!emu.url().ends_with('/'));

    let user = emu.add_user("user_shape", Some("INSTRUCTOR"));

    assert_eq!(user["id"], "user_shape");
    assert_eq!(user["object"], "user");
    assert_eq!(user["banned"], false);
    assert_eq!(user["public_metadata"], json!({ "role": "INSTRUCTOR" }));
    assert_eq!(user["private_metadata"], json!({}));
    assert_eq!(user["unsafe_metadata"], json!({}));
    let email = &user["email_addresses"][0];
    assert_eq!(email["email_address"], "user_shape@example.com");
    assert_eq!(email["object"], "email_address");
    assert!(email["id"].as_str().expect("email id").starts_with("idn_"));
    assert_eq!(user["primary_email_address_id"], email["id"]);
    assert_eq!(user["created_at"], user["updated_at"]);
    // Every field of a user Clerk really sent is there.
    let (_, captured) = fixture_bodies()
        .into_iter()
        .find(|(name, _)| *name == "user.updated-received.json")
        .expect("the captured user.updated fixture");
    for field in captured["data"].as_object().expect("a user object").keys() {
        assert!(
            user.get(field).is_some(),
            "the emulator's user lacks {field}"
        );
    }

    let fetched = get(&emu, "/v1/users/user_shape").await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(json_of(fetched).await, user);
    assert_eq!(emu.user("user_shape"), Some(user));
    assert_eq!(emu.role("user_shape").as_deref(), Some("INSTRUCTOR"));

    let missing = get(&emu, "/v1/users/user_missing").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "resource_not_found");
    assert_eq!(emu.user("user_missing"), None);
    assert_eq!(emu.role("user_missing"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_patch_deep_merges_and_null_removes_a_key() {
    let emu = ClerkEmulator::start().await;
    emu.add_user_with_metadata(
        "user_merge",
        json!({ "role": "STUDENT", "plan": "pro", "prefs": { "theme": "dark", "lang": "en" } }),
    );
    let patch = json!({
        "public_metadata": { "role": "ADMIN", "plan": null, "prefs": { "lang": "fr", "beta": true } },
        "private_metadata": { "stripe": "cus_1" },
    });

    let response = patch_metadata(&emu, "user_merge", &patch).await;

    assert_eq!(response.status(), 200);
    let user = json_of(response).await;
    assert_eq!(
        user["public_metadata"],
        json!({ "role": "ADMIN", "prefs": { "theme": "dark", "lang": "fr", "beta": true } })
    );
    assert_eq!(user["private_metadata"], json!({ "stripe": "cus_1" }));
    assert_eq!(user["unsafe_metadata"], json!({}));
    assert_eq!(emu.user("user_merge"), Some(user));
    assert_eq!(emu.role("user_merge").as_deref(), Some("ADMIN"));

    // A dashboard edit merges the same way.
    let edited = emu.edit_metadata("user_merge", json!({ "prefs": null, "team": { "id": 7 } }));
    assert_eq!(
        edited["public_metadata"],
        json!({ "role": "ADMIN", "team": { "id": 7 } })
    );
    assert_eq!(edited["private_metadata"], json!({ "stripe": "cus_1" }));

    // The request is recorded as it was sent.
    let patches = emu.metadata_patches("user_merge");
    assert_eq!(patches.len(), 1);
    let recorded = &patches[0];
    assert_eq!(recorded.method, "PATCH");
    assert_eq!(recorded.path, "/v1/users/user_merge/metadata");
    assert_eq!(recorded.query, "");
    assert_eq!(recorded.api_version.as_deref(), Some(API_VERSION));
    assert_eq!(recorded.authorization, Some(bearer()));
    assert_eq!(recorded.body, patch);
    assert_eq!(recorded.status, 200);
    assert!(emu.metadata_patches("user_other").is_empty());

    // Unknown user, and bodies that are not a JSON object.
    let unknown = patch_metadata(&emu, "user_nobody", &patch).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "resource_not_found");
    for bad in [
        json!([1, 2]),
        json!("role"),
        json!({ "public_metadata": "ADMIN" }),
    ] {
        let response = patch_metadata(&emu, "user_merge", &bad).await;
        assert_eq!(response.status(), 422, "{bad}");
        assert_eq!(error_code(response).await, "form_param_format_invalid");
    }
    let not_json = client()
        .patch(format!("{}/v1/users/user_merge/metadata", emu.url()))
        .header("Authorization", bearer())
        .body("role=ADMIN")
        .send()
        .await
        .expect("the emulator answers");
    assert_eq!(not_json.status(), 422);
    assert_eq!(
        emu.requests().last().expect("recorded").body,
        json!("role=ADMIN")
    );
    assert_eq!(emu.user("user_merge"), Some(edited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_at_strictly_increases_on_every_write() {
    let emu = ClerkEmulator::start().await;
    let created = emu.add_user("user_clock", None);
    let mut stamps = vec![updated_at(&created)];

    for round in 0..10 {
        let role = if round % 2 == 0 { "ADMIN" } else { "STUDENT" };
        let response = patch_metadata(
            &emu,
            "user_clock",
            &json!({ "public_metadata": { "role": role } }),
        )
        .await;
        assert_eq!(response.status(), 200);
        stamps.push(updated_at(&json_of(response).await));
        stamps.push(updated_at(
            &emu.edit_metadata("user_clock", json!({ "round": round })),
        ));
    }

    assert!(
        stamps.windows(2).all(|pair| pair[0] < pair[1]),
        "not strictly increasing: {stamps:?}"
    );
    let last = *stamps.last().expect("stamps");
    assert_eq!(updated_at(&emu.user("user_clock").expect("the user")), last);
    // One clock for every write: a later user is created after all of it.
    let later = emu.add_user("user_later", None);
    assert!(later["created_at"].as_i64().expect("created_at") > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_without_the_secret_is_401_and_changes_nothing() {
    let emu = ClerkEmulator::start().await;
    let before = emu.add_user("user_auth", Some("STUDENT"));
    let url = format!("{}/v1/users/user_auth/metadata", emu.url());
    let body = json!({ "public_metadata": { "role": "ADMIN" } });

    let anonymous = client()
        .patch(&url)
        .json(&body)
        .send()
        .await
        .expect("answer");
    let wrong_key = client()
        .patch(&url)
        .header("Authorization", "Bearer sk_test_wrong")
        .json(&body)
        .send()
        .await
        .expect("answer");
    let count = client()
        .get(format!("{}/v1/users/count", emu.url()))
        .send()
        .await
        .expect("answer");

    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "authentication_invalid");
    assert_eq!(wrong_key.status(), 401);
    assert_eq!(error_code(wrong_key).await, "authentication_invalid");
    assert_eq!(count.status(), 401);
    assert_eq!(emu.user("user_auth"), Some(before));
    assert_eq!(emu.role("user_auth").as_deref(), Some("STUDENT"));
    let patches = emu.metadata_patches("user_auth");
    let seen: Vec<(Option<&str>, u16)> = patches
        .iter()
        .map(|request| (request.authorization.as_deref(), request.status))
        .collect();
    assert_eq!(seen, [(None, 401), (Some("Bearer sk_test_wrong"), 401)]);
    assert_eq!(emu.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_user_patch_refuses_metadata_with_422() {
    let emu = ClerkEmulator::start().await;
    let before = emu.add_user("user_old", Some("STUDENT"));
    let patch_user = |body: Value| {
        client()
            .patch(format!("{}/v1/users/user_old", emu.url()))
            .header("Authorization", bearer())
            .header("Clerk-API-Version", API_VERSION)
            .json(&body)
            .send()
    };

    for body in [
        json!({ "public_metadata": { "role": "ADMIN" } }),
        json!({ "first_name": "Ada", "private_metadata": {} }),
        json!({ "unsafe_metadata": { "x": 1 } }),
    ] {
        let response = patch_user(body.clone()).await.expect("answer");
        assert_eq!(response.status(), 422, "{body}");
        assert!(error_code(response).await.starts_with("form_param_"));
    }
    assert_eq!(emu.user("user_old"), Some(before.clone()));

    // The endpoint itself still works for what it may change.
    let renamed = patch_user(json!({ "first_name": "Ada" }))
        .await
        .expect("answer");
    assert_eq!(renamed.status(), 200);
    let renamed = json_of(renamed).await;
    assert_eq!(renamed["first_name"], "Ada");
    assert_eq!(renamed["public_metadata"], json!({ "role": "STUDENT" }));
    assert!(updated_at(&renamed) > updated_at(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_with_starting_after_walks_every_user_exactly_once() {
    let emu = ClerkEmulator::start().await;
    let ids: Vec<String> = (0..25).map(|n| format!("user_page{n:02}")).collect();
    for id in &ids {
        emu.add_user(id, None);
    }

    let walk = |emu: ClerkEmulator| async move {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(after) => format!("/v1/users?limit=10&starting_after={after}"),
                None => "/v1/users?limit=10".to_owned(),
            };
            let response = get(&emu, &path).await;
            assert_eq!(response.status(), 200);
            let page: Vec<Value> = response.json().await.expect("a JSON array");
            sizes.push(page.len());
            let Some(last) = page.last() else { break };
            cursor = Some(last["id"].as_str().expect("an id").to_owned());
            seen.extend(
                page.iter()
                    .map(|user| user["id"].as_str().expect("an id").to_owned()),
            );
        }
        (seen, sizes)
    };

    let (seen, sizes) = walk(emu.clone()).await;
    assert_eq!(seen, ids);
    assert_eq!(sizes, [10, 10, 5, 0]);
    let last_request = emu.requests().last().expect("recorded").clone();
    assert_eq!(last_request.path, "/v1/users");
    assert_eq!(last_request.query, "limit=10&starting_after=user_page24");

    let count = json_of(get(&emu, "/v1/users/count").await).await;
    assert_eq!(count, json!({ "object": "total_count", "total_count": 25 }));
    assert_eq!(emu.user_count(), 25);

    // Default limit, offset, and the 500 ceiling.
    let first: Vec<Value> = get(&emu, "/v1/users").await.json().await.expect("array");
    assert_eq!(first.len(), 10);
    assert_eq!(first[0]["id"], "user_page00");
    let tail: Vec<Value> = get(&emu, "/v1/users?limit=10&offset=20")
        .await
        .json()
        .await
        .expect("array");
    let tail: Vec<&str> = tail.iter().filter_map(|user| user["id"].as_str()).collect();
    assert_eq!(
        tail,
        ids[20..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let all: Vec<Value> = get(&emu, "/v1/users?limit=500")
        .await
        .json()
        .await
        .expect("array");
    assert_eq!(all.len(), 25);
    let too_many = get(&emu, "/v1/users?limit=501").await;
    assert_eq!(too_many.status(), 422);
    assert_eq!(error_code(too_many).await, "form_param_format_invalid");

    // A deleted user is no longer listed or counted.
    emu.delete_user("user_page03");
    let (seen, _) = walk(emu.clone()).await;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (24, 24));
    assert!(!seen.iter().any(|id| id == "user_page03"));
    let count = json_of(get(&emu, "/v1/users/count").await).await;
    assert_eq!(count["total_count"], 24);
    assert_eq!(emu.user_count(), 24);
    assert_eq!(emu.user("user_page03"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_next_faults_then_succeeds_without_touching_the_user() {
    let emu = ClerkEmulator::start().await;
    let before = emu.add_user("user_faulty", Some("STUDENT"));
    let body = json!({ "public_metadata": { "role": "ADMIN" } });
    emu.fail_next(2, 503);

    // JWKS is not a /v1/users route: it consumes no fault.
    assert_eq!(get(&emu, "/v1/jwks").await.status(), 200);
    for _ in 0..2 {
        let response = patch_metadata(&emu, "user_faulty", &body).await;
        assert_eq!(response.status(), 503);
        assert_eq!(error_code(response).await, "internal_clerk_error");
        assert_eq!(emu.user("user_faulty"), Some(before.clone()));
    }
    let response = patch_metadata(&emu, "user_faulty", &body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(emu.role("user_faulty").as_deref(), Some("ADMIN"));
    let statuses: Vec<u16> = emu
        .metadata_patches("user_faulty")
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_next_answers_429_with_retry_after() {
    let emu = ClerkEmulator::start().await;
    let before = emu.add_user("user_limited", Some("STUDENT"));
    emu.rate_limit_next(2, 7);

    let patched = patch_metadata(
        &emu,
        "user_limited",
        &json!({ "public_metadata": { "role": "ADMIN" } }),
    )
    .await;
    assert_eq!(patched.status(), 429);
    assert_eq!(
        patched
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("7")
    );
    assert_eq!(error_code(patched).await, "too_many_requests");
    assert_eq!(emu.user("user_limited"), Some(before.clone()));

    let fetched = get(&emu, "/v1/users/user_limited").await;
    assert_eq!(fetched.status(), 429);
    assert_eq!(fetched.headers()["retry-after"], "7");

    let fetched = get(&emu, "/v1/users/user_limited").await;
    assert_eq!(fetched.status(), 200);
    assert!(fetched.headers().get("retry-after").is_none());
    assert_eq!(json_of(fetched).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_lets_so_many_requests_through_per_window() {
    let emu = ClerkEmulator::start().await;
    let before = emu.add_user("user_busy", Some("STUDENT"));
    // A window no test run outlasts: the first three pass, then every
    // request is refused with the whole seconds until the window frees.
    emu.enforce_rate_limit(3, Duration::from_secs(600));
    for _ in 0..3 {
        assert_eq!(get(&emu, "/v1/users/user_busy").await.status(), 200);
    }
    let patched = patch_metadata(
        &emu,
        "user_busy",
        &json!({ "public_metadata": { "role": "ADMIN" } }),
    )
    .await;
    assert_eq!(patched.status(), 429);
    let retry_after: u64 = patched.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((595..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(patched).await, "too_many_requests");
    assert_eq!(
        emu.user("user_busy"),
        Some(before),
        "a refused write changes nothing"
    );
    // Refusals do not count; lifting the limit lets everything through.
    assert_eq!(get(&emu, "/v1/users/user_busy").await.status(), 429);
    emu.lift_rate_limit();
    assert_eq!(get(&emu, "/v1/users/user_busy").await.status(), 200);

    // A short window frees itself.
    emu.enforce_rate_limit(2, Duration::from_millis(300));
    assert_eq!(get(&emu, "/v1/users/user_busy").await.status(), 200);
    assert_eq!(get(&emu, "/v1/users/user_busy").await.status(), 200);
    let refused = get(&emu, "/v1/users/user_busy").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let mut passed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if get(&emu, "/v1/users/user_busy").await.status() == 200 {
            passed = true;
            break;
        }
    }
    assert!(passed, "the window never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_delay_holds_the_answer_and_the_effect() {
    let emu = ClerkEmulator::start().await;
    emu.add_user("user_slow", Some("STUDENT"));
    let delay = Duration::from_millis(800);
    emu.set_delay(delay);

    let request = {
        let emu = emu.clone();
        tokio::spawn(async move {
            let response = patch_metadata(
                &emu,
                "user_slow",
                &json!({ "public_metadata": { "role": "ADMIN" } }),
            )
            .await;
            (response.status(), Instant::now())
        })
    };
    eventually("the PATCH to arrive", || {
        !emu.metadata_patches("user_slow").is_empty()
    })
    .await;
    // Arrived, not answered, not applied.
    assert_eq!(emu.metadata_patches("user_slow")[0].status, 0);
    assert_eq!(emu.role("user_slow").as_deref(), Some("STUDENT"));

    let (status, answered_at) = request.await.expect("the request task");
    assert_eq!(status, 200);
    let recorded = emu.metadata_patches("user_slow")[0].clone();
    assert!(answered_at.duration_since(recorded.at) >= delay);
    assert_eq!(recorded.status, 200);
    assert_eq!(emu.role("user_slow").as_deref(), Some("ADMIN"));

    emu.set_delay(Duration::ZERO);
    let quick = patch_metadata(
        &emu,
        "user_slow",
        &json!({ "public_metadata": { "role": "STUDENT" } }),
    )
    .await;
    assert_eq!(quick.status(), 200);
    assert_eq!(emu.role("user_slow").as_deref(), Some("STUDENT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_serves_the_primary_then_the_rotated_key_and_minted_tokens_verify() {
    let emu = ClerkEmulator::start().await;
    let jwks = || async { json_of(get(&emu, "/v1/jwks").await).await };
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| key["kid"].as_str().expect("kid").to_owned())
            .collect()
    };
    let decoding_key = |jwks: &Value, kid: &str| {
        let key = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|key| key["kid"] == kid)
            .unwrap_or_else(|| panic!("no key {kid} in {jwks}"));
        assert_eq!(
            (&key["kty"], &key["use"], &key["alg"], &key["e"]),
            (
                &json!("RSA"),
                &json!("sig"),
                &json!("RS256"),
                &json!("AQAB")
            )
        );
        DecodingKey::from_rsa_components(
            key["n"].as_str().expect("n"),
            key["e"].as_str().expect("e"),
        )
        .expect("an RSA JWK")
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 5;

    let anonymous = client()
        .get(format!("{}/v1/jwks", emu.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "authentication_invalid");

    let published = jwks().await;
    assert_eq!(kids(&published), [PRIMARY_KID]);

    let token = emu.mint_token("user_admin");
    let header = jsonwebtoken::decode_header(&token).expect("a JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(PRIMARY_KID));
    let claims =
        jsonwebtoken::decode::<Value>(&token, &decoding_key(&published, PRIMARY_KID), &validation)
            .expect("the token verifies against the JWKS")
            .claims;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "user_admin");
    assert_eq!(claims["azp"], AUTHORIZED_PARTY);
    assert!(claims["sid"].as_str().expect("sid").starts_with("sess_"));
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["nbf"].as_i64(), Some(iat - 2));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 60));
    assert!((iat - chrono::Utc::now().timestamp()).abs() <= 5);
    // The same key in PEM form, as CLERK_JWT_KEY holds it.
    let pem = DecodingKey::from_rsa_pem(primary_public_pem().as_bytes()).expect("a PEM key");
    jsonwebtoken::decode::<Value>(&token, &pem, &validation).expect("verifies with the PEM");

    let now = chrono::Utc::now().timestamp();
    let rotated_claims =
        json!({ "iss": ISSUER, "sub": "user_rotated", "exp": now + 60, "custom": [1] });
    let rotated = emu.mint_token_with(SigningKey::Rotated, rotated_claims.clone());
    let header = jsonwebtoken::decode_header(&rotated).expect("a JWT header");
    assert_eq!(header.kid.as_deref(), Some(ROTATED_KID));
    let error = jsonwebtoken::decode::<Value>(&rotated, &pem, &validation)
        .expect_err("the rotated key is another key");
    assert_eq!(
        error.kind(),
        &jsonwebtoken::errors::ErrorKind::InvalidSignature
    );

    emu.publish_rotated_key();
    let published = jwks().await;
    assert_eq!(kids(&published), [PRIMARY_KID, ROTATED_KID]);
    let claims = jsonwebtoken::decode::<Value>(
        &rotated,
        &decoding_key(&published, ROTATED_KID),
        &validation,
    )
    .expect("the rotated token verifies against the JWKS")
    .claims;
    assert_eq!(claims, rotated_claims);
    let primary_again = emu.mint_token_with(
        SigningKey::Primary,
        json!({ "iss": ISSUER, "exp": now + 60 }),
    );
    jsonwebtoken::decode::<Value>(&primary_again, &pem, &validation)
        .expect("the primary key still signs");

    assert_eq!(emu.jwks_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_webhooks_are_queued_and_arrive_signed_when_released() {
    let emu = ClerkEmulator::start().await;
    let receiver = Receiver::start(202, false).await;
    emu.add_user("user_early", None); // before any target: never sent
    emu.send_webhooks_to(&receiver.url, TEST_SECRET, Delivery::Held);

    emu.add_user("user_hook", Some("STUDENT"));
    emu.edit_metadata("user_hook", json!({ "role": "INSTRUCTOR" }));
    let patched = patch_metadata(
        &emu,
        "user_hook",
        &json!({ "public_metadata": { "role": "ADMIN" } }),
    )
    .await;
    assert_eq!(patched.status(), 200);
    let patched = json_of(patched).await;
    emu.add_user_with_metadata("user_hook2", json!({ "role": "ADMIN", "team": "x" }));
    emu.delete_user("user_early");

    let held = emu.held_webhooks();
    let summary: Vec<(&str, &str)> = held
        .iter()
        .map(|hook| (hook.kind.as_str(), hook.user_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("user.created", "user_hook"),
            ("user.updated", "user_hook"),
            ("user.updated", "user_hook"),
            ("user.created", "user_hook2"),
            ("user.deleted", "user_early"),
        ]
    );
    let roles: Vec<Value> = held[..4]
        .iter()
        .map(|hook| hook.body["data"]["public_metadata"]["role"].clone())
        .collect();
    assert_eq!(roles, ["STUDENT", "INSTRUCTOR", "ADMIN", "ADMIN"]);
    assert_eq!(held[2].body["data"], patched);
    assert_eq!(
        held[4].body["data"],
        json!({ "deleted": true, "id": "user_early", "object": "user" })
    );
    for hook in &held {
        assert!(hook.svix_id.starts_with("msg_"));
        assert_eq!(hook.body["type"], hook.kind.as_str());
        assert_eq!(hook.body["object"], "event");
        assert!(hook.body["timestamp"].is_i64());
        assert_eq!(
            hook.body["event_attributes"]["http_request"]["user_agent"],
            "clerk-emulator"
        );
    }
    let ids: HashSet<&str> = held.iter().map(|hook| hook.svix_id.as_str()).collect();
    assert_eq!(ids.len(), 5);
    assert!(receiver.arrived().is_empty());

    // One released: delivered now, and no longer held.
    assert_eq!(emu.release_webhook(&held[1].svix_id).await, 202);
    let arrived = receiver.arrived();
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].svix_id, held[1].svix_id);
    assert_eq!(arrived[0].json(), held[1].body);
    arrived[0].assert_signed_with(TEST_SECRET);
    let remaining: Vec<String> = emu
        .held_webhooks()
        .into_iter()
        .map(|hook| hook.svix_id)
        .collect();
    assert_eq!(
        remaining,
        [0, 2, 3, 4].map(|index| held[index].svix_id.clone())
    );

    // The rest, newest first.
    assert_eq!(emu.release_all_webhooks(true).await, [202; 4]);
    let arrived = receiver.arrived();
    let order: Vec<&str> = arrived.iter().map(|hook| hook.svix_id.as_str()).collect();
    let expected: Vec<&str> = [1, 4, 3, 2, 0]
        .iter()
        .map(|&index| held[index].svix_id.as_str())
        .collect();
    assert_eq!(order, expected);
    for hook in &arrived {
        hook.assert_signed_with(TEST_SECRET);
    }
    assert!(emu.held_webhooks().is_empty());

    // A Svix retry: same id and bytes, signed afresh.
    assert_eq!(emu.redeliver(&held[0].svix_id).await, 202);
    let arrived = receiver.arrived();
    assert_eq!(arrived.len(), 6);
    let retry = &arrived[5];
    let first = &arrived[4];
    assert_eq!(retry.svix_id, held[0].svix_id);
    assert_eq!(retry.body, first.body);
    retry.assert_signed_with(TEST_SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_webhooks_never_hold_up_the_api_and_can_be_awaited() {
    let emu = ClerkEmulator::start().await;
    let receiver = Receiver::start(200, true).await;
    emu.send_webhooks_to(&receiver.url, TEST_SECRET, Delivery::Immediate);

    emu.add_user("user_now", Some("STUDENT"));
    eventually("user.created to arrive", || receiver.arrived().len() == 1).await;

    // The receiver is stuck on user.created, yet the PATCH is answered.
    let response = patch_metadata(
        &emu,
        "user_now",
        &json!({ "public_metadata": { "role": "ADMIN" } }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let user = json_of(response).await;
    eventually("user.updated to arrive", || receiver.arrived().len() == 2).await;
    assert_eq!(receiver.answered.load(Ordering::SeqCst), 0);
    assert!(emu.held_webhooks().is_empty());

    receiver.gate.add_permits(2);
    emu.wait_for_deliveries().await;
    assert_eq!(receiver.answered.load(Ordering::SeqCst), 2);

    let arrived = receiver.arrived();
    let kinds: Vec<Value> = arrived
        .iter()
        .map(|hook| hook.json()["type"].clone())
        .collect();
    assert_eq!(kinds, ["user.created", "user.updated"]);
    for hook in &arrived {
        hook.assert_signed_with(TEST_SECRET);
    }
    assert_eq!(arrived[1].json()["data"], user);

    receiver.gate.add_permits(1);
    assert_eq!(emu.redeliver(&arrived[1].svix_id).await, 200);
    let again = receiver.arrived();
    assert_eq!(again.len(), 3);
    assert_eq!(again[2].svix_id, arrived[1].svix_id);
    assert_eq!(again[2].body, arrived[1].body);
    again[2].assert_signed_with(TEST_SECRET);
}

/// `GET /v1/instance` answers, in Clerk's shape, the instance of the key;
/// two emulators are two instances, each taking its own key only, and
/// their webhooks name their instance (`instance_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_emulator_is_an_instance_of_its_own() {
    let ours = ClerkEmulator::start().await;
    let theirs = ClerkEmulator::start_instance("sk_test_other", "ins_other").await;

    let instance = json_of(get(&ours, "/v1/instance").await).await;
    assert_eq!(instance["object"], "instance", "{instance}");
    assert_eq!(instance["id"], INSTANCE_ID, "{instance}");
    assert_eq!(instance["environment_type"], "development", "{instance}");
    for field in ["allowed_origins", "workspace_id"] {
        assert!(instance.get(field).is_some(), "{field} in {instance}");
    }
    let refused = get(&theirs, "/v1/instance").await;
    assert_eq!(refused.status(), 401, "another instance's key");
    assert_eq!(error_code(refused).await, "authentication_invalid");
    let other: Value = client()
        .get(format!("{}/v1/instance", theirs.url()))
        .header("Authorization", format!("Bearer {}", theirs.secret_key()))
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(other["id"], "ins_other", "{other}");

    ours.set_instance_down(true);
    assert_eq!(get(&ours, "/v1/instance").await.status(), 503);
    ours.set_instance_down(false);
    assert_eq!(get(&ours, "/v1/instance").await.status(), 200);

    ours.send_webhooks_to("http://127.0.0.1:9/", TEST_SECRET, Delivery::Held);
    ours.add_user("user_named", None);
    let held = ours.held_webhooks();
    assert_eq!(held[0].body["instance_id"], INSTANCE_ID, "{}", held[0].body);
}
