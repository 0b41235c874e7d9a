//! Paces one process's requests: a steady rate, and a pause. A walk of
//! Clerk's users keeps to its share of the Clerk budget with it
//! ([`ClerkBudget`](super::ClerkBudget) holds the budget every replica
//! shares).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Hands out send slots at most `rate` per second; after a pause no slot is
/// given before it ends.
///
/// Slots not used while idle are not saved up: Clerk counts requests per
/// window, so a quiet minute must not be followed by a burst.
pub struct Pacer {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    next_slot: Instant,
    paused_until: Instant,
}

impl Pacer {
    pub fn new(rate_per_sec: f64) -> Self {
        let now = Instant::now();
        Self {
            interval: Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001)),
            state: Mutex::new(State {
                next_slot: now,
                paused_until: now,
            }),
        }
    }

    /// Reserves the next slot and returns when it starts.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return now;
        };
        let slot = state.next_slot.max(state.paused_until).max(now);
        state.next_slot = slot.checked_add(self.interval).unwrap_or(slot);
        slot
    }

    /// Waits for a slot, and then for any pause that began while waiting.
    pub async fn wait_for_slot(&self) {
        tokio::time::sleep_until(self.reserve()).await;
        while let Some(until) = self.paused_until().filter(|until| *until > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        self.state.lock().ok().map(|state| state.paused_until)
    }

    /// Stops every slot from starting before `duration` has passed (callers
    /// clamp it; a duration too far out to represent pauses as long as it can).
    pub fn pause(&self, duration: Duration) {
        if let Ok(mut state) = self.state.lock() {
            let now = Instant::now();
            let until = now
                .checked_add(duration)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
            state.paused_until = state.paused_until.max(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_rate() {
        let pacer = Pacer::new(10.0);
        let first = pacer.reserve();
        let second = pacer.reserve();
        let third = pacer.reserve();
        assert_eq!(second - first, Duration::from_millis(100));
        assert_eq!(third - second, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_also_holds_slots_reserved_before_it() {
        let pacer = Pacer::new(1.0);
        let start = Instant::now();
        pacer.reserve();
        let waiting = pacer.wait_for_slot();
        pacer.pause(Duration::from_secs(5));
        waiting.await;
        assert!(Instant::now() >= start + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn slots_not_used_while_idle_are_not_saved_up() {
        let pacer = Pacer::new(10.0);
        let start = Instant::now();
        assert_eq!(pacer.reserve(), start, "a fresh pacer has its first slot");
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(pacer.reserve(), now, "one slot now");
        assert_eq!(
            pacer.reserve(),
            now + Duration::from_millis(100),
            "not a minute's worth"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_too_long_to_represent_does_not_panic() {
        let pacer = Pacer::new(10.0);
        pacer.pause(Duration::MAX);
        assert!(pacer.reserve() > Instant::now() + Duration::from_secs(86_400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_delays_every_later_slot() {
        let pacer = Pacer::new(100.0);
        let start = Instant::now();
        pacer.pause(Duration::from_secs(2));
        assert!(pacer.reserve() >= start + Duration::from_secs(2));
        assert!(pacer.reserve() >= start + Duration::from_secs(2));
    }
}
