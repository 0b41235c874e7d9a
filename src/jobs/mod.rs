//! Keeping both sides equal: the writer that applies webhook events in
//! batches (Clerk → DB), the worker that drains the `clerk_sync` outbox
//! (DB → Clerk), the drift audit that repairs what lost webhooks left
//! behind, the backfill and reconcile commands, and the housekeeping that
//! goes with them (pruning processed webhook records).

pub mod backfill;
mod backoff;
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

pub use pacer::Pacer;
pub use worker::{PushWorker, WorkerHandle, WorkerLink, allowance_ms};
