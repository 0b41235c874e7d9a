//! Pruning `webhook_events`: records of processed Svix messages older than
//! `WEBHOOK_EVENTS_RETENTION_DAYS` are deleted in small batches, once at
//! start-up and then every hour, by one replica at a time. (An old message
//! replayed after its record is gone is still refused: Svix's timestamp
//! window rejects it, and Clerk's `updated_at` ordering makes it stale.)

use std::time::Duration;

use tokio::sync::watch;

use super::supervise::supervise;
use crate::db::{Db, DbError, Queries as _, Store as _};
use crate::with_conn;

/// Records deleted per transaction: short enough never to hold up writers.
const BATCH: i64 = 1_000;
/// Time between two rounds.
const EVERY: Duration = Duration::from_secs(3_600);
/// Breath between two batches of one round.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// Runs the pruning rounds until `stop` turns true.
pub async fn run(db: Db, retention: Duration, stop: watch::Receiver<bool>) {
    supervise(
        "webhook retention",
        move |mut stop| {
            let db = db.clone();
            async move {
                loop {
                    match prune(&db, retention, &stop).await {
                        Ok(0) => {}
                        Ok(deleted) => {
                            tracing::info!(deleted, "pruned old webhook records");
                        }
                        Err(error) => tracing::warn!(%error, "could not prune webhook records"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(EVERY) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        },
        stop,
        || {},
    )
    .await;
}

/// One round: batches until none is left or another replica holds the
/// pruning lock; how many records were deleted.
pub async fn prune(
    db: &Db,
    retention: Duration,
    stop: &watch::Receiver<bool>,
) -> Result<usize, DbError> {
    let now = with_conn!(db, conn => Ok::<_, DbError>(conn.clock().await?))?;
    let cutoff = chrono::TimeDelta::from_std(retention)
        .ok()
        .and_then(|retention| now.checked_sub_signed(retention))
        .unwrap_or(chrono::NaiveDateTime::MIN);
    let mut total = 0;
    while !*stop.borrow() {
        let deleted: Result<Option<usize>, DbError> = with_conn!(db, conn => {
            use diesel_async::AsyncConnection as _;
            Ok(conn
                .transaction(async |conn| {
                    if !conn.try_lock_maintenance().await? {
                        return Ok::<_, diesel::result::Error>(None);
                    }
                    conn.prune_webhook_events(cutoff, BATCH).await.map(Some)
                })
                .await?)
        });
        match deleted? {
            None => break,
            Some(deleted) => {
                total += deleted;
                if deleted < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    Ok(total)
}
