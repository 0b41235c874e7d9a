//! Calls to Clerk from the walks of its user list (backfill, the drift
//! audit): paced, and retried on 429 (after `Retry-After`, clamped as the
//! push worker clamps it), 5xx and timeouts.

use std::future::Future;
use std::time::Duration;

use super::ClerkBudget;
use super::backoff::Backoff;
use crate::clerk::ClerkError;

/// The longest wait of a walk that has no configured one (`backfill`): the
/// default of `CLERK_PUSH_RETRY_MAX_SECS`.
pub const LONGEST_WAIT: Duration = Duration::from_secs(600);

/// Tries before a transient failure is given up on.
const MAX_ATTEMPTS: u32 = 10;

/// Waits after a failure that Clerk gave no `Retry-After` for: 0.5 s,
/// doubling up to 16 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(16));

/// Runs `call` in the next slot of the Clerk budget until it succeeds, fails for good, or
/// has failed [`MAX_ATTEMPTS`] times in a row. No wait is longer than
/// `max_wait`, whatever Clerk's `Retry-After` says.
pub async fn call_clerk<T, F, Fut>(
    budget: &ClerkBudget,
    max_wait: Duration,
    mut call: F,
) -> Result<T, ClerkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClerkError>>,
{
    let mut attempt = 0;
    loop {
        budget.wait_for_slot().await;
        attempt += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() && attempt < MAX_ATTEMPTS => {
                let wait = match &error {
                    ClerkError::RateLimited {
                        retry_after: Some(wait),
                    } => *wait,
                    _ => BACKOFF.delay(attempt - 1),
                }
                .min(max_wait);
                tracing::warn!(%error, attempt, wait = ?wait, "Clerk call failed; retrying");
                // Only Clerk's limit concerns every replica; any other
                // failure holds this walk alone.
                if matches!(error, ClerkError::RateLimited { .. }) {
                    budget.pause(wait).await;
                } else {
                    tokio::time::sleep(wait).await;
                }
            }
            Err(error) => return Err(error),
        }
    }
}
