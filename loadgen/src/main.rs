//! Load generator for clerk-role-sync: drives a running service with
//! Svix-signed webhooks or admin PATCHes and prints throughput and latency,
//! mints admin session tokens, and seeds a database with many users.
//!
//! The load runs on one thread, so that on a small machine it leaves the
//! other cores to the service and its database.

mod drive;
mod patch;
mod read;
mod rss;
mod seed;
mod token;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send signed `user.created`/`user.updated` webhooks.
    Webhooks(webhooks::Args),
    /// Change users' roles through `PATCH /api/admin/users/{id}`.
    Patch(patch::Args),
    /// Read an admin endpoint, timing each request.
    Get(read::Args),
    /// Print a session token the service accepts (with `CLERK_JWT_KEY` set
    /// to the public half of `--key`).
    Token {
        /// The RSA private key (PEM) to sign with.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        claims: token::Claims,
    },
    /// Load many users straight into a database (PostgreSQL or SQLite).
    Seed(seed::Args),
}

fn main() -> anyhow::Result<()> {
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match Cli::parse().command {
        Command::Webhooks(args) => one_thread()?.block_on(webhooks::run(args)),
        Command::Patch(args) => one_thread()?.block_on(patch::run(args)),
        Command::Get(args) => one_thread()?.block_on(read::run(args)),
        Command::Token { key, claims } => {
            println!("{}", token::mint(&key, &claims)?);
            Ok(())
        }
        // The embedded migrations need a multi-threaded runtime.
        Command::Seed(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(seed::run(args)),
    }
}
