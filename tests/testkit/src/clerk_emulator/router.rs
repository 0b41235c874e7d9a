//! The HTTP front of the emulator: every request is recorded, meets the
//! faults and delays set for it, must carry the instance's secret key, and
//! goes by method and path to the part of Clerk that answers it; errors
//! carry Clerk's error body.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use super::faults::Fault;
use super::webhooks::Outbound;
use super::{ClerkEmulator, Shared, State, random_token};

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

/// What a route answers.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) retry_after: Option<String>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            retry_after: None,
        }
    }

    /// Clerk's error body.
    pub(super) fn error(status: u16, code: &str, message: &str, long_message: &str) -> Self {
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

    pub(super) fn not_found(what: &str) -> Self {
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

    pub(super) fn invalid(code: &str, long_message: &str) -> Self {
        Self::error(422, code, "is invalid", long_message)
    }
}

/// Stops the HTTP server when the last clone of the emulator goes away.
pub(super) struct ServerGuard(ServerHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // The stop command is sent at once; awaiting completion is not needed.
        drop(self.0.stop(false));
    }
}

/// Serves the emulator on `listener`, on the current runtime, until the
/// guard is dropped.
pub(super) fn serve(listener: TcpListener, shared: Arc<Shared>) -> ServerGuard {
    let data = web::Data::from(shared);
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
    ServerGuard(server_handle)
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
    // Faults and delays meet requests to users only.
    let is_users = path == "/v1/users" || path.starts_with("/v1/users/");

    let (index, fault, delay, answer_delay) = {
        let mut state = shared.lock();
        let (fault, delay, answer_delay) = if is_users {
            let fault = state.faults.next.pop_front().or_else(|| {
                let limit = state.faults.rate_limit.as_mut()?;
                limit.admit(Instant::now())
            });
            (fault, state.faults.delay, state.faults.answer_delay)
        } else {
            (None, Duration::ZERO, Duration::ZERO)
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
        (state.requests.len() - 1, fault, delay, answer_delay)
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

impl State {
    /// Answers one request, and the webhook its change sends, if any.
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
            ("GET", ["v1", "instance"]) if self.faults.instance_down => {
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
            ("GET", ["v1", "jwks"]) if self.faults.jwks_down => {
                (Reply::fault(Fault::Status(503)), None)
            }
            ("GET", ["v1", "jwks"]) => (Reply::ok(self.keys.jwks()), None),
            ("GET", ["v1", "users"]) => (self.list_users(query), None),
            ("GET", ["v1", "users", "count"]) => (
                Reply::ok(json!({ "object": "total_count", "total_count": self.users.len() })),
                None,
            ),
            ("GET" | "PATCH", ["v1", "users", id, ..]) if self.faults.hidden.contains(*id) => {
                (Reply::not_found("user"), None)
            }
            ("GET", ["v1", "users", id]) => match self.users.get(id) {
                Some(user) => (Reply::ok(user.clone()), None),
                None => (Reply::not_found("user"), None),
            },
            ("PATCH", ["v1", "users", id, "metadata"]) => self.patch_metadata(id, body),
            ("PATCH", ["v1", "users", id]) => self.patch_user(id, body),
            _ => (Reply::not_found("resource"), None),
        }
    }
}

/// The requests received, for assertions.
impl ClerkEmulator {
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
}
