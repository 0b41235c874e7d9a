//! A stateful, in-process emulator of the parts of Clerk's Backend API the
//! service uses: the instance, users and their metadata, the user list,
//! JWKS, session tokens, and the webhooks Clerk sends (through Svix) when a
//! user changes. Each emulator is one instance, with a secret key and an
//! instance id of its own: two emulators are two instances.
//!
//! It behaves as Clerk does where the service depends on it: the secret key
//! is required, `PATCH /v1/users/{id}/metadata` deep-merges, `updated_at`
//! strictly increases, `PATCH /v1/users/{id}` refuses metadata (API version
//! 2026-05-12), and errors carry Clerk's error body. Faults (5xx, 429, delays)
//! can be injected, and every request is recorded for assertions.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use crate::svix;

/// The Backend API secret key the emulator accepts (of [`ClerkEmulator::start`]).
pub const SECRET_KEY: &str = "sk_test_emulator";
/// The instance id of [`ClerkEmulator::start`]'s emulator.
pub const INSTANCE_ID: &str = "ins_emulator";
/// The `iss` of the session tokens the emulator mints.
pub const ISSUER: &str = "https://clerk.emulator.test";
/// The default `azp` of minted session tokens.
pub const AUTHORIZED_PARTY: &str = "http://localhost:3000";
/// The `kid` of the primary signing key.
pub const PRIMARY_KID: &str = "ins_test_primary";
/// The `kid` of the rotated signing key (served after `publish_rotated_key`).
pub const ROTATED_KID: &str = "ins_test_rotated";

const PRIMARY_PRIVATE_PEM: &str = include_str!("../keys/primary.key.pem");
const PRIMARY_PUBLIC_PEM: &str = include_str!("../keys/primary.pub.pem");
const PRIMARY_JWK_N: &str = include_str!("../keys/primary.jwk.n");
const ROTATED_PRIVATE_PEM: &str = include_str!("../keys/rotated.key.pem");
const ROTATED_JWK_N: &str = include_str!("../keys/rotated.jwk.n");
const JWK_E: &str = "AQAB";

const DEFAULT_PAGE_LIMIT: usize = 10;
const MAX_PAGE_LIMIT: usize = 500;
const METADATA_KEYS: [&str; 3] = ["public_metadata", "private_metadata", "unsafe_metadata"];
/// Fields `PATCH /v1/users/{id}` still accepts (strings or null).
const USER_FIELDS: [&str; 4] = ["first_name", "last_name", "username", "external_id"];
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = "clerk-emulator";

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
}

/// How webhooks reach the target set with `send_webhooks_to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Sent in a background task right after each change.
    Immediate,
    /// Queued until `release_webhook`/`release_all_webhooks`.
    Held,
    /// Sent right after each change as Svix does behind a load balancer:
    /// to the endpoints in turn, retried (on the next one) until one
    /// answers 2xx, for up to [`SVIX_RETRY_DEADLINE`].
    Retried,
    /// Never sent: Svix gave up on them (the endpoint was down for longer
    /// than its retry schedule, or refused them all).
    Dropped,
}

/// How long a `Delivery::Retried` message is retried.
pub const SVIX_RETRY_DEADLINE: Duration = Duration::from_secs(60);

/// One request the emulator received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// When the request arrived.
    pub at: Instant,
    /// The `Clerk-API-Version` header.
    pub api_version: Option<String>,
    pub authorization: Option<String>,
    /// The JSON body; `Null` when there is none, a string when it is not JSON.
    pub body: Value,
    /// The status the emulator answered; 0 while the answer is still pending
    /// (see `set_delay`).
    pub status: u16,
    /// When the answer (and the request's effect) came; `None` until then.
    pub answered: Option<Instant>,
    /// The `User-Agent` header (the service names its replica there).
    pub user_agent: Option<String>,
}

/// A webhook queued in `Delivery::Held` mode.
#[derive(Clone, Debug)]
pub struct HeldWebhook {
    pub svix_id: String,
    /// `user.created`, `user.updated` or `user.deleted`.
    pub kind: String,
    pub user_id: String,
    /// The whole event envelope, exactly as it will be sent.
    pub body: Value,
}

/// A Clerk Backend API running on `127.0.0.1`, shared by clones.
#[derive(Clone)]
pub struct ClerkEmulator {
    shared: Arc<Shared>,
    url: String,
    _server: Arc<ServerGuard>,
}

/// Stops the HTTP server when the last clone of the emulator goes away.
struct ServerGuard(ServerHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // The stop command is sent at once; awaiting completion is not needed.
        drop(self.0.stop(false));
    }
}

struct Shared {
    state: Mutex<State>,
    /// The runtime that started the emulator: webhook deliveries run there.
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own
        // failure behind poison errors in every later call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends an Immediate webhook in the background (never under the lock).
    fn dispatch(self: &Arc<Self>, outbound: Option<Outbound>) {
        let Some(Outbound { target, message }) = outbound else {
            return;
        };
        let shared = Arc::clone(self);
        self.runtime.spawn(async move {
            match target.delivery {
                Delivery::Retried => deliver_until_accepted(&shared, &target, &message).await,
                _ => {
                    deliver(&shared.client, &target, &target.endpoints[0], &message).await;
                }
            }
            shared.lock().in_flight -= 1;
        });
    }
}

#[derive(Clone, Debug)]
enum Fault {
    Status(u16),
    /// 429 with this `Retry-After` value, exactly as given.
    RateLimited(String),
}

#[derive(Clone, Debug)]
struct Target {
    /// Where webhooks go; `Delivery::Retried` spreads them over all.
    endpoints: Vec<String>,
    secret: String,
    delivery: Delivery,
}

#[derive(Clone, Debug)]
struct Message {
    svix_id: String,
    kind: String,
    user_id: String,
    body: Value,
    /// The exact bytes that are signed and sent, every time.
    bytes: Vec<u8>,
}

impl Message {
    fn held(&self) -> HeldWebhook {
        HeldWebhook {
            svix_id: self.svix_id.clone(),
            kind: self.kind.clone(),
            user_id: self.user_id.clone(),
            body: self.body.clone(),
        }
    }
}

/// A webhook to deliver once the lock is released.
struct Outbound {
    target: Target,
    message: Message,
}

/// What a route answers.
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            retry_after: None,
        }
    }

    fn error(status: u16, code: &str, message: &str, long_message: &str) -> Self {
        Self {
            status,
            body: json!({
                "errors": [{
                    "message": message,
                    "long_message": long_message,
                    "code": code,
                }],
                "clerk_trace_id": random_token(32),
            }),
            retry_after: None,
        }
    }

    fn not_found(what: &str) -> Self {
        Self::error(
            404,
            "resource_not_found",
            "not found",
            &format!("{what} not found"),
        )
    }

    fn unauthenticated() -> Self {
        Self::error(
            401,
            "authentication_invalid",
            "Invalid authentication",
            "The secret key in the Authorization header is missing or invalid.",
        )
    }

    fn invalid(code: &str, long_message: &str) -> Self {
        Self::error(422, code, "is invalid", long_message)
    }

    fn fault(fault: Fault) -> Self {
        match fault {
            Fault::RateLimited(retry_after) => Self {
                retry_after: Some(retry_after),
                ..Self::error(
                    429,
                    "too_many_requests",
                    "Too Many Requests",
                    "Too many requests, retry later",
                )
            },
            Fault::Status(status) => {
                let code = match status {
                    400 => "bad_request",
                    401 => "authentication_invalid",
                    403 => "authorization_invalid",
                    404 => "resource_not_found",
                    422 => "form_param_format_invalid",
                    429 => "too_many_requests",
                    500.. => "internal_clerk_error",
                    _ => "request_failed",
                };
                Self::error(
                    status,
                    code,
                    "injected failure",
                    &format!("The Clerk emulator was told to answer {status}."),
                )
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// The only key this instance accepts.
    secret_key: String,
    /// `ins_…`: what `GET /v1/instance` answers, and webhooks carry.
    instance_id: String,
    /// `GET /v1/instance` answers 503 while set.
    instance_down: bool,
    users: HashMap<String, Value>,
    /// The last timestamp handed out, in ms: `tick` never repeats one.
    clock_ms: i64,
    faults: VecDeque<Fault>,
    delay: Duration,
    /// Requests to users are applied at once and answered this much later.
    answer_delay: Duration,
    requests: Vec<RecordedRequest>,
    jwks_requests: usize,
    rotated_published: bool,
    /// The primary key is no longer served (Clerk rotated it out).
    primary_retired: bool,
    /// `GET /v1/jwks` answers 503 while set.
    jwks_down: bool,
    /// Added to Clerk's clock, in ms: Clerk's `updated_at` runs ahead
    /// (or behind, when negative) of ours.
    skew_ms: i64,
    target: Option<Target>,
    /// Where the next `Delivery::Retried` message starts.
    next_endpoint: usize,
    /// `GET /v1/users` ignores `starting_after` (a broken proxy or cache).
    ignore_cursor: bool,
    /// The next `GET /v1/users` with `starting_after` refuses it, as Clerk
    /// refuses a cursor whose user was deleted.
    refuse_cursor: bool,
    /// `GET /v1/users` shows at most this many users in all (a truncated
    /// or wrong answer).
    list_cap: Option<usize>,
    /// Users Clerk does not show for now: left out of the list, 404 to
    /// lookups and writes.
    hidden: std::collections::HashSet<String>,
    held: VecDeque<Message>,
    /// Messages made in `Delivery::Dropped` mode: never sent.
    dropped: Vec<HeldWebhook>,
    /// Every message delivered (or being delivered) at least once, by svix id.
    sent: HashMap<String, Message>,
    /// Immediate deliveries started and not finished.
    in_flight: usize,
}

impl State {
    /// Takes held message `svix_id` out of the queue.
    fn take_held(&mut self, svix_id: &str) -> Message {
        let position = self
            .held
            .iter()
            .position(|message| message.svix_id == svix_id)
            .unwrap_or_else(|| panic!("no held webhook {svix_id}"));
        self.held
            .remove(position)
            .unwrap_or_else(|| panic!("no held webhook {svix_id}"))
    }

    fn current_target(&self) -> Target {
        self.target
            .clone()
            .expect("send_webhooks_to was called before any webhook existed")
    }

    /// Clerk's clock: milliseconds, strictly increasing across writes.
    fn tick(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_millis() + self.skew_ms;
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    fn insert_user(&mut self, id: &str, public_metadata: Value) -> (Value, Option<Outbound>) {
        assert!(
            !self.users.contains_key(id),
            "the Clerk emulator already has a user {id}"
        );
        assert!(
            public_metadata.is_object(),
            "public_metadata must be a JSON object, not {public_metadata}"
        );
        let now = self.tick();
        let user = new_user(id, public_metadata, now);
        self.users.insert(id.to_owned(), user.clone());
        let outbound = self.event("user.created", id, user.clone());
        (user, outbound)
    }

    /// Records a change for the webhook target: queued when Held, returned
    /// for delivery when Immediate, nothing when no target is set.
    fn event(&mut self, kind: &str, user_id: &str, data: Value) -> Option<Outbound> {
        let target = self.target.clone()?;
        let body = json!({
            "data": data,
            "instance_id": self.instance_id,
            "object": "event",
            "type": kind,
            "timestamp": chrono::Utc::now().timestamp_millis(),
            "event_attributes": {
                "http_request": { "client_ip": "", "user_agent": USER_AGENT },
            },
        });
        let message = Message {
            svix_id: format!("msg_{}", random_token(27)),
            kind: kind.to_owned(),
            user_id: user_id.to_owned(),
            bytes: serde_json::to_vec(&body).expect("a JSON value serializes"),
            body,
        };
        match target.delivery {
            Delivery::Held => {
                self.held.push_back(message);
                None
            }
            Delivery::Dropped => {
                self.dropped.push(message.held());
                None
            }
            Delivery::Immediate | Delivery::Retried => {
                self.in_flight += 1;
                self.sent.insert(message.svix_id.clone(), message.clone());
                Some(Outbound { target, message })
            }
        }
    }

    /// Deep-merges `patches` (metadata field → patch) into user `id`, bumps
    /// `updated_at` and emits `user.updated`.
    fn merge_metadata(
        &mut self,
        id: &str,
        patches: &Map<String, Value>,
    ) -> Option<(Value, Option<Outbound>)> {
        if !self.users.contains_key(id) {
            return None;
        }
        let now = self.tick();
        let user = self.users.get_mut(id)?;
        for (field, patch) in patches {
            if let Value::Object(patch) = patch {
                let target = user
                    .as_object_mut()?
                    .entry(field.clone())
                    .or_insert_with(|| json!({}));
                if !target.is_object() {
                    *target = json!({});
                }
                if let Value::Object(target) = target {
                    deep_merge(target, patch);
                }
            }
        }
        user["updated_at"] = json!(now);
        let user = user.clone();
        let outbound = self.event("user.updated", id, user.clone());
        Some((user, outbound))
    }

    fn route(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> (Reply, Option<Outbound>) {
        if !path.starts_with("/v1/") {
            return (Reply::not_found("resource"), None);
        }
        if authorization != Some(format!("Bearer {}", self.secret_key).as_str()) {
            return (Reply::unauthenticated(), None);
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["v1", "instance"]) if self.instance_down => {
                (Reply::fault(Fault::Status(503)), None)
            }
            ("GET", ["v1", "instance"]) => (
                Reply::ok(json!({
                    "object": "instance",
                    "id": self.instance_id,
                    "environment_type": "development",
                    "allowed_origins": null,
                    "workspace_id": null,
                })),
                None,
            ),
            ("GET", ["v1", "jwks"]) if self.jwks_down => (Reply::fault(Fault::Status(503)), None),
            ("GET", ["v1", "jwks"]) => (self.jwks(), None),
            ("GET", ["v1", "users"]) => (self.list_users(query), None),
            ("GET", ["v1", "users", "count"]) => (
                Reply::ok(json!({ "object": "total_count", "total_count": self.users.len() })),
                None,
            ),
            ("GET" | "PATCH", ["v1", "users", id, ..]) if self.hidden.contains(*id) => {
                (Reply::not_found("user"), None)
            }
            ("GET", ["v1", "users", id]) => match self.users.get(*id) {
                Some(user) => (Reply::ok(user.clone()), None),
                None => (Reply::not_found("user"), None),
            },
            ("PATCH", ["v1", "users", id, "metadata"]) => self.patch_metadata(id, body),
            ("PATCH", ["v1", "users", id]) => self.patch_user(id, body),
            _ => (Reply::not_found("resource"), None),
        }
    }

    fn jwks(&self) -> Reply {
        let mut keys = Vec::new();
        if !self.primary_retired {
            keys.push(SigningKey::Primary.jwk());
        }
        if self.rotated_published {
            keys.push(SigningKey::Rotated.jwk());
        }
        Reply::ok(json!({ "keys": keys }))
    }

    fn list_users(&mut self, query: &str) -> Reply {
        let mut limit = DEFAULT_PAGE_LIMIT;
        let mut offset = 0;
        let mut starting_after = None;
        let mut descending = false;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => limit = n,
                    _ => {
                        return Reply::invalid(
                            "form_param_format_invalid",
                            &format!("limit must be between 1 and {MAX_PAGE_LIMIT}, not {value}"),
                        );
                    }
                },
                "offset" => match value.parse::<usize>() {
                    Ok(n) => offset = n,
                    Err(_) => {
                        return Reply::invalid(
                            "form_param_format_invalid",
                            &format!("offset must be a non-negative integer, not {value}"),
                        );
                    }
                },
                "starting_after" if !self.ignore_cursor => {
                    starting_after = Some(value.into_owned());
                }
                "order_by" => match value.as_ref() {
                    "created_at" | "+created_at" => descending = false,
                    "-created_at" => descending = true,
                    _ => {
                        return Reply::invalid(
                            "form_param_value_invalid",
                            &format!("the emulator only orders by created_at, not {value}"),
                        );
                    }
                },
                _ => {}
            }
        }
        let mut users: Vec<&Value> = self
            .users
            .values()
            .filter(|user| {
                !user["id"]
                    .as_str()
                    .is_some_and(|id| self.hidden.contains(id))
            })
            .collect();
        users.sort_by(|a, b| {
            (a["created_at"].as_i64(), a["id"].as_str())
                .cmp(&(b["created_at"].as_i64(), b["id"].as_str()))
        });
        if descending {
            users.reverse();
        }
        if let Some(cap) = self.list_cap {
            users.truncate(cap);
        }
        let mut start = 0;
        if starting_after.is_some() && std::mem::take(&mut self.refuse_cursor) {
            return Reply::invalid(
                "form_param_value_invalid",
                "starting_after: the user was deleted (injected)",
            );
        }
        if let Some(after) = starting_after {
            match users.iter().position(|user| user["id"] == after.as_str()) {
                Some(position) => start = position + 1,
                None => {
                    return Reply::invalid(
                        "form_param_value_invalid",
                        &format!("starting_after: no user {after}"),
                    );
                }
            }
        }
        let page: Vec<Value> = users
            .into_iter()
            .skip(start + offset)
            .take(limit)
            .cloned()
            .collect();
        Reply::ok(Value::Array(page))
    }

    fn patch_metadata(&mut self, id: &str, body: Option<&Value>) -> (Reply, Option<Outbound>) {
        let Some(Value::Object(patches)) = body else {
            return (
                Reply::invalid(
                    "form_param_format_invalid",
                    "the request body must be a JSON object",
                ),
                None,
            );
        };
        for (field, patch) in patches {
            if !METADATA_KEYS.contains(&field.as_str()) {
                return (
                    Reply::invalid(
                        "form_param_unknown",
                        &format!("{field} is not a valid parameter for this request"),
                    ),
                    None,
                );
            }
            if !(patch.is_object() || patch.is_null()) {
                return (
                    Reply::invalid(
                        "form_param_format_invalid",
                        &format!("{field} must be a JSON object"),
                    ),
                    None,
                );
            }
        }
        match self.merge_metadata(id, patches) {
            Some((user, outbound)) => (Reply::ok(user), outbound),
            None => (Reply::not_found("user"), None),
        }
    }

    fn patch_user(&mut self, id: &str, body: Option<&Value>) -> (Reply, Option<Outbound>) {
        let Some(Value::Object(fields)) = body else {
            return (
                Reply::invalid(
                    "form_param_format_invalid",
                    "the request body must be a JSON object",
                ),
                None,
            );
        };
        for (field, value) in fields {
            if field.ends_with("_metadata") {
                return (
                    Reply::invalid(
                        "form_param_unknown",
                        &format!(
                            "{field} is not a valid parameter for this request: since API \
                             version 2026-05-12 metadata is updated with \
                             PATCH /v1/users/{{user_id}}/metadata"
                        ),
                    ),
                    None,
                );
            }
            if !USER_FIELDS.contains(&field.as_str()) {
                return (
                    Reply::invalid(
                        "form_param_unknown",
                        &format!("{field} is not a valid parameter for this request"),
                    ),
                    None,
                );
            }
            if !(value.is_string() || value.is_null()) {
                return (
                    Reply::invalid(
                        "form_param_format_invalid",
                        &format!("{field} must be a string or null"),
                    ),
                    None,
                );
            }
        }
        if !self.users.contains_key(id) {
            return (Reply::not_found("user"), None);
        }
        let now = self.tick();
        let Some(user) = self.users.get_mut(id) else {
            return (Reply::not_found("user"), None);
        };
        for (field, value) in fields {
            user[field.as_str()] = value.clone();
        }
        user["updated_at"] = json!(now);
        let user = user.clone();
        let outbound = self.event("user.updated", id, user.clone());
        (Reply::ok(user), outbound)
    }
}

/// Clerk's metadata merge: objects merge recursively, `null` removes the
/// key, anything else replaces it.
fn deep_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert_with(|| json!({}));
                if !slot.is_object() {
                    *slot = json!({});
                }
                if let Value::Object(slot) = slot {
                    deep_merge(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// A user in the shape of Clerk's Backend API (and of its webhooks).
fn new_user(id: &str, public_metadata: Value, now: i64) -> Value {
    let email_id = format!("idn_{}", random_token(27));
    json!({
        "id": id,
        "object": "user",
        "username": null,
        "first_name": null,
        "last_name": null,
        "image_url": format!("https://img.clerk.com/emulator/{id}"),
        "has_image": false,
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "password_enabled": true,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": format!("{id}@example.com"),
            "reserved": false,
            "linked_to": [],
            "created_at": now,
            "updated_at": now,
            "verification": {
                "status": "verified",
                "strategy": "admin",
                "attempts": null,
                "expire_at": null,
            },
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "public_metadata": public_metadata,
        "private_metadata": {},
        "unsafe_metadata": {},
        "external_id": null,
        "last_sign_in_at": null,
        "last_active_at": null,
        "banned": false,
        "locked": false,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "legal_accepted_at": null,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "created_at": now,
        "updated_at": now,
    })
}

/// `len` random alphanumeric characters.
fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// POSTs `message` to `target`, signed now; the status, or 0 when no HTTP
/// answer came back (connection refused, timeout).
async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    endpoint: &str,
    message: &Message,
) -> u16 {
    let timestamp = svix::now();
    let signature = svix::sign(&target.secret, &message.svix_id, timestamp, &message.bytes);
    let sent = client
        .post(endpoint)
        .header("svix-id", &message.svix_id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(message.bytes.clone())
        .send()
        .await;
    match sent {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Sends `message` to the target's endpoints in turn until one accepts it.
async fn deliver_until_accepted(shared: &Shared, target: &Target, message: &Message) {
    let deadline = Instant::now() + SVIX_RETRY_DEADLINE;
    let start = {
        let mut state = shared.lock();
        state.next_endpoint = state.next_endpoint.wrapping_add(1);
        state.next_endpoint
    };
    for attempt in 0.. {
        let endpoint = &target.endpoints[(start + attempt) % target.endpoints.len()];
        let status = deliver(&shared.client, target, endpoint, message).await;
        if (200..300).contains(&status) || Instant::now() > deadline {
            return;
        }
        let pause = Duration::from_millis(20 * u64::try_from(attempt.min(10)).unwrap_or(10));
        tokio::time::sleep(pause).await;
    }
}

/// Every request to the emulator: recorded, faulted or delayed as
/// configured, then routed.
async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let method = req.method().as_str().to_owned();
    let path = req.path().to_owned();
    let query = req.query_string().to_owned();
    let authorization = header("authorization");
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let recorded_body = match (&parsed, body.is_empty()) {
        (Some(value), _) => value.clone(),
        (None, true) => Value::Null,
        (None, false) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let is_users = path == "/v1/users" || path.starts_with("/v1/users/");

    let (index, fault, delay) = {
        let mut state = shared.lock();
        let fault = if is_users {
            state.faults.pop_front()
        } else {
            None
        };
        if path == "/v1/jwks" {
            state.jwks_requests += 1;
        }
        state.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            at: Instant::now(),
            api_version: header("clerk-api-version"),
            authorization: authorization.clone(),
            body: recorded_body,
            status: 0,
            answered: None,
            user_agent: header("user-agent"),
        });
        let delay = if is_users {
            state.delay
        } else {
            Duration::ZERO
        };
        (state.requests.len() - 1, fault, delay)
    };
    let answer_delay = if is_users {
        shared.lock().answer_delay
    } else {
        Duration::ZERO
    };

    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let (reply, outbound) = {
        let mut state = shared.lock();
        let (reply, outbound) = match fault {
            Some(fault) => (Reply::fault(fault), None),
            None => state.route(
                &method,
                &path,
                &query,
                authorization.as_deref(),
                parsed.as_ref(),
            ),
        };
        state.requests[index].status = reply.status;
        state.requests[index].answered = Some(Instant::now());
        (reply, outbound)
    };
    shared.clone().into_inner().dispatch(outbound);
    if !answer_delay.is_zero() {
        tokio::time::sleep(answer_delay).await;
    }

    let status = StatusCode::from_u16(reply.status).expect("a valid HTTP status");
    let mut response = HttpResponse::build(status);
    if let Some(retry_after) = reply.retry_after {
        response.insert_header(("Retry-After", retry_after));
    }
    response.json(reply.body)
}

impl ClerkEmulator {
    /// Starts the emulator on a free port of 127.0.0.1, as instance
    /// [`INSTANCE_ID`] with key [`SECRET_KEY`].
    pub async fn start() -> Self {
        Self::start_instance(SECRET_KEY, INSTANCE_ID).await
    }

    /// Starts another instance: one that accepts `secret_key` only and is
    /// `instance_id` (`ins_…`).
    pub async fn start_instance(secret_key: &str, instance_id: &str) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("a free port for the Clerk emulator");
        let port = listener
            .local_addr()
            .expect("the emulator's bound address")
            .port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                secret_key: secret_key.to_owned(),
                instance_id: instance_id.to_owned(),
                ..State::default()
            }),
            runtime: tokio::runtime::Handle::current(),
            client: reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client for webhooks"),
        });
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(2 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("the Clerk emulator listens")
        .run();
        let server_handle = server.handle();
        tokio::spawn(server);
        Self {
            shared,
            url: format!("http://127.0.0.1:{port}"),
            _server: Arc::new(ServerGuard(server_handle)),
        }
    }

    /// The base URL (`CLERK_API_URL`), without a trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The secret key this instance accepts (`CLERK_SECRET_KEY`).
    pub fn secret_key(&self) -> String {
        self.shared.lock().secret_key.clone()
    }

    /// This instance's id (`ins_…`).
    pub fn instance_id(&self) -> String {
        self.shared.lock().instance_id.clone()
    }

    /// While `down`, `GET /v1/instance` answers 503 (Clerk unreachable for
    /// that call).
    pub fn set_instance_down(&self, down: bool) {
        self.shared.lock().instance_down = down;
    }

    /// Creates a user as the dashboard would, with `public_metadata`
    /// `{"role": role}` (or `{}`), and sends `user.created`.
    pub fn add_user(&self, id: &str, role: Option<&str>) -> Value {
        let metadata = match role {
            Some(role) => json!({ "role": role }),
            None => json!({}),
        };
        self.add_user_with_metadata(id, metadata)
    }

    /// Creates a user with exactly this `public_metadata` and sends
    /// `user.created`.
    pub fn add_user_with_metadata(&self, id: &str, public_metadata: Value) -> Value {
        let (user, outbound) = self.shared.lock().insert_user(id, public_metadata);
        self.shared.dispatch(outbound);
        user
    }

    /// A dashboard edit of `public_metadata` (Clerk's deep merge); sends
    /// `user.updated`.
    pub fn edit_metadata(&self, id: &str, patch: Value) -> Value {
        assert!(patch.is_object(), "a metadata patch is a JSON object");
        let mut patches = Map::new();
        patches.insert("public_metadata".into(), patch);
        let merged = self.shared.lock().merge_metadata(id, &patches);
        let (user, outbound) =
            merged.unwrap_or_else(|| panic!("the Clerk emulator has no user {id}"));
        self.shared.dispatch(outbound);
        user
    }

    /// Deletes a user; sends `user.deleted`.
    pub fn delete_user(&self, id: &str) {
        let outbound = {
            let mut state = self.shared.lock();
            assert!(
                state.users.remove(id).is_some(),
                "the Clerk emulator has no user {id}"
            );
            state.event(
                "user.deleted",
                id,
                json!({ "deleted": true, "id": id, "object": "user" }),
            )
        };
        self.shared.dispatch(outbound);
    }

    /// The user as `GET /v1/users/{id}` would return it.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.shared.lock().users.get(id).cloned()
    }

    /// `public_metadata.role`, when it is a string.
    pub fn role(&self, id: &str) -> Option<String> {
        self.user(id)?["public_metadata"]["role"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn user_count(&self) -> usize {
        self.shared.lock().users.len()
    }

    /// The next `count` requests to `/v1/users...` answer `status` with a
    /// Clerk error body and no effect.
    pub fn fail_next(&self, count: usize, status: u16) {
        assert!(
            (400..=599).contains(&status),
            "fail_next takes an error status, not {status}"
        );
        let mut state = self.shared.lock();
        state
            .faults
            .extend(std::iter::repeat_n(Fault::Status(status), count));
    }

    /// The next `count` requests to `/v1/users...` answer 429 with
    /// `Retry-After: retry_after_secs` and no effect.
    pub fn rate_limit_next(&self, count: usize, retry_after_secs: u64) {
        self.rate_limit_next_with(count, &retry_after_secs.to_string());
    }

    /// Like [`rate_limit_next`](Self::rate_limit_next), with any
    /// `Retry-After` value (an HTTP date, a number too large for a clock).
    pub fn rate_limit_next_with(&self, count: usize, retry_after: &str) {
        let mut state = self.shared.lock();
        state.faults.extend(std::iter::repeat_n(
            Fault::RateLimited(retry_after.to_owned()),
            count,
        ));
    }

    /// While set, the user list ignores `starting_after`: every page is
    /// the first.
    pub fn set_ignore_cursor(&self, ignore: bool) {
        self.shared.lock().ignore_cursor = ignore;
    }

    /// The next page asked for after a cursor is refused as Clerk refuses
    /// a cursor whose user was deleted meanwhile (422).
    pub fn refuse_next_cursor(&self) {
        self.shared.lock().refuse_cursor = true;
    }

    /// From now on the user list shows at most `cap` users in all (`None`:
    /// all): an empty or truncated answer, as a wrong proxy or instance
    /// might give.
    pub fn cap_list(&self, cap: Option<usize>) {
        self.shared.lock().list_cap = cap;
    }

    /// Clerk stops showing user `id` (left out of the list, 404 to a
    /// lookup or a write) until [`show_user`](Self::show_user): no webhook
    /// is sent.
    pub fn hide_user(&self, id: &str) {
        self.shared.lock().hidden.insert(id.to_owned());
    }

    /// Clerk shows user `id` again, as it was.
    pub fn show_user(&self, id: &str) {
        self.shared.lock().hidden.remove(id);
    }

    /// Forgets the faults not yet used up.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Applies each request to users at once and answers it `delay` later
    /// (a caller that dies meanwhile never learns that it landed).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.shared.lock().answer_delay = delay;
    }

    /// Every `/v1/users...` request waits this long before taking effect
    /// and answering (`Duration::ZERO` to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The `PATCH /v1/users/{user_id}/metadata` requests received.
    pub fn metadata_patches(&self, user_id: &str) -> Vec<RecordedRequest> {
        let path = format!("/v1/users/{user_id}/metadata");
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|request| request.method == "PATCH" && request.path == path)
            .cloned()
            .collect()
    }

    /// How many requests `GET /v1/jwks` received (authorized or not).
    pub fn jwks_requests(&self) -> usize {
        self.shared.lock().jwks_requests
    }

    /// From now on, every change is sent as a webhook to `endpoint`, signed
    /// with `secret` (`whsec_…`).
    pub fn send_webhooks_to(&self, endpoint: &str, secret: &str, delivery: Delivery) {
        self.send_webhooks_to_any(&[endpoint.to_owned()], secret, delivery);
    }

    /// Like [`send_webhooks_to`](Self::send_webhooks_to), with several
    /// endpoints (replicas); held messages are released to the first.
    pub fn send_webhooks_to_any(&self, endpoints: &[String], secret: &str, delivery: Delivery) {
        assert!(!endpoints.is_empty(), "webhooks need an endpoint");
        self.shared.lock().target = Some(Target {
            endpoints: endpoints.to_vec(),
            secret: secret.to_owned(),
            delivery,
        });
    }

    /// The webhooks made in Dropped mode (never sent), oldest first.
    pub fn dropped_webhooks(&self) -> Vec<HeldWebhook> {
        self.shared.lock().dropped.clone()
    }

    /// The webhooks waiting in Held mode, oldest first.
    pub fn held_webhooks(&self) -> Vec<HeldWebhook> {
        self.shared.lock().held.iter().map(Message::held).collect()
    }

    /// Delivers one held webhook now; the receiver's status (0 when it did
    /// not answer).
    pub async fn release_webhook(&self, svix_id: &str) -> u16 {
        let (target, message) = {
            let mut state = self.shared.lock();
            let message = state.take_held(svix_id);
            state.sent.insert(message.svix_id.clone(), message.clone());
            (state.current_target(), message)
        };
        deliver(&self.shared.client, &target, &target.endpoints[0], &message).await
    }

    /// Svix gives up on one held webhook: it is never delivered.
    pub fn lose_webhook(&self, svix_id: &str) {
        let mut state = self.shared.lock();
        let message = state.take_held(svix_id);
        state.dropped.push(message.held());
    }

    /// Delivers every held webhook, oldest first (newest first when
    /// `reverse`), one after the other; their statuses in that order.
    pub async fn release_all_webhooks(&self, reverse: bool) -> Vec<u16> {
        let (target, mut messages) = {
            let mut state = self.shared.lock();
            let messages: Vec<Message> = state.held.drain(..).collect();
            for message in &messages {
                state.sent.insert(message.svix_id.clone(), message.clone());
            }
            (state.current_target(), messages)
        };
        if reverse {
            messages.reverse();
        }
        let mut statuses = Vec::with_capacity(messages.len());
        for message in &messages {
            statuses
                .push(deliver(&self.shared.client, &target, &target.endpoints[0], message).await);
        }
        statuses
    }

    /// Sends an already delivered (or released) message again, as a Svix
    /// retry does: same id and body, fresh timestamp and signature.
    pub async fn redeliver(&self, svix_id: &str) -> u16 {
        let (target, message) = {
            let state = self.shared.lock();
            let message = state
                .sent
                .get(svix_id)
                .cloned()
                .unwrap_or_else(|| panic!("webhook {svix_id} was never delivered"));
            (state.current_target(), message)
        };
        deliver(&self.shared.client, &target, &target.endpoints[0], &message).await
    }

    /// Waits until every Immediate delivery started so far has finished
    /// (panics after 10 s).
    pub async fn wait_for_deliveries(&self) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let in_flight = self.shared.lock().in_flight;
            if in_flight == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{in_flight} webhook deliveries still unfinished after {DELIVERY_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A session token for `sub`, as Clerk's Frontend API issues it.
    pub fn mint_token(&self, sub: &str) -> String {
        self.mint_token_custom(sub, json!({}), Some("JWT"))
    }

    /// A token with exactly `claims`, signed RS256 by `key` under its `kid`.
    pub fn mint_token_with(&self, key: SigningKey, claims: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid().to_owned());
        let encoding_key = EncodingKey::from_rsa_pem(key.private_pem().as_bytes())
            .expect("the test signing key is an RSA PEM");
        jsonwebtoken::encode(&header, &claims, &encoding_key).expect("signing a test token")
    }

    /// From now on `GET /v1/jwks` also serves the rotated key.
    pub fn publish_rotated_key(&self) {
        self.shared.lock().rotated_published = true;
    }

    /// From now on `GET /v1/jwks` no longer serves the primary key.
    pub fn retire_primary_key(&self) {
        self.shared.lock().primary_retired = true;
    }

    /// While `down`, `GET /v1/jwks` answers 503.
    pub fn set_jwks_down(&self, down: bool) {
        self.shared.lock().jwks_down = down;
    }

    /// Runs Clerk's clock `skew` ahead of ours (behind when negative).
    pub fn set_clock_skew(&self, skew: chrono::TimeDelta) {
        self.shared.lock().skew_ms = skew.num_milliseconds();
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
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(SigningKey::Primary.kid().to_owned());
        header.typ = typ.map(str::to_owned);
        let encoding_key = EncodingKey::from_rsa_pem(SigningKey::Primary.private_pem().as_bytes())
            .expect("the test signing key is an RSA PEM");
        jsonwebtoken::encode(&header, &all, &encoding_key).expect("signing a test token")
    }
}
