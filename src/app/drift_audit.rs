//! The drift audit's use-cases, shared by the audit inside `serve` and by
//! `reconcile` on the command line: what a page of Clerk's user list, or
//! the lookup of users Clerk's list did not show, finds and repairs here,
//! each in one transaction together with the run's progress (so a
//! restarted audit resumes where it stopped). A transaction that creates
//! a user a webhook creates at the same moment fails on the primary key;
//! run again, it finds the user and applies Clerk's state by the ordering
//! rules, as an upsert would.
//!
//! Drift is what lost webhooks leave behind: a user Clerk has and we do not
//! (`missing_here`, a provisional tombstone included), a role that differs
//! while no push is pending (`role_differs`), a Clerk state newer than the
//! one applied here (`outdated`: a profile change, say), and a live user
//! Clerk no longer has (`missing_in_clerk`: its `user.deleted` was lost).
//! Each is repaired as a late webhook would be, by the race rule, with
//! audit rows of source `reconcile`; a user whose push is pending or
//! failing is left to the push.
//!
//! A page is read without locks first: only the users that show drift are
//! locked, judged again and repaired, so a run over users in sync writes
//! two rows per page (its progress and its sketch) and locks none. The live users the walk
//! finds are kept in a sketch of fixed size ([`IdSketch`]), saved with the
//! progress; at the walk's end, subtracted from the same sketch of the live
//! users here, it names the users Clerk's list did not show, to be looked
//! up one by one.
//!
//! What cannot be undone by the next webhook (a deletion, a demotion of an
//! ADMIN) is held back until the run's end: within the run's budget each is
//! made after a fresh lookup confirms it; past the budget none is, and the
//! run waits for an operator (`reconcile --fix --max-deletions N`).

use std::collections::HashMap;

use chrono::NaiveDateTime;

use super::audit::after_commit;
use super::backfill::Prefer;
use super::clerk_state::{Deleter, Outcome, StateContext};
use super::unit_of_work::UnitOfWork;
use crate::clerk::ClerkUser;
use crate::db::rows::{DriftAuditRow, OutboxRow, UserRow};
use crate::db::{DbError, Store};
use crate::domain::{ClerkUserId, Role, RoleSource};
pub use crate::domain::{DECODES_UP_TO, Difference, DriftKind, IdSketch};

/// Longest reason kept for a run that stopped (Clerk's messages can be long).
const MAX_ERROR_CHARS: usize = 1_000;

/// Below this many live users here, a short list of Clerk's is no sign of
/// a wrong answer (a small instance may lose half its users in a day).
pub const SHORT_LIST_MIN_LIVE: i64 = 20;

/// The actor of the audit rows the drift audit writes.
pub const ACTOR: &str = "drift-audit";

/// Live users read per statement when the users here are sketched or
/// scanned for the ones Clerk's list did not show.
const SCAN_BATCH: i64 = 10_000;

/// What a run does with the drift it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// The audit inside `serve`: repairs Clerk's way, resumable.
    Audit,
    /// `reconcile`: reports, changes no user.
    Report,
    /// `reconcile --fix`: repairs, with `--prefer db` by pushing our roles.
    Fix(Prefer),
}

impl RunMode {
    /// As stored in `drift_audits.mode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Report => "report",
            Self::Fix(_) => "fix",
        }
    }

    fn repairs(self) -> bool {
        self != Self::Report
    }

    fn prefer(self) -> Prefer {
        match self {
            Self::Fix(prefer) => prefer,
            Self::Audit | Self::Report => Prefer::Clerk,
        }
    }
}

/// How a run judges and repairs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub mode: RunMode,
    /// The race rule's clock-skew allowance.
    pub allowance_ms: i64,
}

/// One user's drift, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub user_id: ClerkUserId,
    pub kind: DriftKind,
    /// The role here (`None`: no live user here).
    pub ours: Option<Role>,
    /// The role in Clerk (`None`: Clerk has no such user, or holds a role
    /// we do not know).
    pub clerk: Option<Role>,
    pub repaired: bool,
    /// Held back until the run's end (a deletion, a demotion of an ADMIN).
    pub held: bool,
}

/// Why a run ended waiting for an operator rather than repairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// More deletions and ADMIN demotions than the run may make.
    TooManyChanges { held: i64, max: i64 },
    /// Clerk's list showed far fewer users than are live here: a truncated
    /// or wrong answer would have every other user looked up and deleted.
    ShortList { listed: i64, live: i64 },
    /// More live users here are missing from Clerk's list (about
    /// `unlisted`: the live users here less those the list showed) than the
    /// walk's sketch names one by one: finding them would take a lookup of
    /// nearly every user. `reconcile` does that, at its own pace.
    TooManyUnlisted { unlisted: i64 },
}

impl Waiting {
    /// The users it concerns (for `ShortList` and `TooManyUnlisted`, an
    /// estimate: the live users here the list did not show).
    pub fn users(&self) -> i64 {
        match self {
            Self::TooManyChanges { held, .. } => *held,
            Self::ShortList { listed, live } => live - listed,
            Self::TooManyUnlisted { unlisted } => *unlisted,
        }
    }

    /// What the operator does next.
    pub fn next_step(&self) -> &'static str {
        match self {
            Self::TooManyChanges { .. } | Self::ShortList { .. } => {
                "review the users in /api/admin/sync/status (or `clerk-role-sync reconcile`), \
                 then confirm with `clerk-role-sync reconcile --fix --max-deletions N`"
            }
            Self::TooManyUnlisted { .. } => {
                "list them with `clerk-role-sync reconcile` (it looks up every user the audit \
                 cannot rule out, at its --rate), then confirm with \
                 `clerk-role-sync reconcile --fix --max-deletions N`"
            }
        }
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyChanges { held, max } => write!(
                f,
                "{held} deletions or ADMIN demotions found, more than the {max} a run may make"
            ),
            Self::ShortList { listed, live } => write!(
                f,
                "Clerk's list showed {listed} users, under half of the {live} live here"
            ),
            Self::TooManyUnlisted { unlisted } => write!(
                f,
                "about {unlisted} live users here are missing from Clerk's list, more than the \
                 {DECODES_UP_TO} or so the audit names one by one: finding them would take a \
                 lookup of nearly every user"
            ),
        }
    }
}

/// The run to go on with: the unfinished audit (whoever started it: its
/// owner died or stopped), now in `owner`'s name, or a new one.
pub async fn resume_or_start<C: Store>(
    conn: &mut C,
    owner: &str,
    now: NaiveDateTime,
) -> Result<DriftAuditRow, DbError> {
    match conn.unfinished_drift_audit().await? {
        Some(mut run) => {
            run.owner = owner.to_owned();
            conn.save_drift_audit(&run).await?;
            Ok(run)
        }
        None => start(conn, owner, now, RunMode::Audit).await,
    }
}

/// A fresh run of `mode`.
pub async fn start<C: Store>(
    conn: &mut C,
    owner: &str,
    now: NaiveDateTime,
    mode: RunMode,
) -> Result<DriftAuditRow, DbError> {
    Ok(conn.start_drift_audit(owner, now, mode.as_str()).await?)
}

/// Applies one page of Clerk's user list to `run`: its users are read here
/// without locks; those that show drift are locked, judged again and
/// repaired in one transaction with the run's progress (it resumes after
/// the page's last user; after the `last` page, with the lookups) and the
/// sketch of the live users its walk found (`listed`, as it stood before
/// the page). The run and the sketch after the page, and what it found.
pub async fn apply_page<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    listed: &IdSketch,
    page: &[ClerkUser],
    last: bool,
    rules: Rules,
) -> Result<(DriftAuditRow, IdSketch, Vec<Finding>), DbError> {
    let users: Vec<(ClerkUserId, Option<&ClerkUser>)> = page
        .iter()
        .filter_map(|user| Some((ClerkUserId::parse(user.id.as_str()).ok()?, Some(user))))
        .collect();
    // Read before the transaction, without locks: its first statement is
    // then a write (a lock, or the progress), which on SQLite waits for
    // the write lock rather than fail on a snapshot another writer moved on.
    let ids: Vec<ClerkUserId> = users.iter().map(|(id, _)| id.clone()).collect();
    let stored: HashMap<ClerkUserId, (UserRow, Option<OutboxRow>)> = conn
        .users_with_outbox_rows(&ids)
        .await?
        .into_iter()
        .map(|(row, push)| (row.id.clone(), (row, push)))
        .collect();
    let mut sketch = listed.clone();
    let mut drifted = Vec::new();
    for (id, clerk) in &users {
        let (row, push) = match stored.get(id) {
            Some((row, push)) => (Some(row), push.as_ref()),
            None => (None, None),
        };
        let unsettled = push.is_some_and(OutboxRow::is_unsettled);
        match drift(row, *clerk, unsettled) {
            Some(_) => drifted.push((id.clone(), *clerk)),
            None => sketch_if_live(&mut sketch, row),
        }
    }
    after_commit(conn.transaction(async |conn| {
        let mut next = run.clone();
        next.checked += page.len() as i64;
        let mut sketch = sketch.clone();
        let findings = repair(conn, &mut next, &drifted, rules, Step::Find(&mut sketch)).await?;
        if let Some(user) = page.last() {
            next.after_user_id = Some(user.id.clone());
        }
        next.walked = last;
        conn.save_drift_audit(&next).await?;
        conn.save_drift_audit_sketch(run.id, &sketch.to_bytes())
            .await?;
        Ok((next, sketch, findings))
    }))
    .await
}

/// The sketch of the live users `run`'s walk has found so far (an empty
/// one before its first page, whatever is stored); `None` when none is
/// stored, or it cannot be read, though the walk has begun: the walk must
/// start over.
pub async fn listed<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
) -> Result<Option<IdSketch>, DbError> {
    let begun = run.walked || run.after_user_id.is_some();
    if !begun {
        return Ok(Some(IdSketch::default()));
    }
    let stored = conn.drift_audit_sketch(run.id).await?;
    Ok(stored.as_deref().and_then(IdSketch::from_bytes))
}

/// Starts the walk of Clerk's list over (Clerk refused its cursor: the
/// user it names was deleted meanwhile; or the walk's sketch is lost),
/// forgetting what it found, in one transaction. The count of users
/// checked starts over with the walk (until the lookups, it is the count
/// Clerk's list showed); what was repaired and held stays.
pub async fn restart_walk<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
) -> Result<DriftAuditRow, DbError> {
    let next = DriftAuditRow {
        after_user_id: None,
        walked: false,
        after_local_id: None,
        checked: 0,
        ..run.clone()
    };
    conn.transaction(async |conn| {
        conn.forget_drift_audit_sketch(run.id).await?;
        conn.save_drift_audit(&next).await
    })
    .await?;
    Ok(next)
}

/// Whether the walk's list (`run` has just walked it: every user it
/// checked, Clerk's list showed) is too short to trust with the lookups
/// that follow it (see [`Waiting::ShortList`]): unless `max_deletions`
/// allows deleting every user it did not show.
pub async fn short_list<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    max_deletions: i64,
) -> Result<Option<Waiting>, DbError> {
    let live = conn.role_stats().await?.total();
    let listed = run.checked;
    let short = live > SHORT_LIST_MIN_LIVE && listed * 2 < live && live - listed > max_deletions;
    Ok(short.then_some(Waiting::ShortList { listed, live }))
}

/// Why `run` (its walk just done) waits for an operator rather than look
/// up nearly every user: more users are missing from Clerk's list than its
/// sketch names one by one.
pub async fn too_many_unlisted<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
) -> Result<Waiting, DbError> {
    let live = conn.role_stats().await?.total();
    Ok(Waiting::TooManyUnlisted {
        unlisted: (live - run.checked).max(1),
    })
}

/// How many changes `run` held back.
pub async fn held_count<C: Store>(conn: &mut C, run: &DriftAuditRow) -> Result<i64, DbError> {
    Ok(conn.count_held_drift_changes(run.id).await?)
}

/// The live users here that `run`'s walk (whose finds `listed` holds) did
/// not find in Clerk's list: the sketch of the live users, read in
/// batches, minus `listed`. The walk reads Clerk's list to its end, users
/// created meanwhile included, so the users it names are those Clerk lost
/// (and any created here after its last page: a lookup finds them).
pub async fn unfound<C: Store>(conn: &mut C, listed: &IdSketch) -> Result<Difference, DbError> {
    let mut here = IdSketch::default();
    let mut after: Option<ClerkUserId> = None;
    loop {
        let ids = conn
            .live_users(after.as_ref().map(ClerkUserId::as_str), SCAN_BATCH)
            .await?;
        for id in &ids {
            here.insert(id.as_str());
        }
        if ids.len() < SCAN_BATCH as usize {
            return Ok(here.subtract(listed));
        }
        after = ids.last().cloned();
    }
}

/// Up to `limit` of the users [`unfound`] named, by id after the last one
/// `run` looked up.
pub async fn unfound_users<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    unfound: &Difference,
    limit: usize,
) -> Result<Vec<ClerkUserId>, DbError> {
    let mut candidates = Vec::new();
    let mut after = run.after_local_id.clone();
    loop {
        let ids = conn.live_users(after.as_deref(), SCAN_BATCH).await?;
        let scanned = ids.len();
        after = ids.last().map(ToString::to_string);
        candidates.extend(ids.into_iter().filter(|id| unfound.may_hold(id.as_str())));
        if candidates.len() >= limit || scanned < SCAN_BATCH as usize {
            candidates.truncate(limit);
            return Ok(candidates);
        }
    }
}

/// Applies what Clerk answered for users the walk did not find: `None`,
/// Clerk has no such user (held back as a deletion); `Some`, the user as
/// Clerk has it (the list missed it: applied like a page's). With the
/// run's progress, in one transaction: it resumes after `last_asked`, the
/// last user looked up, answered or not (a user whose lookup Clerk refused
/// is left to the next run, never asked about for ever).
pub async fn apply_lookups<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    looked_up: &[(ClerkUserId, Option<ClerkUser>)],
    last_asked: &ClerkUserId,
    rules: Rules,
) -> Result<(DriftAuditRow, Vec<Finding>), DbError> {
    let mut next = run.clone();
    next.checked += looked_up.len() as i64;
    next.after_local_id = Some(last_asked.to_string());
    repair_and_save(conn, next, looked_up, rules, Step::Look).await
}

/// Repairs what `looked_up` shows at `step` and saves the run's progress
/// `next`, in one transaction.
async fn repair_and_save<C: Store>(
    conn: &mut C,
    next: DriftAuditRow,
    looked_up: &[(ClerkUserId, Option<ClerkUser>)],
    rules: Rules,
    step: Step<'_>,
) -> Result<(DriftAuditRow, Vec<Finding>), DbError> {
    let users: Vec<(ClerkUserId, Option<&ClerkUser>)> = looked_up
        .iter()
        .map(|(id, user)| (id.clone(), user.as_ref()))
        .collect();
    after_commit(conn.transaction(async |conn| {
        let mut next = next;
        let findings = repair(conn, &mut next, &users, rules, step).await?;
        conn.save_drift_audit(&next).await?;
        Ok((next, findings))
    }))
    .await
}

/// Up to `limit` of the changes `run` held back, by user id after `after`.
pub async fn held<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    after: Option<&ClerkUserId>,
    limit: i64,
) -> Result<Vec<(ClerkUserId, DriftKind)>, DbError> {
    let held = conn
        .held_drift_changes(run.id, after.map(ClerkUserId::as_str), limit)
        .await?;
    Ok(held
        .into_iter()
        .filter_map(|(id, kind)| Some((id, DriftKind::parse(&kind)?)))
        .collect())
}

/// Makes the changes `run` held back, each judged again against what
/// Clerk answered just now (`None`: Clerk has no such user, a second time:
/// the user is tombstoned, provisionally). In one transaction.
pub async fn apply_held<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    looked_up: &[(ClerkUserId, Option<ClerkUser>)],
    rules: Rules,
) -> Result<(DriftAuditRow, Vec<Finding>), DbError> {
    repair_and_save(conn, run.clone(), looked_up, rules, Step::MakeHeld).await
}

/// Ends `run` at `now`, waiting for an operator if `waiting`, and forgets
/// all but the newest `keep` runs.
pub async fn finish<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    now: NaiveDateTime,
    waiting: Option<&Waiting>,
    keep: i64,
) -> Result<DriftAuditRow, DbError> {
    let finished = DriftAuditRow {
        finished_at: Some(now),
        error: None,
        waiting: waiting.map(ToString::to_string),
        ..run.clone()
    };
    conn.save_drift_audit(&finished).await?;
    conn.forget_drift_audit_sketch(run.id).await?;
    conn.prune_drift_audits(keep).await?;
    Ok(finished)
}

/// Notes why the run stopped (an audit resumes at its next start). Only
/// the reason is written: the progress stays as the last step committed
/// it, whatever this process last heard of it.
pub async fn stopped<C: Store>(
    conn: &mut C,
    run: &DriftAuditRow,
    error: &str,
) -> Result<(), DbError> {
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    Ok(conn.note_drift_audit_error(run.id, &error).await?)
}

/// Whether a step finds drift, or makes the changes held back until now.
enum Step<'a> {
    /// A page of the walk: drift is counted; what can be repaired at once
    /// is, the rest (a deletion, an ADMIN demotion) is held back. The users
    /// live once repaired go into the walk's sketch.
    Find(&'a mut IdSketch),
    /// The lookup of users the walk did not find: as `Find`, with no sketch.
    Look,
    /// Changes held back, each judged again against Clerk's fresh answer
    /// and made whatever its kind.
    MakeHeld,
}

/// Locks `users` (each as Clerk has it, `None` where Clerk has no such
/// user) in id order, finds their drift and repairs it as `step` says.
async fn repair<C: Store>(
    conn: &mut C,
    run: &mut DriftAuditRow,
    users: &[(ClerkUserId, Option<&ClerkUser>)],
    rules: Rules,
    mut step: Step<'_>,
) -> Result<Vec<Finding>, DbError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut locked = UnitOfWork::take(conn, users.iter().map(|(id, _)| id), &[]).await?;
    let mut in_order: Vec<&(ClerkUserId, Option<&ClerkUser>)> = users.iter().collect();
    in_order.sort_by(|a, b| a.0.cmp(&b.0));
    let actor = format!("{ACTOR}/{}", run.id);
    let mut findings = Vec::new();
    for (id, clerk) in in_order {
        let row = locked.row(id);
        let Some(kind) = drift(row, *clerk, locked.push_unsettled(id)) else {
            continue;
        };
        let mut finding = Finding {
            user_id: id.clone(),
            kind,
            ours: row
                .filter(|row| row.deleted_at.is_none())
                .map(|row| row.role),
            clerk: clerk.and_then(|user| user.metadata_role().role()),
            repaired: false,
            held: false,
        };
        if !matches!(step, Step::MakeHeld) {
            finding.held = rules.mode.repairs() && destructive(&finding, rules.mode.prefer());
            // Held already (a walk started over finds it again): counted once.
            if finding.held && !conn.hold_drift_change(run.id, id, kind.as_str()).await? {
                continue;
            }
            count_found(run, kind);
        }
        if rules.mode.repairs() && !finding.held {
            finding.repaired = make(conn, &mut locked, id, *clerk, &actor, rules).await?;
            run.repaired += i64::from(finding.repaired);
        }
        findings.push(finding);
    }
    if let Step::Find(listed) = &mut step {
        for (id, _) in users {
            sketch_if_live(listed, locked.row(id));
        }
    }
    locked.write(conn).await?;
    Ok(findings)
}

/// Adds the user of `row` to `listed` if it is live (the users [`unfound`]
/// sketches here).
fn sketch_if_live(listed: &mut IdSketch, row: Option<&UserRow>) {
    if let Some(row) = row.filter(|row| row.deleted_at.is_none()) {
        listed.insert(row.id.as_str());
    }
}

/// Repairs one user's drift: Clerk's state applied (or, preferring ours,
/// our role pushed), or the user tombstoned when Clerk has none.
async fn make<C: Store>(
    conn: &mut C,
    locked: &mut UnitOfWork,
    id: &ClerkUserId,
    clerk: Option<&ClerkUser>,
    actor: &str,
    rules: Rules,
) -> Result<bool, DbError> {
    let Some(user) = clerk else {
        let deleted_by = Deleter::Reconcile { actor };
        let outcome = locked.delete(conn, id, deleted_by, None).await?;
        return Ok(outcome == Outcome::Deleted);
    };
    let ours = locked
        .row(id)
        .filter(|row| row.deleted_at.is_none())
        .map(|row| row.role);
    if let (Prefer::Db, Some(ours)) = (rules.mode.prefer(), ours)
        && user.metadata_role().role() != Some(ours)
    {
        locked.queue_push(conn, id, ours).await?;
        return Ok(true);
    }
    let context = StateContext {
        source: RoleSource::Reconcile,
        actor,
        // What Clerk holds now settles what its last instant held.
        reread: true,
        allowance_ms: rules.allowance_ms,
        claimed_by: None,
    };
    let outcome = locked.apply_state(conn, id, user, context, None).await?;
    Ok(matches!(
        outcome,
        Outcome::Applied | Outcome::Unchanged | Outcome::UnknownRole
    ))
}

/// Whether repairing `finding` cannot be undone by the next webhook: a
/// deletion, or a demotion of an ADMIN (here, or in Clerk when our role is
/// preferred).
fn destructive(finding: &Finding, prefer: Prefer) -> bool {
    let demotes = |from: Option<Role>, to: Option<Role>| {
        from == Some(Role::Admin) && to.is_some_and(|to| to != Role::Admin)
    };
    match (finding.kind, prefer) {
        (DriftKind::MissingInClerk, _) => true,
        (DriftKind::RoleDiffers, Prefer::Clerk) => demotes(finding.ours, finding.clerk),
        (DriftKind::RoleDiffers, Prefer::Db) => demotes(finding.clerk, finding.ours),
        _ => false,
    }
}

/// The drift a user shows between our row and what Clerk holds (`None`:
/// Clerk has no such user), if any. A final tombstone stays, a provisional
/// one is undone when Clerk shows the user; a user whose push is pending
/// or failing is the push's to settle (a failing one shows in
/// `/api/admin/sync/status` with Clerk's refusal).
fn drift(
    row: Option<&UserRow>,
    clerk: Option<&ClerkUser>,
    push_unsettled: bool,
) -> Option<DriftKind> {
    let Some(row) = row else {
        return clerk.map(|_| DriftKind::MissingHere);
    };
    if row.deleted_at.is_some() {
        let returns = !row.deletion_final && clerk.is_some();
        return returns.then_some(DriftKind::MissingHere);
    }
    if push_unsettled {
        return None;
    }
    let Some(clerk) = clerk else {
        return Some(DriftKind::MissingInClerk);
    };
    let applied = row.clerk_updated_at.unwrap_or(i64::MIN);
    if clerk.updated_at < applied {
        // A newer state came in since Clerk's list was read.
        return None;
    }
    match clerk.metadata_role().role() {
        Some(role) if role != row.role => Some(DriftKind::RoleDiffers),
        _ if clerk.updated_at > applied => Some(DriftKind::Outdated),
        _ => None,
    }
}

fn count_found(run: &mut DriftAuditRow, kind: DriftKind) {
    let found = match kind {
        DriftKind::MissingHere => &mut run.found_missing_here,
        DriftKind::RoleDiffers => &mut run.found_role_differs,
        DriftKind::Outdated => &mut run.found_outdated,
        DriftKind::MissingInClerk => &mut run.found_missing_in_clerk,
    };
    *found += 1;
}
