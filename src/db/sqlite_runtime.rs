//! How SQLite's blocking calls run: on tokio's blocking pool, and safe to
//! abandon from any runtime.
//!
//! diesel-async's own tokio runtime for `SyncConnectionWrapper` waits for an
//! abandoned call with `block_in_place`, which panics on the single-threaded
//! runtimes actix-web's workers use (a client hanging up mid-query, or one
//! failing extractor dropping another's query, would kill the worker). This
//! one waits for the call to finish with a plain blocking wait instead: the
//! connection is never used by two calls at once either way.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The blocking pool of the runtime that opened the connection.
pub struct BlockingPool(Handle);

type SpawnResult<R> = Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>;

impl SpawnBlocking for BlockingPool {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, SpawnResult<R>>
    where
        R: Send + 'static,
    {
        let (finished, on_finish) = mpsc::sync_channel(1);
        let join = self.0.spawn_blocking(move || {
            // `task` (and the connection it holds) is dropped before this
            // returns, so a waiter on `on_finish` knows the connection is free.
            let result = task();
            let _ = finished.send(());
            result
        });
        FinishOnDrop {
            join,
            on_finish: Some(on_finish),
        }
        .map(|joined| joined.map_err(Box::from))
        .boxed()
    }

    fn get_runtime() -> Self {
        Self(Handle::current())
    }
}

/// A blocking call that, when abandoned, is waited for rather than left
/// running against a connection that goes back to the pool.
struct FinishOnDrop<R> {
    join: JoinHandle<R>,
    on_finish: Option<mpsc::Receiver<()>>,
}

impl<R> Future for FinishOnDrop<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.join).poll(cx);
        if polled.is_ready() {
            self.on_finish = None;
        }
        polled
    }
}

impl<R> Drop for FinishOnDrop<R> {
    fn drop(&mut self) {
        if let Some(on_finish) = self.on_finish.take() {
            // Returns at once if the call already finished; an error means
            // it panicked, which also ends it.
            let _ = on_finish.recv();
        }
    }
}
