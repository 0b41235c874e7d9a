//! `clerk-role-sync backfill`: takes every existing Clerk user in, paging
//! with `starting_after` (never offsets), paced under Clerk's rate limit,
//! resumable after an interruption.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Pacer;
use super::retry::{LONGEST_WAIT, call_clerk};
use crate::app::backfill::{self, BackfillOptions};
use crate::clerk::{ClerkClient, ClerkUser};
use crate::db::Db;
use crate::db::rows::Progress;
use crate::with_conn;

/// Users per page: Clerk's maximum.
pub const PAGE_SIZE: usize = 500;

/// Runs (or resumes) a backfill and returns its totals.
pub async fn run(
    db: &Db,
    client: &ClerkClient,
    options: BackfillOptions,
    requests_per_sec: f64,
    restart: bool,
) -> anyhow::Result<Progress> {
    let pacer = Pacer::new(requests_per_sec);
    if restart && !options.dry_run {
        with_conn!(db, conn => backfill::forget(conn).await)?;
    }
    let mut progress = with_conn!(db, conn => backfill::resume_or_start(conn).await)?;
    if let Some(after) = &progress.last_user_id {
        tracing::info!(pages = progress.pages, after, "resuming the backfill");
    }
    let total = call_clerk(&pacer, LONGEST_WAIT, || client.user_count()).await?;
    let bar = Bar::new(total, progress.seen);
    loop {
        let after = progress.last_user_id.clone();
        let page = call_clerk(&pacer, LONGEST_WAIT, || {
            client.list_users(PAGE_SIZE, after.as_deref())
        })
        .await?;
        if page.is_empty() {
            break;
        }
        ensure_advances(after.as_deref(), &page)?;
        progress = with_conn!(db, conn => {
            backfill::apply_page(conn, &page, options, &progress).await
        })?;
        bar.page(&progress, page.len());
        if page.len() < PAGE_SIZE {
            break;
        }
    }
    bar.finish();
    if !options.dry_run {
        with_conn!(db, conn => backfill::forget(conn).await)?;
    }
    Ok(progress)
}

/// Stops a walk whose cursor does not move (Clerk answering the same page
/// again, or one that starts with the user it was to start after), which
/// would otherwise loop for ever.
pub fn ensure_advances(after: Option<&str>, page: &[ClerkUser]) -> anyhow::Result<()> {
    let repeats = after.is_some_and(|after| page.iter().any(|user| user.id == after));
    if repeats {
        anyhow::bail!(
            "Clerk's user list did not advance past {} (the page starts over or repeats); stopping",
            after.unwrap_or_default()
        );
    }
    Ok(())
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
