//! `clerk-role-sync backfill`: takes every existing Clerk user in, paging
//! with `starting_after` (never offsets), paced under Clerk's rate limit,
//! resumable after an interruption.

use std::io::IsTerminal as _;
use std::pin::pin;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::ClerkBudget;
use super::list_walk::{ListWalk, Step};
use super::retry::{LONGEST_WAIT, call_clerk};
use crate::app::backfill::{self, BackfillOptions};
use crate::clerk::ClerkClient;
use crate::db::Db;
use crate::db::rows::Progress;
use crate::with_conn;

/// Runs (or resumes) a backfill and returns its totals.
pub async fn run(
    db: &Db,
    client: &ClerkClient,
    options: BackfillOptions,
    budget: &ClerkBudget,
    restart: bool,
) -> anyhow::Result<Progress> {
    if restart && !options.dry_run {
        with_conn!(db, conn => backfill::forget(conn).await)?;
    }
    let mut progress = with_conn!(db, conn => backfill::resume_or_start(conn).await)?;
    if let Some(after) = &progress.last_user_id {
        tracing::info!(pages = progress.pages, after, "resuming the backfill");
    }
    let total = call_clerk(budget, LONGEST_WAIT, || client.user_count()).await?;
    let bar = Bar::new(total, progress.seen);
    let walk = ListWalk {
        client,
        budget,
        max_wait: LONGEST_WAIT,
        // A refused cursor stops the backfill: it resumes from there.
        restarts: 0,
    };
    let mut pages = pin!(walk.pages(progress.last_user_id.clone()));
    while let Some(step) = pages.try_next().await? {
        let Step::Page { users: page, .. } = step else {
            continue; // only a walk that may start over yields this
        };
        if page.is_empty() {
            break;
        }
        progress = with_conn!(db, conn => {
            backfill::apply_page(conn, &page, options, &progress).await
        })?;
        bar.page(&progress, page.len());
    }
    bar.finish();
    if !options.dry_run {
        with_conn!(db, conn => backfill::finish(conn).await)?;
    }
    Ok(progress)
}

/// A progress bar on a terminal; a log line per page otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(total: u64, done: i64) -> Self {
        if !std::io::stdout().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} users  {per_sec}  ETA {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(u64::try_from(done).unwrap_or(0));
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(Some(bar))
    }

    fn page(&self, progress: &Progress, users: usize) {
        match &self.0 {
            Some(bar) => {
                bar.inc(users as u64);
                bar.set_message(format!(
                    "{} created, {} role changes",
                    progress.created, progress.role_changes
                ));
            }
            None => tracing::info!(
                page = progress.pages,
                users,
                seen = progress.seen,
                created = progress.created,
                role_changes = progress.role_changes,
                "backfill page done"
            ),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The summary printed at the end.
pub fn summary(progress: &Progress, dry_run: bool) -> String {
    let verb = if dry_run { "would be" } else { "were" };
    format!(
        "backfill {}: {} users read from Clerk in {} pages\n\
         created: {}\nupdated: {}\nrole changes: {}\ndefaults queued: {}\n\
         pushes queued (--prefer db): {}\nunknown roles: {}\nskipped (deleted here or stale): {}\n\
         (counts are what {verb} written)",
        if dry_run { "dry run" } else { "done" },
        progress.seen,
        progress.pages,
        progress.created,
        progress.updated,
        progress.role_changes,
        progress.defaults_queued,
        progress.pushes_queued,
        progress.unknown_roles,
        progress.skipped,
    )
}
