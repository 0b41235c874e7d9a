//! The body of [`Outbox`], compiled once for each backend's connection type
//! like `shared.rs`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{CLAIM_LOCK, Conn, GREATEST, NOW, NOW_MS, STATEMENT_US, now_plus};
use crate::db::outbox::Outbox;
use crate::db::outbox::{claim_sql, enqueue_sql};
use crate::db::rows::{Noted, OutboxRow, Sending};
use crate::db::schema::clerk_sync;
use crate::domain::{ClerkUserId, Role, UnrecordedPushes};

#[async_trait::async_trait]
impl Outbox for Conn {
    async fn claim_due_pushes(
        &mut self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> QueryResult<Vec<OutboxRow>> {
        use diesel::sql_types::{BigInt, Text};
        diesel::sql_query(claim_sql(CLAIM_LOCK, NOW, &now_plus("$1")))
            .bind::<BigInt, _>(lease_ms)
            .bind::<Text, _>(owner)
            .bind::<BigInt, _>(limit)
            .load(self)
            .await
    }

    async fn renew_claims(
        &mut self,
        owner: &str,
        user_ids: &[ClerkUserId],
        lease_ms: i64,
    ) -> QueryResult<usize> {
        use diesel::sql_types::{BigInt, Text};
        // One row per statement: a statement holding some outbox rows while
        // it waits for another could close a cycle with a transaction that
        // takes them in id order. A lease already expired is not renewed:
        // another replica may have taken the row over.
        let sql = format!(
            "UPDATE clerk_sync SET claimed_until = {} \
             WHERE user_id = $2 AND claimed_by = $3 AND claimed_until >= {NOW}",
            now_plus("$1")
        );
        let mut renewed = 0;
        for user_id in user_ids {
            renewed += diesel::sql_query(&sql)
                .bind::<BigInt, _>(lease_ms)
                .bind::<Text, _>(user_id)
                .bind::<Text, _>(owner)
                .execute(self)
                .await?;
        }
        Ok(renewed)
    }

    async fn note_before_sending(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: &str,
        sending: Sending,
        lease_ms: i64,
    ) -> QueryResult<Option<Noted>> {
        use diesel::sql_types::{BigInt, Integer, Nullable, Text};
        // During a pause of the budget the push is not sent yet, so nothing
        // is noted: it is not in flight, and a newer intent may still cancel
        // it. The lease is stretched all the same, and the pause returned.
        // The pause is read by the statement's own time, so that what is
        // written and what is returned agree.
        let pause = format!(
            "COALESCE((SELECT paused_until_us FROM clerk_budget WHERE id = 1), 0) - {STATEMENT_US}"
        );
        let paused = format!("{pause} > 0");
        diesel::sql_query(format!(
            "UPDATE clerk_sync SET \
                 unrecorded_roles = CASE WHEN {paused} THEN unrecorded_roles ELSE $1 END, \
                 unrecorded_until = CASE WHEN {paused} THEN unrecorded_until \
                     ELSE {GREATEST}(COALESCE($2, {NOW_MS}), {NOW_MS} + $3) END, \
                 claimed_until = {} \
             WHERE user_id = $5 AND claimed_by = $6 AND claimed_version = $7 \
                 AND claimed_until >= {NOW} AND next_attempt_at IS NOT NULL \
             RETURNING {NOW_MS} AS now_ms, {pause} AS paused_us",
            now_plus("$4")
        ))
        .bind::<Integer, _>(sending.roles.bits())
        .bind::<Nullable<BigInt>, _>(sending.earlier_until)
        .bind::<BigInt, _>(sending.may_apply_ms)
        .bind::<BigInt, _>(lease_ms)
        .bind::<Text, _>(user_id)
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(version)
        .get_result(self)
        .await
        .optional()
    }

    async fn set_unrecorded_pushes(
        &mut self,
        user_id: &ClerkUserId,
        pushes: UnrecordedPushes,
    ) -> QueryResult<()> {
        diesel::update(clerk_sync::table.find(user_id))
            .set((
                clerk_sync::unrecorded_roles.eq(pushes.roles.bits()),
                clerk_sync::unrecorded_until.eq(pushes.until),
            ))
            .execute(self)
            .await
            .map(drop)
    }

    async fn release_claim(&mut self, user_id: &ClerkUserId, owner: &str) -> QueryResult<()> {
        diesel::update(
            clerk_sync::table
                .find(user_id)
                .filter(clerk_sync::claimed_by.eq(owner)),
        )
        .set((
            clerk_sync::claimed_until.eq(None::<chrono::NaiveDateTime>),
            clerk_sync::claimed_by.eq(None::<String>),
        ))
        .execute(self)
        .await
        .map(drop)
    }

    async fn release_claims_of(&mut self, owner: &str) -> QueryResult<usize> {
        diesel::update(clerk_sync::table.filter(clerk_sync::claimed_by.eq(owner)))
            .set((
                clerk_sync::claimed_until.eq(None::<chrono::NaiveDateTime>),
                clerk_sync::claimed_by.eq(None::<String>),
            ))
            .execute(self)
            .await
    }

    async fn enqueue_push(&mut self, user_id: &ClerkUserId, role: Role) -> QueryResult<()> {
        diesel::sql_query(enqueue_sql(NOW))
            .bind::<diesel::sql_types::Text, _>(user_id)
            .bind::<diesel::sql_types::Text, _>(role)
            .execute(self)
            .await
            .map(drop)
    }

    async fn cancel_push(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        owner: Option<&str>,
    ) -> QueryResult<bool> {
        // Placeholders in the order they first appear (SQLite binds
        // them so); no worker's id is empty, so "" is nobody.
        diesel::sql_query(format!(
            "UPDATE clerk_sync SET next_attempt_at = NULL, last_error = NULL, \
                 claimed_by = CASE WHEN claimed_until >= {NOW} AND claimed_version < $1 \
                     AND claimed_by <> $2 THEN claimed_by END, \
                 claimed_until = CASE WHEN claimed_until >= {NOW} AND claimed_version < $1 \
                     AND claimed_by <> $2 THEN claimed_until END \
             WHERE user_id = $3 AND version = $1 AND next_attempt_at IS NOT NULL \
                 AND (claimed_until IS NULL OR claimed_until < {NOW} OR claimed_by = $2 \
                     OR claimed_version < $1 \
                     OR unrecorded_until IS NULL OR unrecorded_until < {NOW_MS})",
        ))
        .bind::<diesel::sql_types::BigInt, _>(version)
        .bind::<diesel::sql_types::Text, _>(owner.unwrap_or_default())
        .bind::<diesel::sql_types::Text, _>(user_id)
        .execute(self)
        .await
        .map(|cancelled| cancelled == 1)
    }

    async fn mark_synced(&mut self, user_id: &ClerkUserId, version: i64) -> QueryResult<()> {
        diesel::update(
            clerk_sync::table
                .find(user_id)
                .filter(clerk_sync::version.eq(version)),
        )
        .set((
            clerk_sync::next_attempt_at.eq(None::<chrono::NaiveDateTime>),
            clerk_sync::last_error.eq(None::<String>),
            clerk_sync::claimed_until.eq(None::<chrono::NaiveDateTime>),
            clerk_sync::claimed_by.eq(None::<String>),
        ))
        .execute(self)
        .await
        .map(drop)
    }

    async fn reschedule_push(
        &mut self,
        user_id: &ClerkUserId,
        version: i64,
        retry_in_ms: Option<i64>,
        error: &str,
        owner: &str,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Nullable, Text};
        // Placeholders in the order they first appear (SQLite binds them
        // so); a NULL delay gives a NULL time: no more retries.
        diesel::sql_query(format!(
            "UPDATE clerk_sync SET next_attempt_at = {}, last_error = $2, \
                 claimed_until = NULL, claimed_by = NULL \
             WHERE user_id = $3 AND version = $4 AND claimed_by = $5",
            now_plus("$1")
        ))
        .bind::<Nullable<BigInt>, _>(retry_in_ms)
        .bind::<Text, _>(error)
        .bind::<Text, _>(user_id)
        .bind::<BigInt, _>(version)
        .bind::<Text, _>(owner)
        .execute(self)
        .await
        .map(drop)
    }

    async fn delete_outbox_row(&mut self, user_id: &ClerkUserId) -> QueryResult<()> {
        diesel::delete(clerk_sync::table.find(user_id))
            .execute(self)
            .await
            .map(drop)
    }
}
