//! The jobs that keep both sides equal, each driving use-cases of `app/`:
//! the ingest writers that apply webhook events in batches (Clerk → DB),
//! the push worker that drains the outbox (DB → Clerk), the drift audit
//! that repairs what lost webhooks left behind, the walks of the backfill
//! and reconcile commands, and the housekeeping that goes with them
//! (pruning processed webhook records).

pub mod backfill;
mod backoff;
mod budget;
pub mod clerk_instance;
pub mod drift_audit;
pub mod ingest;
mod list_walk;
mod pacer;
pub mod retention;
mod retry;
mod supervise;
pub mod walk_lease;
mod worker;

pub use budget::ClerkBudget;
use pacer::Pacer;
pub use worker::{PushWorker, WorkerHandle, WorkerLink, allowance_ms};
