//! The `clerk-role-sync` binary: the command line of [`clerk_role_sync::cli`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    clerk_role_sync::cli::run().await
}
