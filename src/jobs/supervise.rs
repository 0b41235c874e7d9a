//! Background tasks that must not die: each run that ends or panics before
//! it was told to stop is logged, counted and started again.

use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::watch;

/// Pause before a task that ended is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs `make(stop)` until `stop` turns true; each time it ends or panics
/// before that, logs it, calls `on_restart` and starts it again.
///
/// diesel-async's transactions make futures that the compiler cannot prove
/// `Send` (rust-lang/rust#100013), so each run is not spawned as a task: it
/// runs on a blocking thread with a runtime of its own (its timers; the
/// database pool and HTTP clients it uses work across runtimes).
pub async fn supervise<M, F>(
    name: &'static str,
    make: M,
    mut stop: watch::Receiver<bool>,
    on_restart: impl Fn(),
) where
    M: Fn(watch::Receiver<bool>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = ()> + 'static,
{
    loop {
        let (make, run_stop) = (make.clone(), stop.clone());
        // Dropped with this future: when the runtime that drives it shuts
        // down without a stop (a test's end, a process exiting), the run
        // ends too instead of polling timers of a runtime that is gone.
        let (_supervised, mut abandoned) = watch::channel(());
        let ended = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok::<_, std::io::Error>(runtime.block_on(async {
                tokio::select! {
                    ended = std::panic::AssertUnwindSafe(make(run_stop)).catch_unwind() => Some(ended),
                    _ = abandoned.changed() => None,
                }
            }))
        })
        .await;
        if *stop.borrow() {
            return;
        }
        match ended {
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::error!(task = name, %error, "could not start a background task's runtime")
            }
            Ok(Ok(Some(Ok(())))) => tracing::error!(
                task = name,
                "a background task ended on its own; restarting it"
            ),
            Ok(Ok(Some(Err(panic)))) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                tracing::error!(
                    task = name,
                    panic = message,
                    "a background task panicked; restarting it"
                );
            }
            Err(error) => {
                tracing::error!(task = name, %error, "a background task was lost; restarting it")
            }
        }
        on_restart();
        tokio::select! {
            () = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_that_panics_is_restarted_and_counted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let restarts = Arc::new(AtomicUsize::new(0));
        let (shutdown, stop) = watch::channel(false);
        let supervised = tokio::spawn(supervise(
            "test task",
            {
                let runs = runs.clone();
                move |mut stop: watch::Receiver<bool>| {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        assert!(run > 0, "the first run dies");
                        let _ = stop.changed().await;
                    }
                }
            },
            stop,
            {
                let restarts = restarts.clone();
                move || {
                    restarts.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(restarts.load(Ordering::SeqCst), 1);
        shutdown.send(true).expect("still supervised");
        supervised.await.expect("the supervisor ends when told");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "stopping is not a restart");
    }
}
