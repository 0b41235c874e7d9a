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
//!
//! This file holds [`ClerkEmulator`], the instance it is and the state its
//! parts share. Each part, with the emulator's methods that drive it, has a
//! file of its own:
//! - `users.rs`: the user store, Clerk's metadata merge and clock, the list;
//! - `tokens.rs`: the signing keys, the JWKS and session tokens;
//! - `webhooks.rs`: the Svix-signed webhooks sent to the service;
//! - `faults.rs`: failures, rate limits, slowness and wrong answers on demand;
//! - `router.rs`: the HTTP front that records each request, applies the
//!   faults and maps it to the part that answers.

mod faults;
mod router;
mod tokens;
mod users;
mod webhooks;

use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::Rng as _;
use rand::distr::Alphanumeric;

pub use router::RecordedRequest;
pub use tokens::{
    AUTHORIZED_PARTY, ISSUER, PRIMARY_KID, ROTATED_KID, SigningKey, primary_public_pem,
};
pub use webhooks::{Delivery, HeldWebhook, SVIX_RETRY_DEADLINE};

use faults::Faults;
use router::ServerGuard;
use tokens::PublishedKeys;
use users::UserStore;
use webhooks::Webhooks;

/// The Backend API secret key the emulator accepts (of [`ClerkEmulator::start`]).
pub const SECRET_KEY: &str = "sk_test_emulator";
/// The instance id of [`ClerkEmulator::start`]'s emulator.
pub const INSTANCE_ID: &str = "ins_emulator";

/// A Clerk Backend API running on `127.0.0.1`, shared by clones.
#[derive(Clone)]
pub struct ClerkEmulator {
    shared: Arc<Shared>,
    url: String,
    _server: Arc<ServerGuard>,
}

struct Shared {
    state: Mutex<State>,
    /// The runtime that started the emulator: webhook deliveries run there.
    runtime: tokio::runtime::Handle,
    /// Sends the webhooks.
    client: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own
        // failure behind poison errors in every later call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the instance knows, under one lock.
#[derive(Default)]
struct State {
    /// The only key this instance accepts.
    secret_key: String,
    /// `ins_…`: what `GET /v1/instance` answers, and webhooks carry.
    instance_id: String,
    users: UserStore,
    /// The keys `GET /v1/jwks` serves.
    keys: PublishedKeys,
    /// Where changes are sent, and the messages held, dropped or sent.
    webhooks: Webhooks,
    faults: Faults,
    /// Every request received, in order of arrival.
    requests: Vec<RecordedRequest>,
    jwks_requests: usize,
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
            client: webhooks::client(),
        });
        let server = router::serve(listener, Arc::clone(&shared));
        Self {
            shared,
            url: format!("http://127.0.0.1:{port}"),
            _server: Arc::new(server),
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
}

/// `len` random alphanumeric characters.
fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
