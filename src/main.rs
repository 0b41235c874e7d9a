use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    clerk_role_sync::cli::run().await
}
