//! `clerk-role-sync reconcile`: compares every user's role here with Clerk's
//! and reports (and with `--fix`, repairs) the drift that lost webhooks or
//! refused pushes left behind.

use std::collections::HashSet;
use std::fmt;

use super::Pacer;
use super::backfill::{PAGE_SIZE, ensure_advances};
use super::retry::call_clerk;
use crate::app::backfill::Prefer;
use crate::app::reconcile;
use crate::clerk::ClerkClient;
use crate::db::rows::SyncRow;
use crate::db::{Db, DbError, Queries as _};
use crate::domain::{ClerkUserId, Role};
use crate::with_conn;

/// One difference between the two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Both have the user, with different roles (and no push is pending).
    RoleDiffers {
        user_id: String,
        ours: Role,
        clerk: Role,
    },
    /// Clerk has a user we do not.
    MissingHere { user_id: String },
    /// We have a live user Clerk does not.
    MissingInClerk { user_id: String },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RoleDiffers {
                user_id,
                ours,
                clerk,
            } => {
                write!(f, "{user_id}: role here {ours}, in Clerk {clerk}")
            }
            Self::MissingHere { user_id } => write!(f, "{user_id}: in Clerk, not here"),
            Self::MissingInClerk { user_id } => write!(f, "{user_id}: here, not in Clerk"),
        }
    }
}

/// What a reconcile found and did.
#[derive(Debug, Default)]
pub struct Report {
    pub checked: usize,
    pub drift: Vec<Drift>,
    pub fixed: usize,
}

impl Report {
    /// Drift left after the fixes.
    pub fn remaining(&self) -> usize {
        self.drift.len() - self.fixed
    }
}

/// Walks every Clerk user and every live user here.
pub async fn run(
    db: &Db,
    client: &ClerkClient,
    prefer: Prefer,
    fix: bool,
    requests_per_sec: f64,
) -> anyhow::Result<Report> {
    let pacer = Pacer::new(requests_per_sec);
    let mut report = Report::default();
    let mut in_clerk = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = call_clerk(&pacer, || client.list_users(PAGE_SIZE, after.as_deref())).await?;
        ensure_advances(after.as_deref(), &page)?;
        for user in &page {
            in_clerk.insert(user.id.clone());
            report.checked += 1;
            let Ok(id) = ClerkUserId::parse(user.id.as_str()) else {
                continue;
            };
            let Some(clerk_role) = user.metadata_role().role() else {
                continue;
            };
            let here = with_conn!(db, conn => {
                Ok::<_, DbError>(conn.find_user_with_sync(&id).await?)
            })?;
            let drift = match here {
                None => Drift::MissingHere {
                    user_id: user.id.clone(),
                },
                Some((row, _)) if row.deleted_at.is_some() => continue,
                Some((_, Some(sync))) if SyncRow::is_pending(&sync) => continue,
                Some((row, _)) if row.role == clerk_role => continue,
                Some((row, _)) => Drift::RoleDiffers {
                    user_id: user.id.clone(),
                    ours: row.role,
                    clerk: clerk_role,
                },
            };
            if fix {
                match (&drift, prefer) {
                    (Drift::RoleDiffers { ours, .. }, Prefer::Db) => {
                        with_conn!(db, conn => reconcile::queue_push(conn, &id, *ours).await)?;
                    }
                    _ => {
                        with_conn!(db, conn => reconcile::apply_clerk_state(conn, &id, user).await)?;
                    }
                }
                report.fixed += 1;
            }
            report.drift.push(drift);
        }
        if page.len() < PAGE_SIZE {
            break;
        }
        after = page.last().map(|user| user.id.clone());
    }

    let ours = with_conn!(db, conn => reconcile::live_users(conn).await)?;
    for (user_id, _) in ours {
        if in_clerk.contains(user_id.as_str()) {
            continue;
        }
        if fix {
            with_conn!(db, conn => reconcile::tombstone(conn, &user_id).await)?;
            report.fixed += 1;
        }
        report.drift.push(Drift::MissingInClerk {
            user_id: user_id.into(),
        });
    }
    Ok(report)
}
