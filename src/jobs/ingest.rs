//! The ingest writers: webhook ingest by group commit.
//!
//! Each webhook request, once its event is verified and parsed, hands the
//! event to this replica's writers and waits. A writer takes whatever is
//! queued (up to [`MAX_BATCH`] events), applies it in one transaction
//! (`app::webhook_event`) and answers each request once that transaction
//! has committed. Nothing waits for a batch to fill: a lone event is applied
//! at once, and events arriving meanwhile make the next batch.
//!
//! On PostgreSQL two writers take turns at the queue: once an event comes
//! while one writer applies its batch, the other takes the queue and
//! begins the next batch alongside. A writer keeps its connection for as
//! long as events keep coming. SQLite has one writer, which gives the one
//! connection back after each batch: nothing else waits behind it for
//! longer than one batch.
//!
//! The queue needs no bound of its own: each queued event is a request
//! holding one of the webhook's body permits (`startup`), which bound how
//! many wait at once. The writers are supervised like the push worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::supervise::supervise;
use crate::app::Outcome;
use crate::app::webhook_event::{self, NotStored, Received};
use crate::db::{Backend, Db, DbError, Store};
use crate::metrics::Metrics;
use crate::webhooks::events::ClerkEvent;
use crate::with_conn;

/// The most events one transaction applies.
pub const MAX_BATCH: usize = 256;

/// The longest a webhook request waits for its event to be applied before
/// it answers 503 (Svix delivers it again; if it was applied meanwhile, the
/// redelivery is a duplicate): under Svix's own 15 s timeout, whatever
/// holds the writers up (a lock, a slow or half-open database).
pub const APPLY_DEADLINE: Duration = Duration::from_secs(10);

/// An event waiting for the writer, and where its answer goes (with the
/// event handed back).
struct Job {
    received: Received,
    answer: oneshot::Sender<(ClerkEvent, Result<Outcome, NotStored>)>,
}

/// Hands events to the writer.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
    /// Events handed over and not yet answered.
    pending: IntGauge,
}

/// One event handed over and not yet answered (or given up on).
struct Pending(IntGauge);

impl Pending {
    fn count(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Stops the writers.
pub struct IngestHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the writers, supervised, on the current runtime.
    pub fn spawn(db: Db, allowance_ms: i64, metrics: Arc<Metrics>) -> (Ingest, IngestHandle) {
        let (jobs, queue) = mpsc::channel(MAX_BATCH);
        // Shared by the writers, and by a writer's runs: one that panicked
        // leaves the queue to the next.
        let queue = Arc::new(Mutex::new(Queue {
            jobs: queue,
            taken: None,
        }));
        let (stop, stopped) = watch::channel(false);
        let pending = metrics.ingest_pending.clone();
        let writers = match db.backend() {
            Backend::Postgres => 2,
            Backend::Sqlite => 1,
        };
        let writer = Writer {
            db,
            allowance_ms,
            metrics,
        };
        let tasks = (0..writers)
            .map(|_| {
                let (writer, queue) = (writer.clone(), queue.clone());
                let metrics = writer.metrics.clone();
                tokio::spawn(supervise(
                    "ingest writer",
                    move |stop| {
                        let (writer, queue) = (writer.clone(), queue.clone());
                        async move { writer.run(&queue, stop).await }
                    },
                    stopped.clone(),
                    move || metrics.ingest_writer_restarts.inc(),
                ))
            })
            .collect();
        (Ingest { jobs, pending }, IngestHandle { stop, tasks })
    }

    /// Applies `event` (Svix message `svix_id`) with the next batch; answers
    /// once that batch has committed, handing the event back.
    pub async fn apply(
        &self,
        svix_id: &str,
        event: ClerkEvent,
    ) -> Result<(ClerkEvent, Outcome), NotStored> {
        let stopped = || NotStored::from("the ingest writer is not running");
        let (answer, answered) = oneshot::channel();
        let job = Job {
            received: Received {
                svix_id: svix_id.to_owned(),
                event,
            },
            answer,
        };
        let _pending = Pending::count(&self.pending);
        let applied = async {
            self.jobs.send(job).await.map_err(|_| stopped())?;
            answered.await.map_err(|_| stopped())
        };
        let (event, outcome) = tokio::time::timeout(APPLY_DEADLINE, applied)
            .await
            .map_err(|_| NotStored::from("the event was not applied in time"))??;
        outcome.map(|outcome| (event, outcome))
    }
}

impl IngestHandle {
    /// Applies what is still queued, then stops the writers. Call it once
    /// the HTTP server has stopped: no request is left to queue more.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[derive(Clone)]
struct Writer {
    db: Db,
    allowance_ms: i64,
    metrics: Arc<Metrics>,
}

/// How long a writer keeps its connection (PostgreSQL) waiting for more
/// events after a batch: under a steady stream it is never given back and
/// checked again between batches; idle, it goes back to the pool.
const LINGER: Duration = Duration::from_secs(1);

/// The queue the writers take turns at, and the event a writer took from it
/// on seeing that events wait (the next batch starts with it).
struct Queue {
    jobs: mpsc::Receiver<Job>,
    taken: Option<Job>,
}

/// The queue, held by one writer: while it holds it, the other waits.
type HeldQueue<'q> = MutexGuard<'q, Queue>;

impl Writer {
    async fn run(&self, queue: &Mutex<Queue>, mut stop: watch::Receiver<bool>) {
        while let Some((held, batch)) = Self::next_batch(queue, None, &mut stop).await {
            self.apply_while_busy(queue, &mut stop, held, batch).await;
        }
        // The queue also closes when the HTTP server stops, before the
        // writers are told to: its requests held the last senders. Nothing
        // can come any more; waiting for the stop keeps that orderly end
        // from looking like a crash to the supervisor.
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// The queue (`held`, or once the other writer lets go of it) and the
    /// next batch: once an event comes, it and whatever else is
    /// queued (up to [`MAX_BATCH`] events). `None` once told to stop with
    /// nothing queued.
    async fn next_batch<'q>(
        queue: &'q Mutex<Queue>,
        held: Option<HeldQueue<'q>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(HeldQueue<'q>, Vec<Job>)> {
        let mut held = match held {
            Some(held) => held,
            None => queue.lock().await,
        };
        let first = match held.taken.take() {
            Some(job) => job,
            None => tokio::select! {
                biased;
                job = held.jobs.recv() => job,
                // Told to stop: what is queued is still applied.
                _ = stop.wait_for(|stop| *stop) => held.jobs.try_recv().ok(),
            }?,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match held.jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        Some((held, batch))
    }

    /// Applies `batch` (taken while holding the queue, `held`), then the
    /// batches that follow, on one connection while they keep coming. On
    /// SQLite, whose one connection the rest of the service shares, the
    /// connection goes back after each batch.
    ///
    /// The writer holds the queue while it applies a batch, and lets go of
    /// it once an event comes meanwhile: the other writer then begins the
    /// next batch with that event alongside this one. Events that come one
    /// at a time (a lone sender waiting for each answer) find the writer
    /// that served the last one, with no hand-over between.
    async fn apply_while_busy<'q>(
        &self,
        queue: &'q Mutex<Queue>,
        stop: &mut watch::Receiver<bool>,
        held: HeldQueue<'q>,
        batch: Vec<Job>,
    ) {
        let keep_connection = self.db.backend() == Backend::Postgres;
        let mut next = Some((held, batch));
        let served: Result<(), DbError> = with_conn!(self.db, conn => {
            while let Some((held, batch)) = next.take() {
                let mut held = Some(held);
                let applying = self.apply(conn, batch);
                tokio::pin!(applying);
                // A batch done with an event already waiting keeps the
                // queue: this writer serves that event next.
                let all_stored = tokio::select! {
                    biased;
                    all_stored = &mut applying => all_stored,
                    () = let_go_once_events_wait(&mut held) => applying.await,
                };
                // A failed batch may have broken the connection: the pool
                // checks it before handing it out again.
                if !keep_connection || !all_stored {
                    break;
                }
                next = tokio::time::timeout(LINGER, Self::next_batch(queue, held, stop))
                    .await
                    .ok()
                    .flatten();
            }
            Ok(())
        });
        if let (Err(error), Some((_, jobs))) = (served, next) {
            let error = NotStored::from(&error);
            for job in jobs {
                let _ = job.answer.send((job.received.event, Err(error.clone())));
            }
        }
    }

    /// Applies one batch and answers each of its requests; whether every
    /// event was stored.
    async fn apply<C: Store>(&self, conn: &mut C, batch: Vec<Job>) -> bool {
        let started = Instant::now();
        let (received, answers): (Vec<Received>, Vec<_>) = batch
            .into_iter()
            .map(|job| (job.received, job.answer))
            .unzip();
        let outcomes = webhook_event::apply_events(conn, &received, self.allowance_ms).await;
        self.metrics
            .ingest_batch(received.len(), started.elapsed().as_secs_f64());
        let all_stored = outcomes.iter().all(Result::is_ok);
        for ((received, answer), outcome) in received.into_iter().zip(answers).zip(outcomes) {
            // A request that gave up waiting (its client left) needs no
            // answer: its event is applied all the same.
            let _ = answer.send((received.event, outcome));
        }
        all_stored
    }
}

/// Waits, while the queue is `held`, for an event to come into it; then
/// keeps it for the next batch and lets go of the queue. Never
/// returns when the queue is not held or has closed.
async fn let_go_once_events_wait(held: &mut Option<HeldQueue<'_>>) {
    if let Some(queued) = held.as_mut()
        && let Some(job) = queued.jobs.recv().await
    {
        queued.taken = Some(job);
        *held = None;
        return;
    }
    std::future::pending().await
}
