//! `loadgen get`: an admin reading the panel's endpoints (statistics, a page
//! of the user list), timed per request.

use crate::drive::{self, drive};
use crate::patch::Admin;
use crate::webhooks::{self, Service};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub service: Service,
    #[command(flatten)]
    pub admin: Admin,
    /// The path and query to read, e.g. `/api/admin/stats` or
    /// `/api/admin/users?limit=50&role=INSTRUCTOR`.
    #[arg(long)]
    pub path: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Requests to send.
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = webhooks::client()?;
    let admin = format!("user_lgreader{:x}", rand::random::<u32>());
    let bearer = args.admin.sign_in(&client, &args.service, &admin).await?;
    let url = format!("{}{}", args.service.url, args.path);
    println!(
        "GET {} x {} at concurrency {}",
        args.path, args.requests, args.concurrency
    );
    let report = drive(args.concurrency, args.requests, |_| {
        drive::label(client.get(&url).bearer_auth(&bearer).send())
    })
    .await;
    report.print("GETs");
    Ok(())
}
