//! The budget of requests to Clerk (`CLERK_PUSH_RATE`): Clerk limits an
//! instance, not a replica, so every replica and command on the database
//! shares one budget, kept in the database as one rate limiter row (GCRA,
//! `clerk_budget`). Each request takes the next slot of the row and moves
//! it on by one interval; nobody holds a share, so a replica that dies
//! holds nothing, and one that joins takes slots at once. A 429 anywhere
//! pauses the row: slots taken after it start after the pause.
//!
//! Pushes take slots in turn. The walks of Clerk's user list (the drift
//! audit, backfill, reconcile) take only what pushes leave: a slot that has
//! come with nobody waiting for it, at most their share of the budget.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Pacer;
use crate::db::rows::ClerkSlot;
use crate::db::{Db, DbError, Queries as _};
use crate::with_conn;

/// The longest a walk waits before it asks again for a slot pushes left.
const LEFTOVER_POLL: Duration = Duration::from_millis(250);

/// How far ahead of now the budget's next slot may be: far more than the
/// replicas' slots taken ahead ever reach (each replica runs at most
/// `LOOKAHEAD` ahead), and the longest a step back of the database's clock
/// holds the senders.
const HORIZON: Duration = Duration::from_secs(60);

/// Tries to take a slot before pacing alone.
const TAKE_ATTEMPTS: u32 = 3;

/// The longest wait a slot or a pause may ask for: the database's clock
/// stepping, or a corrupt row, must not stop the sender for longer.
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);

/// One process's door to the shared budget.
pub struct ClerkBudget {
    db: Db,
    interval: Duration,
    use_: Use,
    /// The latest end of a pause this process knows of: its own 429s, and
    /// the pauses the budget's row showed when a slot was taken.
    paused_until: Mutex<Instant>,
}

enum Use {
    /// Slots in turn.
    Pushes,
    /// Slots nobody waits for, spaced here to the walk's share.
    Leftover(Pacer),
}

impl ClerkBudget {
    /// The pushes' door: slots in turn, of a budget of `rate_per_sec`.
    pub fn for_pushes(db: Db, rate_per_sec: f64) -> Self {
        Self {
            db,
            interval: interval(rate_per_sec),
            use_: Use::Pushes,
            paused_until: Mutex::new(Instant::now()),
        }
    }

    /// A walk's door: what pushes leave of a budget of `rate_per_sec`, at
    /// most `own_rate_per_sec` (its share).
    pub fn for_walks(db: Db, rate_per_sec: f64, own_rate_per_sec: f64) -> Self {
        Self {
            db,
            interval: interval(rate_per_sec),
            use_: Use::Leftover(Pacer::new(own_rate_per_sec.min(rate_per_sec))),
            paused_until: Mutex::new(Instant::now()),
        }
    }

    /// Takes the next slot (pushes) and returns when it starts. When the
    /// database cannot be asked (three tries), the slot is one interval
    /// from now: this process then keeps to the budget alone until it can.
    pub async fn take(&self) -> Instant {
        let interval = micros(self.interval);
        let horizon = micros(HORIZON.max(self.interval * 64));
        for attempt in 1..=TAKE_ATTEMPTS {
            let taken: Result<ClerkSlot, DbError> =
                with_conn!(self.db, conn => Ok(conn.take_clerk_slot(interval, horizon).await?));
            let now = Instant::now();
            match taken {
                Ok(slot) => {
                    self.paused_for(now, slot.paused_us);
                    return now + after(slot.wait_us);
                }
                Err(error) if attempt < TAKE_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "could not take a slot of the Clerk budget; retrying");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not take a slot of the Clerk budget; pacing alone");
                }
            }
        }
        Instant::now() + self.interval
    }

    /// Waits until `slot` starts. A pause known meanwhile holds it back: once
    /// the pause is over, a new slot is taken and waited for, so the
    /// requests held by a pause go out one slot apart again, not at once.
    pub async fn wait_for(&self, mut slot: Instant) {
        loop {
            tokio::time::sleep_until(slot).await;
            let paused_until = self.paused_until();
            if paused_until <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(paused_until).await;
            slot = self.take().await;
        }
    }

    /// Waits for a slot and its start.
    pub async fn wait_for_slot(&self) {
        match &self.use_ {
            Use::Pushes => self.wait_for(self.take().await).await,
            Use::Leftover(share) => {
                share.wait_for_slot().await;
                self.wait_for_leftover().await;
            }
        }
    }

    /// Waits until a slot has come with nobody waiting for it, and takes it.
    async fn wait_for_leftover(&self) {
        let interval = micros(self.interval);
        loop {
            let taken: Result<Option<i64>, DbError> =
                with_conn!(self.db, conn => Ok(conn.take_idle_clerk_slot(interval).await?));
            match taken {
                Ok(None) => return,
                Ok(Some(wait_us)) => {
                    let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                    tokio::time::sleep(wait.clamp(Duration::from_millis(1), LEFTOVER_POLL)).await;
                }
                Err(error) => {
                    // Asked again later: a walk waits rather than go
                    // without knowing what pushes left.
                    tracing::warn!(%error, "could not take a slot of the Clerk budget");
                    tokio::time::sleep(LEFTOVER_POLL).await;
                }
            }
        }
    }

    /// Pauses every request of the budget, everywhere, for `pause` (callers
    /// clamp it): after a 429.
    pub async fn pause(&self, pause: Duration) {
        if let Use::Leftover(share) = &self.use_ {
            share.pause(pause);
        }
        self.paused_for(Instant::now(), micros(pause));
        let pause = micros(pause.min(LONGEST_WAIT));
        let paused: Result<(), DbError> =
            with_conn!(self.db, conn => Ok(conn.pause_clerk(pause).await?));
        if let Err(error) = paused {
            tracing::warn!(%error, "could not pause the Clerk budget");
        }
    }
}

impl ClerkBudget {
    /// Notes a pause of `paused_us` from `now` (none when 0 or less), as
    /// the budget's row showed it.
    pub(super) fn paused_for(&self, now: Instant, paused_us: i64) {
        if paused_us <= 0 {
            return;
        }
        let until = now + after(paused_us);
        if let Ok(mut paused_until) = self.paused_until.lock() {
            *paused_until = (*paused_until).max(until);
        }
    }

    /// Whether a pause this process knows of still runs.
    pub(super) fn is_paused(&self) -> bool {
        self.paused_until() > Instant::now()
    }

    fn paused_until(&self) -> Instant {
        self.paused_until
            .lock()
            .map_or_else(|_| Instant::now(), |until| *until)
    }
}

/// `us` µs as a wait (none when 0 or less, a day at most).
fn after(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0)).min(LONGEST_WAIT)
}

/// One slot of a budget of `rate_per_sec`.
fn interval(rate_per_sec: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001))
}

/// A duration in µs, saturating.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
