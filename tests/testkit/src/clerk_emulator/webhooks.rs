//! The webhooks Clerk sends through Svix when a user changes: an event
//! envelope signed with the endpoint's `whsec_` secret and POSTed to the
//! service, sent at once, held until released, retried over several
//! endpoints until one accepts it, or dropped; and sent again as a Svix
//! retry does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ClerkEmulator, Shared, random_token};
use crate::svix;

/// How long a `Delivery::Retried` message is retried.
pub const SVIX_RETRY_DEADLINE: Duration = Duration::from_secs(60);

const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = "clerk-emulator";

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

/// The HTTP client that sends the webhooks.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client for webhooks")
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
pub(super) struct Outbound {
    target: Target,
    message: Message,
}

/// Where changes are sent, and the messages in each state.
#[derive(Default)]
pub(super) struct Webhooks {
    target: Option<Target>,
    /// Where the next `Delivery::Retried` message starts.
    next_endpoint: usize,
    held: VecDeque<Message>,
    /// Messages made in `Delivery::Dropped` mode: never sent.
    dropped: Vec<HeldWebhook>,
    /// Every message delivered (or being delivered) at least once, by svix id.
    sent: HashMap<String, Message>,
    /// Immediate deliveries started and not finished.
    in_flight: usize,
}

impl Webhooks {
    /// Records a change of `instance_id` for the webhook target: queued
    /// when Held, returned for delivery when Immediate, nothing when no
    /// target is set.
    pub(super) fn event(
        &mut self,
        instance_id: &str,
        kind: &str,
        user_id: &str,
        data: Value,
    ) -> Option<Outbound> {
        let target = self.target.clone()?;
        let body = json!({
            "data": data,
            "instance_id": instance_id,
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
}

impl Shared {
    /// Sends an Immediate webhook in the background (never under the lock).
    pub(super) fn dispatch(self: &Arc<Self>, outbound: Option<Outbound>) {
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
            shared.lock().webhooks.in_flight -= 1;
        });
    }
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
        let webhooks = &mut state.webhooks;
        webhooks.next_endpoint = webhooks.next_endpoint.wrapping_add(1);
        webhooks.next_endpoint
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

/// Where webhooks go, and the held and sent messages, driven by the test.
impl ClerkEmulator {
    /// From now on, every change is sent as a webhook to `endpoint`, signed
    /// with `secret` (`whsec_…`).
    pub fn send_webhooks_to(&self, endpoint: &str, secret: &str, delivery: Delivery) {
        self.send_webhooks_to_any(&[endpoint.to_owned()], secret, delivery);
    }

    /// Like [`send_webhooks_to`](Self::send_webhooks_to), with several
    /// endpoints (replicas); held messages are released to the first.
    pub fn send_webhooks_to_any(&self, endpoints: &[String], secret: &str, delivery: Delivery) {
        assert!(!endpoints.is_empty(), "webhooks need an endpoint");
        self.shared.lock().webhooks.target = Some(Target {
            endpoints: endpoints.to_vec(),
            secret: secret.to_owned(),
            delivery,
        });
    }

    /// The webhooks made in Dropped mode (never sent), oldest first.
    pub fn dropped_webhooks(&self) -> Vec<HeldWebhook> {
        self.shared.lock().webhooks.dropped.clone()
    }

    /// The webhooks waiting in Held mode, oldest first.
    pub fn held_webhooks(&self) -> Vec<HeldWebhook> {
        self.shared
            .lock()
            .webhooks
            .held
            .iter()
            .map(Message::held)
            .collect()
    }

    /// Delivers one held webhook now; the receiver's status (0 when it did
    /// not answer).
    pub async fn release_webhook(&self, svix_id: &str) -> u16 {
        let (target, message) = {
            let webhooks = &mut self.shared.lock().webhooks;
            let message = webhooks.take_held(svix_id);
            webhooks
                .sent
                .insert(message.svix_id.clone(), message.clone());
            (webhooks.current_target(), message)
        };
        deliver(&self.shared.client, &target, &target.endpoints[0], &message).await
    }

    /// Svix gives up on one held webhook: it is never delivered.
    pub fn lose_webhook(&self, svix_id: &str) {
        let webhooks = &mut self.shared.lock().webhooks;
        let message = webhooks.take_held(svix_id);
        webhooks.dropped.push(message.held());
    }

    /// Delivers every held webhook, oldest first (newest first when
    /// `reverse`), one after the other; their statuses in that order.
    pub async fn release_all_webhooks(&self, reverse: bool) -> Vec<u16> {
        let (target, mut messages) = {
            let webhooks = &mut self.shared.lock().webhooks;
            let messages: Vec<Message> = webhooks.held.drain(..).collect();
            for message in &messages {
                webhooks
                    .sent
                    .insert(message.svix_id.clone(), message.clone());
            }
            (webhooks.current_target(), messages)
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
            let webhooks = &self.shared.lock().webhooks;
            let message = webhooks
                .sent
                .get(svix_id)
                .cloned()
                .unwrap_or_else(|| panic!("webhook {svix_id} was never delivered"));
            (webhooks.current_target(), message)
        };
        deliver(&self.shared.client, &target, &target.endpoints[0], &message).await
    }

    /// Waits until every Immediate delivery started so far has finished
    /// (panics after 10 s).
    pub async fn wait_for_deliveries(&self) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let in_flight = self.shared.lock().webhooks.in_flight;
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
}
