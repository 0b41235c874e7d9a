//! `loadgen patch`: admins changing roles through the REST API.

use std::path::PathBuf;

use serde_json::json;

use crate::drive::{self, drive};
use crate::webhooks::{ROLES, Service};
use crate::{rss, token, webhooks};

/// An admin of the service's, created through the webhook.
#[derive(Debug, clap::Args)]
pub struct Admin {
    /// The RSA private key (PEM) whose public half is the service's
    /// `CLERK_JWT_KEY`.
    #[arg(long)]
    pub key: PathBuf,
    /// `iss` of the admin's token, when the service pins one.
    #[arg(long)]
    pub issuer: Option<String>,
    /// `azp` of the admin's token, when the service checks it.
    #[arg(long)]
    pub azp: Option<String>,
}

impl Admin {
    /// Creates admin `id` and returns a session token for it.
    pub async fn sign_in(
        &self,
        client: &reqwest::Client,
        service: &Service,
        id: &str,
    ) -> anyhow::Result<String> {
        webhooks::create_users(client, service, &[id.to_owned()], "ADMIN").await?;
        token::mint(
            &self.key,
            &token::Claims {
                sub: id.to_owned(),
                ttl_secs: 3600,
                issuer: self.issuer.clone(),
                azp: self.azp.clone(),
            },
        )
    }
}

/// The admin and the target users are created through the webhook before
/// the clock starts.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub service: Service,
    #[command(flatten)]
    pub admin: Admin,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// PATCHes to send; each one changes its user's role.
    #[arg(long, default_value_t = 5_000)]
    pub requests: usize,
    /// Distinct users the PATCHes go round.
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// The service's process id: reports its RSS before and during the run.
    #[arg(long)]
    pub service_pid: Option<u32>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = format!("{:x}", rand::random::<u32>());
    let admin = format!("user_lgadmin{tag}");
    let users: Vec<String> = (0..args.users.max(1))
        .map(|i| format!("user_lgp{tag}x{i}"))
        .collect();
    let client = webhooks::client()?;
    let bearer = args.admin.sign_in(&client, &args.service, &admin).await?;
    webhooks::create_users(&client, &args.service, &users, "STUDENT").await?;
    println!(
        "sending {} role changes over {} users at concurrency {}",
        args.requests,
        users.len(),
        args.concurrency
    );
    let sampler = args
        .service_pid
        .map(|pid| (rss::read_kib(pid).unwrap_or(0), rss::Sampler::start(pid)));
    let report = drive(args.concurrency, args.requests, |i| {
        // Round r gives every user ROLES[(r + 1) % 3]: always a change.
        let user = &users[i % users.len()];
        let role = ROLES[(i / users.len() + 1) % ROLES.len()];
        drive::label(
            client
                .patch(format!("{}/api/admin/users/{user}", args.service.url))
                .bearer_auth(&bearer)
                .json(&json!({ "role": role }))
                .send(),
        )
    })
    .await;
    report.print("PATCHes");
    if let Some((idle, sampler)) = sampler {
        sampler.report(idle);
    }
    Ok(())
}
