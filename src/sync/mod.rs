//! Keeping both sides equal: the worker that drains the `clerk_sync` outbox
//! (DB → Clerk), and the backfill and reconcile commands.

pub mod backfill;
mod pacer;
pub mod reconcile;
mod retry;
mod worker;

pub use pacer::Pacer;
pub use worker::{PushWorker, WorkerHandle};
