//! DB → Clerk: the worker that drains the `clerk_sync` outbox.

mod pacer;
mod worker;

pub use pacer::Pacer;
pub use worker::{PushWorker, WorkerHandle};
