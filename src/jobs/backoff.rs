//! Exponential backoff, for everything that asks again after a failure: the
//! push worker's retries, the walks' calls to Clerk, the confirmation of
//! the Clerk instance.

use std::time::Duration;

/// Doublings after which a delay grows no more, whatever the cap: a
/// million times the first delay is as long as any schedule here means.
const MAX_DOUBLINGS: u32 = 20;

/// The delays of a retry schedule: `first · 2^retry`, capped at `max`, and,
/// with jitter, scaled by a random factor in [0.5, 1] so that many failures
/// at once do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`, without jitter.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: false,
        }
    }

    /// The same delays, each scaled by a random factor in [0.5, 1].
    pub const fn with_jitter(self) -> Self {
        Self {
            jitter: true,
            ..self
        }
    }

    /// The delay before retry number `retry` (0: the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let full = self
            .first
            .saturating_mul(2_u32.saturating_pow(retry.min(MAX_DOUBLINGS)))
            .min(self.max);
        if self.jitter {
            full.mul_f64(rand::random_range(0.5..=1.0))
        } else {
            full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_cap() {
        let backoff = Backoff::new(SECOND, Duration::from_secs(60));
        let delays: Vec<u64> = (0..8).map(|retry| backoff.delay(retry).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn huge_retries_saturate_at_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(3_600), Duration::MAX);
        assert_eq!(
            backoff.delay(u32::MAX),
            Duration::from_secs(3_600) * (1 << 20)
        );
        let capped = Backoff::new(Duration::from_millis(250), Duration::from_secs(16));
        assert_eq!(capped.delay(u32::MAX), Duration::from_secs(16));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(30), Duration::MAX);
    }

    #[test]
    fn doubling_stops_after_twenty_doublings() {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(86_400));
        assert_eq!(backoff.delay(20), Duration::from_millis(1 << 20));
        assert_eq!(backoff.delay(21), Duration::from_millis(1 << 20));
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_delay() {
        let backoff = Backoff::new(SECOND, Duration::from_secs(600)).with_jitter();
        for retry in [0, 3, 9, 40] {
            let full = Backoff::new(SECOND, Duration::from_secs(600)).delay(retry);
            for _ in 0..200 {
                let delay = backoff.delay(retry);
                assert!(delay >= full / 2 && delay <= full, "{delay:?} of {full:?}");
            }
        }
    }
}
