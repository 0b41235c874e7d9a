//! The Clerk instance gate: the push worker and the drift audit wait behind
//! it until the instance of `CLERK_SECRET_KEY` is confirmed as the
//! database's (see [`app::clerk_instance`](crate::app::clerk_instance)).
//!
//! `serve` asks Clerk once at start: another instance stops the start; no
//! answer (Clerk down, a timeout) leaves the gate closed and a background
//! task asking again, with backoff, while webhooks and the admin API go on.
//! The gate also holds the bound instance, so that a webhook from another
//! instance is refused by a compare in memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backoff::Backoff;
use crate::app::clerk_instance::{self, Binding, ConfirmError, Refusal};
use crate::clerk::{ClerkClient, ClerkInstance};
use crate::db::Db;
use crate::db::rows::BoundInstance;

/// Waits before asking Clerk again: 1 s, doubled after each failure up to
/// 60 s.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What is known of the database's instance and the current key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// No `CLERK_SECRET_KEY`: nothing to confirm (pushes wait for a key).
    NotConfigured { bound: Option<BoundInstance> },
    /// Clerk has not answered yet: pushes and the drift audit wait.
    Unconfirmed { bound: Option<BoundInstance> },
    /// The key belongs to the database's instance.
    Confirmed(BoundInstance),
    /// The key belongs to another instance: pushes and the drift audit stay
    /// stopped until the process starts again with the right key (or after
    /// `rebind-instance`).
    Mismatch {
        bound: Option<BoundInstance>,
        current: ClerkInstance,
    },
}

impl InstanceState {
    /// The instance the database is bound to, as far as this process knows.
    pub fn bound(&self) -> Option<&BoundInstance> {
        match self {
            Self::NotConfigured { bound }
            | Self::Unconfirmed { bound }
            | Self::Mismatch { bound, .. } => bound.as_ref(),
            Self::Confirmed(bound) => Some(bound),
        }
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self, Self::Confirmed(_))
    }

    fn refused(refusal: Refusal) -> Self {
        Self::Mismatch {
            bound: refusal.bound().cloned(),
            current: refusal.current().clone(),
        }
    }
}

/// The shared state, cheap to clone: every holder sees every change.
#[derive(Clone)]
pub struct InstanceGate {
    state: Arc<watch::Sender<InstanceState>>,
}

impl InstanceGate {
    pub fn new(state: InstanceState) -> Self {
        Self {
            state: Arc::new(watch::Sender::new(state)),
        }
    }

    /// Confirms (or binds) the instance now: a gate that is open, or why
    /// not. For work that cannot wait in the background (tests, benches).
    pub async fn confirm(db: &Db, clerk: &ClerkClient) -> anyhow::Result<Self> {
        let bound = confirm_or_refuse(db, clerk).await?;
        Ok(Self::new(InstanceState::Confirmed(bound)))
    }

    pub fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    pub fn is_confirmed(&self) -> bool {
        self.state.borrow().is_confirmed()
    }

    /// Resolves once the instance is confirmed (at once when it is).
    pub async fn confirmed(&self) {
        let mut changes = self.state.subscribe();
        // The sender lives in `self`: the channel cannot close meanwhile.
        let _ = changes.wait_for(InstanceState::is_confirmed).await;
    }

    /// Changes to the state, for a loop that waits on other things too.
    pub fn changes(&self) -> watch::Receiver<InstanceState> {
        self.state.subscribe()
    }

    /// The bound instance's id when it is not `instance_id`: a message of
    /// another instance. `None` when it is the bound one, or when the
    /// database is not bound yet.
    pub fn other_than_bound(&self, instance_id: &str) -> Option<String> {
        let state = self.state.borrow();
        let bound = state.bound()?;
        (bound.instance_id != instance_id).then(|| bound.instance_id.clone())
    }

    fn set(&self, state: InstanceState) {
        self.state.send_replace(state);
    }
}

/// Confirms the instance for a command that walks Clerk's users: the bound
/// instance, or an error that says why not (another instance, or Clerk
/// could not be asked).
pub async fn confirm_or_refuse(db: &Db, clerk: &ClerkClient) -> anyhow::Result<BoundInstance> {
    match clerk_instance::confirm(db, clerk).await? {
        Binding::Bound(bound) | Binding::Confirmed(bound) => Ok(bound),
        Binding::Refused(refusal) => Err(anyhow::anyhow!("{refusal}")),
    }
}

/// The gate as `serve` starts: confirmed, refused (an error: the start
/// stops), or unconfirmed when Clerk could not be asked; then `true`: it is
/// for [`keep_confirming`] to open it.
pub async fn at_start(
    db: &Db,
    clerk: Option<&ClerkClient>,
) -> anyhow::Result<(InstanceGate, bool)> {
    let Some(clerk) = clerk else {
        let bound = clerk_instance::bound(db).await?;
        return Ok((
            InstanceGate::new(InstanceState::NotConfigured { bound }),
            false,
        ));
    };
    match clerk_instance::confirm(db, clerk).await {
        Ok(Binding::Bound(bound) | Binding::Confirmed(bound)) => {
            tracing::info!(
                instance.id = %bound.instance_id,
                instance.environment = %bound.environment_type,
                "Clerk instance confirmed"
            );
            Ok((InstanceGate::new(InstanceState::Confirmed(bound)), false))
        }
        Ok(Binding::Refused(refusal)) => Err(anyhow::anyhow!("{refusal}")),
        Err(ConfirmError::Db(error)) => Err(error.into()),
        Err(error @ ConfirmError::Clerk(_)) => {
            tracing::error!(
                %error,
                "the Clerk instance is not confirmed: pushes to Clerk and the drift audit wait \
                 until it is (asking again in the background); webhooks and the admin API go on"
            );
            let bound = clerk_instance::bound(db).await?;
            Ok((
                InstanceGate::new(InstanceState::Unconfirmed { bound }),
                true,
            ))
        }
    }
}

/// Asks Clerk again, waiting 1 s, then twice as long each time up to 60 s,
/// until the instance is confirmed, found to be another, or `stop` turns
/// true.
pub async fn keep_confirming(
    gate: InstanceGate,
    db: Db,
    clerk: ClerkClient,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0;
    loop {
        let wait = RETRY.delay(failures);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let attempt = tokio::select! {
            attempt = clerk_instance::confirm(&db, &clerk) => attempt,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(Binding::Bound(bound) | Binding::Confirmed(bound)) => {
                tracing::info!(
                    instance.id = %bound.instance_id,
                    instance.environment = %bound.environment_type,
                    "Clerk instance confirmed: pushes and the drift audit go on"
                );
                gate.set(InstanceState::Confirmed(bound));
                return;
            }
            Ok(Binding::Refused(refusal)) => {
                tracing::error!("{refusal}; pushes to Clerk and the drift audit stay stopped");
                gate.set(InstanceState::refused(refusal));
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "the Clerk instance is still not confirmed");
            }
        }
        failures = failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound_to(id: &str) -> BoundInstance {
        BoundInstance {
            instance_id: id.into(),
            environment_type: "development".into(),
            bound_at: crate::db::rows::now(),
        }
    }

    #[test]
    fn only_a_bound_other_instance_is_another() {
        let unbound = InstanceGate::new(InstanceState::Unconfirmed { bound: None });
        assert_eq!(unbound.other_than_bound("ins_any"), None);
        let gate = InstanceGate::new(InstanceState::Unconfirmed {
            bound: Some(bound_to("ins_ours")),
        });
        assert_eq!(gate.other_than_bound("ins_ours"), None);
        assert_eq!(
            gate.other_than_bound("ins_theirs").as_deref(),
            Some("ins_ours")
        );
    }

    #[tokio::test]
    async fn waiters_go_on_once_the_instance_is_confirmed() {
        let gate = InstanceGate::new(InstanceState::Unconfirmed { bound: None });
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.confirmed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.set(InstanceState::Confirmed(bound_to("ins_ours")));
        waiting.await.expect("the waiter goes on");
        assert!(gate.is_confirmed());
    }
}
