//! The body of [`Queries`]: one implementation, compiled once for each
//! backend's connection type (`postgres.rs` and `sqlite.rs` name it `Conn`
//! and give the backend's clock), so the queries are written once and read
//! like any other code.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{CLOCK, Conn, GREATEST, LEAST, NOW, NOW_US, now_plus};
use crate::db::queries::{Queries, concat_name_ws, lower};
use crate::db::rows::{
    BoundInstance, ClerkSlot, DriftAuditRow, OutboxRow, OutboxSummary, Progress, RoleChangeRow,
    UserFilter, UserRow, WebhookEventFilter, WebhookEventRow,
};
use crate::db::schema::{
    backfill_progress, clerk_instance, clerk_sync, drift_audit_holds, drift_audit_sketches,
    drift_audits, role_changes, role_counts, users, walk_lease, webhook_events,
};
use crate::domain::{ClerkUserId, Role};

#[async_trait::async_trait]
impl Queries for Conn {
    async fn clock(&mut self) -> QueryResult<chrono::NaiveDateTime> {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamp>(CLOCK))
            .get_result(self)
            .await
    }

    async fn find_user(&mut self, id: &ClerkUserId) -> QueryResult<Option<UserRow>> {
        users::table
            .find(id)
            .select(UserRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn role_count_shards(&mut self) -> QueryResult<Vec<(Role, i64)>> {
        role_counts::table
            .select((role_counts::role, role_counts::count))
            .load(self)
            .await
    }

    async fn find_outbox_row(&mut self, user_id: &ClerkUserId) -> QueryResult<Option<OutboxRow>> {
        clerk_sync::table
            .find(user_id)
            .select(OutboxRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn role_history(
        &mut self,
        user_id: &ClerkUserId,
        before: Option<i64>,
        limit: i64,
    ) -> QueryResult<Vec<RoleChangeRow>> {
        let mut query = role_changes::table
            .filter(role_changes::user_id.eq(user_id))
            .order(role_changes::id.desc())
            .select(RoleChangeRow::as_select())
            .limit(limit)
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(role_changes::id.lt(before));
        }
        query.load(self).await
    }

    async fn find_user_with_outbox_row(
        &mut self,
        id: &ClerkUserId,
    ) -> QueryResult<Option<(UserRow, Option<OutboxRow>)>> {
        users::table
            .left_join(clerk_sync::table)
            .filter(users::id.eq(id))
            .select((UserRow::as_select(), Option::<OutboxRow>::as_select()))
            .first(self)
            .await
            .optional()
    }

    async fn list_users(
        &mut self,
        filter: &UserFilter,
    ) -> QueryResult<Vec<(UserRow, Option<OutboxRow>)>> {
        let mut query = users::table
            .left_join(clerk_sync::table)
            .filter(users::deleted_at.is_null())
            .select((UserRow::as_select(), Option::<OutboxRow>::as_select()))
            .order((users::created_at.desc(), users::id.desc()))
            .limit(filter.limit)
            .into_boxed();
        if let Some(role) = filter.role {
            query = query.filter(users::role.eq(role));
        }
        if let Some(pattern) = &filter.search_pattern {
            query = query.filter(
                lower(users::email)
                    .like(pattern)
                    .escape('\\')
                    .or(lower(users::first_name).like(pattern).escape('\\'))
                    .or(lower(users::last_name).like(pattern).escape('\\'))
                    .or(
                        lower(concat_name_ws(" ", users::first_name, users::last_name))
                            .like(pattern)
                            .escape('\\'),
                    ),
            );
        }
        if let Some((created_at, id)) = &filter.after {
            query = query.filter(
                users::created_at.lt(*created_at).or(users::created_at
                    .eq(*created_at)
                    .and(users::id.lt(id.as_str()))),
            );
        }
        query.load(self).await
    }

    async fn push_queue_stats(&mut self) -> QueryResult<(i64, Option<chrono::NaiveDateTime>)> {
        clerk_sync::table
            .filter(clerk_sync::next_attempt_at.is_not_null())
            .select((
                diesel::dsl::count_star(),
                diesel::dsl::min(clerk_sync::queued_at),
            ))
            .first(self)
            .await
    }

    async fn live_user_roles(&mut self) -> QueryResult<Vec<(ClerkUserId, Role)>> {
        users::table
            .filter(users::deleted_at.is_null())
            .select((users::id, users::role))
            .load(self)
            .await
    }

    async fn bound_instance(&mut self) -> QueryResult<Option<BoundInstance>> {
        clerk_instance::table
            .select(BoundInstance::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn bind_instance(&mut self, instance: &BoundInstance) -> QueryResult<bool> {
        diesel::insert_into(clerk_instance::table)
            .values((clerk_instance::id.eq(1), instance))
            .on_conflict(clerk_instance::id)
            .do_nothing()
            .execute(self)
            .await
            .map(|inserted| inserted == 1)
    }

    async fn rebind_instance(&mut self, instance: &BoundInstance) -> QueryResult<()> {
        diesel::insert_into(clerk_instance::table)
            .values((clerk_instance::id.eq(1), instance))
            .on_conflict(clerk_instance::id)
            .do_update()
            .set(instance)
            .execute(self)
            .await
            .map(drop)
    }

    async fn live_user_ids(&mut self, admins: bool, limit: i64) -> QueryResult<Vec<ClerkUserId>> {
        let mut query = users::table
            .filter(users::deleted_at.is_null())
            .order((users::created_at.desc(), users::id.desc()))
            .select(users::id)
            .limit(limit)
            .into_boxed();
        query = if admins {
            query.filter(users::role.eq(Role::Admin))
        } else {
            query.filter(users::role.ne(Role::Admin))
        };
        query.load(self).await
    }

    async fn load_backfill_progress(&mut self) -> QueryResult<Option<Progress>> {
        backfill_progress::table
            .select(Progress::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn save_backfill_progress(&mut self, progress: &Progress) -> QueryResult<()> {
        diesel::insert_into(backfill_progress::table)
            .values((backfill_progress::id.eq(1), progress))
            .on_conflict(backfill_progress::id)
            .do_update()
            .set(progress)
            .execute(self)
            .await
            .map(drop)
    }

    async fn delete_backfill_progress(&mut self) -> QueryResult<()> {
        diesel::delete(backfill_progress::table)
            .execute(self)
            .await
            .map(drop)
    }

    async fn prune_webhook_events(
        &mut self,
        cutoff: chrono::NaiveDateTime,
        batch: i64,
    ) -> QueryResult<usize> {
        diesel::sql_query(
            "DELETE FROM webhook_events WHERE svix_id IN \
             (SELECT svix_id FROM webhook_events WHERE received_at < $1 LIMIT $2)",
        )
        .bind::<diesel::sql_types::Timestamp, _>(cutoff)
        .bind::<diesel::sql_types::BigInt, _>(batch)
        .execute(self)
        .await
    }

    async fn next_push_due_in(&mut self) -> QueryResult<Option<i64>> {
        use diesel::sql_types::{Nullable, Timestamp};
        #[derive(QueryableByName)]
        struct Due {
            #[diesel(sql_type = Nullable<Timestamp>)]
            due: Option<chrono::NaiveDateTime>,
            #[diesel(sql_type = Timestamp)]
            now: chrono::NaiveDateTime,
        }
        let due: Due = diesel::sql_query(format!(
            "SELECT min(next_attempt_at) AS due, {NOW} AS now FROM clerk_sync \
             WHERE next_attempt_at IS NOT NULL \
                 AND (claimed_until IS NULL OR claimed_until < {NOW})"
        ))
        .get_result(self)
        .await?;
        Ok(due.due.map(|at| (at - due.now).num_milliseconds()))
    }

    async fn take_walk_lease(&mut self, owner: &str, lease_ms: i64) -> QueryResult<bool> {
        use diesel::sql_types::{BigInt, Text};
        diesel::sql_query(format!(
            "UPDATE walk_lease SET owner = $1, lease_until = {} \
             WHERE owner IS NULL OR owner = $1 OR lease_until < {NOW}",
            now_plus("$2")
        ))
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_ms)
        .execute(self)
        .await
        .map(|taken| taken == 1)
    }

    async fn release_walk_lease(&mut self, owner: &str) -> QueryResult<()> {
        diesel::update(walk_lease::table.filter(walk_lease::owner.eq(owner)))
            .set((
                walk_lease::owner.eq(None::<String>),
                walk_lease::lease_until.eq(None::<chrono::NaiveDateTime>),
            ))
            .execute(self)
            .await
            .map(drop)
    }

    async fn walk_lease_holder(&mut self) -> QueryResult<Option<(String, chrono::NaiveDateTime)>> {
        walk_lease::table
            .filter(walk_lease::owner.is_not_null())
            .filter(walk_lease::lease_until.ge(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
            >(NOW)))
            .select((
                walk_lease::owner.assume_not_null(),
                walk_lease::lease_until.assume_not_null(),
            ))
            .first(self)
            .await
            .optional()
    }

    async fn unfinished_drift_audit(&mut self) -> QueryResult<Option<DriftAuditRow>> {
        drift_audits::table
            .filter(drift_audits::finished_at.is_null())
            .filter(drift_audits::mode.eq("audit"))
            .order(drift_audits::id.desc())
            .select(DriftAuditRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn last_drift_audit(&mut self, reports: bool) -> QueryResult<Option<DriftAuditRow>> {
        let mut query = drift_audits::table
            .filter(drift_audits::finished_at.is_not_null())
            .order(drift_audits::id.desc())
            .select(DriftAuditRow::as_select())
            .into_boxed();
        if !reports {
            query = query.filter(drift_audits::mode.ne("report"));
        }
        query.first(self).await.optional()
    }

    async fn start_drift_audit(
        &mut self,
        owner: &str,
        started_at: chrono::NaiveDateTime,
        mode: &str,
    ) -> QueryResult<DriftAuditRow> {
        diesel::insert_into(drift_audits::table)
            .values((
                drift_audits::owner.eq(owner),
                drift_audits::started_at.eq(started_at),
                drift_audits::mode.eq(mode),
            ))
            .returning(DriftAuditRow::as_returning())
            .get_result(self)
            .await
    }

    async fn hold_drift_change(
        &mut self,
        run_id: i64,
        user_id: &ClerkUserId,
        kind: &str,
    ) -> QueryResult<bool> {
        diesel::insert_into(drift_audit_holds::table)
            .values((
                drift_audit_holds::run_id.eq(run_id),
                drift_audit_holds::user_id.eq(user_id.as_str()),
                drift_audit_holds::kind.eq(kind),
            ))
            .on_conflict_do_nothing()
            .execute(self)
            .await
            .map(|inserted| inserted == 1)
    }

    async fn count_held_drift_changes(&mut self, run_id: i64) -> QueryResult<i64> {
        drift_audit_holds::table
            .filter(drift_audit_holds::run_id.eq(run_id))
            .count()
            .get_result(self)
            .await
    }

    async fn held_drift_changes(
        &mut self,
        run_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<(ClerkUserId, String)>> {
        let mut query = drift_audit_holds::table
            .filter(drift_audit_holds::run_id.eq(run_id))
            .order(drift_audit_holds::user_id)
            .select((drift_audit_holds::user_id, drift_audit_holds::kind))
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(drift_audit_holds::user_id.gt(after));
        }
        let held: Vec<(String, String)> = query.load(self).await?;
        Ok(held
            .into_iter()
            .filter_map(|(id, kind)| Some((ClerkUserId::parse(&id).ok()?, kind)))
            .collect())
    }

    async fn save_drift_audit(&mut self, run: &DriftAuditRow) -> QueryResult<()> {
        diesel::update(drift_audits::table.find(run.id))
            .set(run)
            .execute(self)
            .await
            .map(drop)
    }

    async fn note_drift_audit_error(&mut self, run_id: i64, error: &str) -> QueryResult<()> {
        diesel::update(drift_audits::table.find(run_id))
            .set(drift_audits::error.eq(error))
            .execute(self)
            .await
            .map(drop)
    }

    async fn prune_drift_audits(&mut self, keep: i64) -> QueryResult<()> {
        let kept: Vec<i64> = drift_audits::table
            .filter(drift_audits::finished_at.is_not_null())
            .order(drift_audits::id.desc())
            .select(drift_audits::id)
            .limit(keep)
            .load(self)
            .await?;
        let Some(oldest_kept) = kept.last() else {
            return Ok(());
        };
        diesel::delete(
            drift_audits::table
                .filter(drift_audits::finished_at.is_not_null())
                .filter(drift_audits::id.lt(oldest_kept)),
        )
        .execute(self)
        .await
        .map(drop)
    }

    async fn drift_audit_sketch(&mut self, run_id: i64) -> QueryResult<Option<Vec<u8>>> {
        drift_audit_sketches::table
            .find(run_id)
            .select(drift_audit_sketches::listed)
            .first(self)
            .await
            .optional()
    }

    async fn forget_drift_audit_sketch(&mut self, run_id: i64) -> QueryResult<()> {
        diesel::delete(drift_audit_sketches::table.find(run_id))
            .execute(self)
            .await
            .map(drop)
    }

    async fn save_drift_audit_sketch(&mut self, run_id: i64, listed: &[u8]) -> QueryResult<()> {
        diesel::insert_into(drift_audit_sketches::table)
            .values((
                drift_audit_sketches::run_id.eq(run_id),
                drift_audit_sketches::listed.eq(listed),
            ))
            .on_conflict(drift_audit_sketches::run_id)
            .do_update()
            .set(drift_audit_sketches::listed.eq(listed))
            .execute(self)
            .await
            .map(drop)
    }

    async fn users_with_outbox_rows(
        &mut self,
        ids: &[ClerkUserId],
    ) -> QueryResult<Vec<(UserRow, Option<OutboxRow>)>> {
        users::table
            .left_join(clerk_sync::table)
            .filter(users::id.eq_any(ids))
            .select((UserRow::as_select(), Option::<OutboxRow>::as_select()))
            .load(self)
            .await
    }

    async fn live_users(
        &mut self,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<ClerkUserId>> {
        let mut query = users::table
            .filter(users::deleted_at.is_null())
            .order(users::id)
            .select(users::id)
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(users::id.gt(after));
        }
        query.load(self).await
    }

    async fn list_webhook_events(
        &mut self,
        filter: &WebhookEventFilter,
    ) -> QueryResult<Vec<WebhookEventRow>> {
        let mut query = webhook_events::table
            .order((
                webhook_events::received_at.desc(),
                webhook_events::svix_id.desc(),
            ))
            .select(WebhookEventRow::as_select())
            .limit(filter.limit)
            .into_boxed();
        if let Some(user_id) = &filter.user_id {
            query = query.filter(webhook_events::user_id.eq(user_id.as_str()));
        }
        if let Some(event_type) = &filter.event_type {
            query = query.filter(webhook_events::event_type.eq(event_type));
        }
        if let Some(outcome) = &filter.outcome {
            query = query.filter(webhook_events::outcome.eq(outcome));
        }
        if let Some(since) = filter.since {
            query = query.filter(webhook_events::received_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(webhook_events::received_at.lt(until));
        }
        if let Some((received_at, svix_id)) = &filter.after {
            // The first condition is implied by the second; it is what lets
            // the index scan start at the cursor instead of filtering every
            // newer row on the way to it.
            query = query.filter(webhook_events::received_at.le(*received_at));
            query = query.filter(
                webhook_events::received_at
                    .lt(*received_at)
                    .or(webhook_events::received_at
                        .eq(*received_at)
                        .and(webhook_events::svix_id.lt(svix_id.as_str()))),
            );
        }
        query.load(self).await
    }

    async fn last_webhook_event(&mut self) -> QueryResult<Option<WebhookEventRow>> {
        webhook_events::table
            .order((
                webhook_events::received_at.desc(),
                webhook_events::svix_id.desc(),
            ))
            .select(WebhookEventRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn outbox_summary(&mut self) -> QueryResult<OutboxSummary> {
        let (pending, oldest_pending) = self.push_queue_stats().await?;
        let failing = clerk_sync::table
            .filter(clerk_sync::last_error.is_not_null())
            .count()
            .get_result(self)
            .await?;
        Ok(OutboxSummary {
            pending,
            failing,
            oldest_pending,
        })
    }

    async fn unsettled_pushes(&mut self, limit: i64) -> QueryResult<Vec<OutboxRow>> {
        clerk_sync::table
            .filter(
                clerk_sync::next_attempt_at
                    .is_not_null()
                    .or(clerk_sync::last_error.is_not_null()),
            )
            .order((clerk_sync::queued_at.asc(), clerk_sync::user_id.asc()))
            .select(OutboxRow::as_select())
            .limit(limit)
            .load(self)
            .await
    }

    async fn take_clerk_slot(
        &mut self,
        interval_us: i64,
        horizon_us: i64,
    ) -> QueryResult<ClerkSlot> {
        // Placeholders in order of first appearance (SQLite binds so).
        diesel::sql_query(format!(
            "UPDATE clerk_budget SET next_slot_us = $1 + {GREATEST}( \
                 {LEAST}(next_slot_us, {NOW_US} + $2), paused_until_us, {NOW_US}) \
             WHERE id = 1 \
             RETURNING next_slot_us - $1 - {NOW_US} AS wait_us, \
                 paused_until_us - {NOW_US} AS paused_us"
        ))
        .bind::<diesel::sql_types::BigInt, _>(interval_us)
        .bind::<diesel::sql_types::BigInt, _>(horizon_us)
        .get_result(self)
        .await
    }

    async fn take_idle_clerk_slot(&mut self, interval_us: i64) -> QueryResult<Option<i64>> {
        use diesel::sql_types::BigInt;
        #[derive(QueryableByName)]
        struct Wait {
            #[diesel(sql_type = BigInt)]
            wait_us: i64,
        }
        let taken = diesel::sql_query(format!(
            "UPDATE clerk_budget SET next_slot_us = {NOW_US} + $1 \
             WHERE id = 1 AND next_slot_us <= {NOW_US} AND paused_until_us <= {NOW_US}"
        ))
        .bind::<BigInt, _>(interval_us)
        .execute(&mut *self)
        .await?;
        if taken == 1 {
            return Ok(None);
        }
        let wait: Wait = diesel::sql_query(format!(
            "SELECT {GREATEST}(next_slot_us, paused_until_us) - {NOW_US} AS wait_us \
             FROM clerk_budget WHERE id = 1"
        ))
        .get_result(self)
        .await?;
        Ok(Some(wait.wait_us.max(1)))
    }

    async fn pause_clerk(&mut self, pause_us: i64) -> QueryResult<()> {
        diesel::sql_query(format!(
            "UPDATE clerk_budget \
             SET paused_until_us = {GREATEST}(paused_until_us, {NOW_US} + $1) WHERE id = 1"
        ))
        .bind::<diesel::sql_types::BigInt, _>(pause_us)
        .execute(self)
        .await
        .map(drop)
    }
}
