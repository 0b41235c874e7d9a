//! Bringing Clerk's existing users in, page by page: each page is applied in
//! one transaction together with the progress record, so an interrupted
//! backfill resumes exactly after the last page it finished.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::backfill_progress;
use super::store::after_commit;
use super::users::{corrupt, now};
use super::webhooks::{Apply, Outcome, apply_clerk_user};
use super::{DbError, Store};
use crate::clerk::ClerkUser;
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

/// The progress row: where to resume and the running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = backfill_progress, treat_none_as_null = true)]
pub struct Progress {
    #[diesel(skip_insertion)]
    pub id: i32,
    /// The last user of the last finished page: the next page starts after it.
    pub last_user_id: Option<String>,
    pub pages: i64,
    /// Users read from Clerk.
    pub seen: i64,
    /// Users new to our database.
    pub created: i64,
    /// Users already here whose profile (and maybe role) was refreshed.
    pub updated: i64,
    /// Users already here whose role changed.
    pub role_changes: i64,
    /// Pushes queued for users without a role in Clerk (`--write-defaults`).
    pub defaults_queued: i64,
    /// Pushes queued to keep our role (`--prefer db`).
    pub pushes_queued: i64,
    /// Users whose `public_metadata.role` holds a value we do not know.
    pub unknown_roles: i64,
    /// Users left alone: deleted here, or older than what we have.
    pub skipped: i64,
    pub started_at: NaiveDateTime,
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

/// Applies one page of Clerk users by the webhook rules (role from the
/// metadata, STUDENT when missing, tombstones respected, older states
/// skipped), with audit rows of source `backfill` for real changes, and
/// records the progress in the same transaction. In a dry run everything is
/// rolled back and only the totals are kept.
pub async fn apply_page<C: Store>(
    conn: &mut C,
    users: &[ClerkUser],
    options: BackfillOptions,
    progress: &Progress,
) -> Result<Progress, DbError> {
    let result = after_commit(conn.transaction(async |conn| {
        let mut next = progress.clone();
        for user in users {
            apply_user(conn, user, options, &mut next).await?;
        }
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

async fn apply_user<C: Store>(
    conn: &mut C,
    user: &ClerkUser,
    options: BackfillOptions,
    progress: &mut Progress,
) -> Result<(), DbError> {
    progress.seen += 1;
    let Ok(id) = ClerkUserId::parse(user.id.as_str()) else {
        progress.skipped += 1;
        return Ok(());
    };
    let now = now();
    let prior = conn
        .lock_user(id.as_str())
        .await?
        .filter(|row| row.deleted_at.is_none());
    let prior_role: Option<Role> = prior
        .as_ref()
        .map(|row| row.role.parse().map_err(corrupt))
        .transpose()?;
    let metadata = user.metadata_role();
    let clerk_role = match metadata {
        MetadataRole::Known(role) => Some(role),
        MetadataRole::Missing => Some(Role::Student),
        MetadataRole::Unknown => None,
    };
    if options.prefer == Prefer::Db
        && let Some(ours) = prior_role
        && clerk_role.is_some_and(|theirs| theirs != ours)
        && !conn_pending(conn, &id).await?
    {
        // Queued first, so that applying Clerk's state below keeps our role.
        conn.enqueue_push(id.as_str(), ours.as_str(), now).await?;
        progress.pushes_queued += 1;
    }
    let apply = Apply {
        source: RoleSource::Backfill,
        actor: "backfill",
        reread: false,
        message: None,
        allowance_ms: options.allowance_ms,
        claimed_by: None,
    };
    let outcome = apply_clerk_user(conn, user, apply).await?;
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
            return Ok(());
        }
    }
    if outcome == Outcome::UnknownRole {
        progress.unknown_roles += 1;
    }
    if options.write_defaults
        && metadata == MetadataRole::Missing
        && !conn_pending(conn, &id).await?
    {
        let role = conn
            .find_user(id.as_str())
            .await?
            .map(|row| row.role)
            .unwrap_or_else(|| Role::Student.as_str().to_owned());
        conn.enqueue_push(id.as_str(), &role, now).await?;
        progress.defaults_queued += 1;
    }
    Ok(())
}

/// Whether a push of the user's role is waiting.
async fn conn_pending<C: Store>(conn: &mut C, id: &ClerkUserId) -> Result<bool, DbError> {
    Ok(conn
        .find_sync(id.as_str())
        .await?
        .is_some_and(|sync| sync.is_pending()))
}
