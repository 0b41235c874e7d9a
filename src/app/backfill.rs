//! Bringing Clerk's existing users in, page by page: each page is applied in
//! one transaction together with the progress record, so an interrupted
//! backfill resumes exactly after the last page it finished.

use super::audit::after_commit;
use super::clerk_state::{Outcome, StateContext};
use super::unit_of_work::UnitOfWork;
use crate::clerk::ClerkUser;
use crate::db::rows::{Progress, now};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, DEFAULT_CLOCK_SKEW_ALLOWANCE_MS, MetadataRole, Role, RoleSource};

/// Whose role wins when Clerk and our database disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    /// Clerk's role is taken into our database (the default).
    #[default]
    Clerk,
    /// Our role is kept and pushed to Clerk.
    Db,
}

/// What a backfill does besides taking Clerk's users in.
#[derive(Debug, Clone, Copy)]
pub struct BackfillOptions {
    pub prefer: Prefer,
    /// Queue a push of the (default) role for users whose metadata has none.
    pub write_defaults: bool,
    /// Work out what would change, write nothing.
    pub dry_run: bool,
    /// The race rule's clock-skew allowance, in milliseconds.
    pub allowance_ms: i64,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        Self {
            prefer: Prefer::default(),
            write_defaults: false,
            dry_run: false,
            allowance_ms: DEFAULT_CLOCK_SKEW_ALLOWANCE_MS,
        }
    }
}

/// Why a page was not stored.
enum PageError {
    /// A dry run: the page was worked out, then rolled back.
    DryRun(Box<Progress>),
    Db(DbError),
}

impl From<diesel::result::Error> for PageError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(error.into())
    }
}

impl From<DbError> for PageError {
    fn from(error: DbError) -> Self {
        Self::Db(error)
    }
}

/// The unfinished run to resume, or a fresh one.
pub async fn resume_or_start<C: Store>(conn: &mut C) -> Result<Progress, DbError> {
    Ok(match conn.load_backfill_progress().await? {
        Some(progress) => progress,
        None => Progress {
            id: 1,
            started_at: now(),
            ..Progress::default()
        },
    })
}

/// Forgets any unfinished run.
pub async fn forget<C: Store>(conn: &mut C) -> Result<(), DbError> {
    Ok(conn.delete_backfill_progress().await?)
}

/// Ends a run that walked Clerk's whole list: forgets its progress and
/// refreshes the database's statistics of the users it brought in, so that
/// a `reconcile` right after it is planned for the users now here (left to
/// autovacuum, with a warning, when that fails: the backfill is done).
pub async fn finish<C: Store>(conn: &mut C) -> Result<(), DbError> {
    conn.delete_backfill_progress().await?;
    if let Err(error) = conn.refresh_user_statistics().await {
        tracing::warn!(%error, "could not refresh the database's statistics of users after the backfill");
    }
    Ok(())
}

/// Applies one page of Clerk users by the webhook rules (role from the
/// metadata, STUDENT when missing, tombstones respected, older states
/// skipped), with audit rows of source `backfill` for real changes, and
/// records the progress in the same transaction. The page's users are
/// locked together, in id order, like a batch of webhooks. In a dry run
/// everything is rolled back and only the totals are kept.
pub async fn apply_page<C: Store>(
    conn: &mut C,
    users: &[ClerkUser],
    options: BackfillOptions,
    progress: &Progress,
) -> Result<Progress, DbError> {
    let result = after_commit(conn.transaction(async |conn| {
        let mut next = progress.clone();
        next.seen += users.len() as i64;
        // In id order, the order outbox rows are taken in too.
        let mut page: Vec<(ClerkUserId, &ClerkUser)> = users
            .iter()
            .filter_map(|user| Some((ClerkUserId::parse(user.id.as_str()).ok()?, user)))
            .collect();
        page.sort_by(|a, b| a.0.cmp(&b.0));
        next.skipped += (users.len() - page.len()) as i64;
        let mut locked = UnitOfWork::take(conn, page.iter().map(|(id, _)| id), &[]).await?;
        for (id, user) in &page {
            if apply_user(conn, &mut locked, id, user, options, &mut next).await?
                && let Some(role) = locked.row(id).map(|row| row.role)
            {
                locked.queue_push(conn, id, role).await?;
                next.defaults_queued += 1;
            }
        }
        locked.write(conn).await?;
        next.pages += 1;
        next.last_user_id = users.last().map(|user| user.id.clone());
        if options.dry_run {
            return Err(PageError::DryRun(Box::new(next)));
        }
        conn.save_backfill_progress(&next).await?;
        Ok(next)
    }))
    .await;
    match result {
        Ok(next) => Ok(next),
        Err(PageError::DryRun(next)) => Ok(*next),
        Err(PageError::Db(error)) => Err(error),
    }
}

/// Applies one user of a page; whether a push of its (default) role is to
/// be queued (`--write-defaults`: Clerk holds no role for it).
async fn apply_user<C: Store>(
    conn: &mut C,
    locked: &mut UnitOfWork,
    id: &ClerkUserId,
    user: &ClerkUser,
    options: BackfillOptions,
    progress: &mut Progress,
) -> Result<bool, DbError> {
    let prior_role: Option<Role> = locked
        .row(id)
        .filter(|row| row.deleted_at.is_none())
        .map(|row| row.role);
    let metadata = user.metadata_role();
    if options.prefer == Prefer::Db
        && let Some(ours) = prior_role
        && metadata.role().is_some_and(|theirs| theirs != ours)
        && !locked.push_pending(id)
    {
        // Queued first, so that applying Clerk's state below keeps our role.
        locked.queue_push(conn, id, ours).await?;
        progress.pushes_queued += 1;
    }
    let context = StateContext {
        source: RoleSource::Backfill,
        actor: "backfill",
        // A page is Clerk's state read just now: it settles a conflict, and
        // brings back a user the drift audit deleted provisionally.
        reread: true,
        allowance_ms: options.allowance_ms,
        claimed_by: None,
    };
    let outcome = locked.apply_state(conn, id, user, context, None).await?;
    match (outcome, prior_role) {
        (Outcome::Applied | Outcome::UnknownRole | Outcome::Unchanged, None) => {
            progress.created += 1;
        }
        (Outcome::Applied, Some(_)) => {
            progress.updated += 1;
            progress.role_changes += 1;
        }
        (Outcome::Unchanged | Outcome::UnknownRole, Some(_)) => progress.updated += 1,
        _ => {
            progress.skipped += 1;
            return Ok(false);
        }
    }
    if outcome == Outcome::UnknownRole {
        progress.unknown_roles += 1;
    }
    Ok(options.write_defaults && metadata == MetadataRole::Missing && !locked.push_pending(id))
}
