//! Calls to Clerk from the command line tools: paced, and retried on 429
//! (after `Retry-After`), 5xx and timeouts.

use std::future::Future;
use std::time::Duration;

use super::Pacer;
use crate::clerk::ClerkError;

/// Tries before a transient failure is given up on.
const MAX_ATTEMPTS: u32 = 10;

/// Runs `call` in the pacer's next slot until it succeeds, fails for good, or
/// has failed [`MAX_ATTEMPTS`] times in a row.
pub async fn call_clerk<T, F, Fut>(pacer: &Pacer, mut call: F) -> Result<T, ClerkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClerkError>>,
{
    let mut attempt = 0;
    loop {
        pacer.wait_for_slot().await;
        attempt += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() && attempt < MAX_ATTEMPTS => {
                let wait = match &error {
                    ClerkError::RateLimited {
                        retry_after: Some(wait),
                    } => *wait,
                    _ => Duration::from_millis(250) * 2_u32.pow(attempt.min(6)),
                };
                tracing::warn!(%error, attempt, wait = ?wait, "Clerk call failed; retrying");
                pacer.pause(wait);
            }
            Err(error) => return Err(error),
        }
    }
}
