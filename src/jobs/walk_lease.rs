//! The lease on walking Clerk's user list: the drift audit and `backfill`
//! (one replica or one command at a time) take it before they walk, and
//! renew it while they do, so two walks never write the same users at once
//! nor share Clerk's rate limit. A holder that dies leaves it for at most
//! [`LEASE`]; one that restarts under the same name takes it back at once.
//! The lease is timed by the database's clock, never a replica's: replicas
//! whose clocks differ still never walk at once.

use std::future::Future;
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::db::{Db, DbError, Queries as _};
use crate::with_conn;

/// How long the lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The lease, held by `owner`.
pub struct WalkLease {
    db: Db,
    owner: String,
}

/// Who holds the lease (not us), and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub owner: String,
    pub until: NaiveDateTime,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is walking Clerk's users (its lease runs until {} UTC unless renewed)",
            self.owner,
            self.until.format("%Y-%m-%d %H:%M:%S")
        )
    }
}

impl WalkLease {
    /// Takes the lease for `owner`; who holds it when it is not free.
    pub async fn take(db: &Db, owner: &str) -> Result<Result<Self, Held>, DbError> {
        let taken = with_conn!(db, conn => {
            if conn.take_walk_lease(owner, lease_ms()).await? {
                return Ok::<_, DbError>(None);
            }
            Ok(conn.walk_lease_holder().await?)
        })?;
        Ok(match taken {
            None => Ok(Self {
                db: db.clone(),
                owner: owner.to_owned(),
            }),
            // Expired between the two statements: free at the next try.
            Some((owner, until)) => Err(Held { owner, until }),
        })
    }

    /// Runs `work` while renewing the lease; stops it (dropped where it
    /// stands) with an error if the lease is lost: taken over after it
    /// expired, or not renewed in time because the database is unreachable.
    pub async fn hold<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            result = work => result,
            lost = self.keep() => Err(lost),
        }
    }

    /// Gives the lease back (best effort: else it expires).
    pub async fn release(self) {
        let released = with_conn!(self.db, conn => {
            Ok::<_, DbError>(conn.release_walk_lease(&self.owner).await?)
        });
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the walk lease; it expires on its own");
        }
    }

    /// Renews the lease until it is lost; why.
    async fn keep(&self) -> anyhow::Error {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let result = with_conn!(self.db, conn => {
                Ok::<_, DbError>(conn.take_walk_lease(&self.owner, lease_ms()).await?)
            });
            match result {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    return anyhow::anyhow!("the walk lease was taken over; stopping this walk");
                }
                // Still ours for a while: try again at the next tick.
                Err(error) if renewed.elapsed() + RENEW_EVERY < LEASE => {
                    tracing::warn!(%error, "could not renew the walk lease");
                }
                Err(error) => {
                    return anyhow::anyhow!(
                        "the walk lease could not be renewed before it expired ({error}); \
                         stopping this walk"
                    );
                }
            }
        }
    }
}

/// The lease in ms, as the database adds it to its own clock.
fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)
}
