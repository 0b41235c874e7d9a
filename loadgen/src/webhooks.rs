//! `loadgen webhooks`: Svix-signed Clerk user events, as fast as the
//! service takes them.

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::drive::{self, drive};
use testkit::svix;

use crate::rss;

/// A captured Clerk `user.updated` body: every event is built from it.
const TEMPLATE: &str =
    include_str!("../../tests/fixtures/clerk-webhooks/user.updated-received.json");

pub const ROLES: [&str; 3] = ["STUDENT", "INSTRUCTOR", "ADMIN"];

/// The service under load.
#[derive(Debug, clap::Args)]
pub struct Service {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The webhook signing secret the service is configured with.
    #[arg(long, env = "CLERK_WEBHOOK_SECRET")]
    pub secret: String,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub service: Service,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Events to send.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Share of events that update an already created user (the rest create
    /// new, distinct users).
    #[arg(long, default_value_t = 0.5)]
    pub updated: f64,
    /// Share of events that repeat an earlier message (same Svix id).
    #[arg(long, default_value_t = 0.05)]
    pub duplicates: f64,
    /// Random seed (the user ids also carry a run tag drawn from it, so
    /// that runs against the same database create new users).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The service's process id: reports its RSS before and during the run.
    #[arg(long)]
    pub service_pid: Option<u32>,
}

/// One signed message, ready to send.
pub struct Message {
    pub id: String,
    pub body: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let messages = plan(&args, seed)?;
    println!(
        "sending {} events ({:.0}% updates, {:.0}% duplicates) at concurrency {}, seed {seed}",
        messages.len(),
        args.updated * 100.0,
        args.duplicates * 100.0,
        args.concurrency
    );
    let client = client()?;
    let sampler = args
        .service_pid
        .map(|pid| (rss::read_kib(pid).unwrap_or(0), rss::Sampler::start(pid)));
    let report = drive(args.concurrency, messages.len(), |i| {
        let message = &messages[i];
        drive::label(send(&client, &args.service, message))
    })
    .await;
    report.print("events");
    if let Some((idle, sampler)) = sampler {
        sampler.report(idle);
    }
    Ok(())
}

/// The HTTP client of a run: keeps connections open between requests.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Posts `message`, signed now.
pub async fn send(
    client: &reqwest::Client,
    service: &Service,
    message: &Message,
) -> reqwest::Result<reqwest::Response> {
    let timestamp = svix::now();
    let signature = svix::sign(
        &service.secret,
        &message.id,
        timestamp,
        message.body.as_bytes(),
    );
    client
        .post(format!("{}/api/webhooks/clerk", service.url))
        .header("content-type", "application/json")
        .header("svix-id", &message.id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(message.body.clone())
        .send()
        .await
}

/// The messages of a run, built before the clock starts.
fn plan(args: &Args, seed: u64) -> anyhow::Result<Vec<Message>> {
    let template: Value = serde_json::from_str(TEMPLATE).context("the event template")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let tag = format!("{:x}", seed & 0xff_ffff_ffff);
    let base_ms = chrono::Utc::now().timestamp_millis();
    let mut created = 0usize;
    let mut messages: Vec<Message> = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let roll: f64 = rng.random();
        if roll < args.duplicates && !messages.is_empty() {
            let earlier = &messages[rng.random_range(0..messages.len())];
            let repeat = Message {
                id: earlier.id.clone(),
                body: earlier.body.clone(),
            };
            messages.push(repeat);
            continue;
        }
        let (kind, user) = if roll < args.duplicates + args.updated && created > 0 {
            ("user.updated", rng.random_range(0..created))
        } else {
            created += 1;
            ("user.created", created - 1)
        };
        let role = ROLES[rng.random_range(0..ROLES.len())];
        let id = format!("user_lg{tag}x{user}");
        // Later events are newer in Clerk's clock.
        let body = event(&template, kind, &id, base_ms + i as i64, role);
        messages.push(Message {
            id: format!("msg_lg{tag}x{i}"),
            body: body.to_string(),
        });
    }
    Ok(messages)
}

/// A `user.created` or `user.updated` event for `id` with `role`.
pub fn event(template: &Value, kind: &str, id: &str, updated_at: i64, role: &str) -> Value {
    let mut event = template.clone();
    event["type"] = json!(kind);
    let data = &mut event["data"];
    data["id"] = json!(id);
    data["updated_at"] = json!(updated_at);
    data["email_addresses"][0]["email_address"] = json!(format!("{id}@example.com"));
    data["public_metadata"] = json!({ "role": role });
    event
}

/// Creates users `ids` with `role` through the webhook (set-up of other runs).
pub async fn create_users(
    client: &reqwest::Client,
    service: &Service,
    ids: &[String],
    role: &str,
) -> anyhow::Result<()> {
    let template: Value = serde_json::from_str(TEMPLATE).context("the event template")?;
    let base_ms = chrono::Utc::now().timestamp_millis();
    let messages: Vec<Message> = ids
        .iter()
        .map(|id| Message {
            id: format!("msg_setup_{id}"),
            body: event(&template, "user.created", id, base_ms, role).to_string(),
        })
        .collect();
    let report = drive(16, messages.len(), |i| {
        drive::label(send(client, service, &messages[i]))
    })
    .await;
    let failed: usize = report
        .labels
        .iter()
        .filter(|(label, _)| !matches!(label.as_str(), "applied" | "unchanged" | "duplicate"))
        .map(|(_, n)| n)
        .sum();
    anyhow::ensure!(failed == 0, "creating users failed: {:?}", report.labels);
    Ok(())
}
