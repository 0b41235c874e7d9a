//! The schema and the role bookkeeping, on both backends.

use clerk_role_sync::app::change_roles::{self, RoleUpdate, RoleUpdateError};
use clerk_role_sync::db::rows::{RoleStats, Sending};
use clerk_role_sync::db::{DbError, Outbox, Queries};
use clerk_role_sync::domain::{Role, RoleSet, RoleSource};
use clerk_role_sync::with_conn;
use diesel_async::SimpleAsyncConnection;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app, user_id as id};

async fn stats(db: &clerk_role_sync::db::Db) -> RoleStats {
    let result: Result<_, DbError> =
        with_conn!(db, conn => Ok::<_, DbError>(conn.role_stats().await?));
    result.expect("stats")
}

async fn set_role(
    db: &clerk_role_sync::db::Db,
    user: &str,
    role: Role,
    create: bool,
) -> Result<RoleUpdate, RoleUpdateError> {
    with_conn!(db, conn => {
        change_roles::set_role(conn, &id(user), role, RoleSource::Cli, Some("tester"), create).await
    })
}

async fn execute(db: &clerk_role_sync::db::Db, sql: &str) -> Result<(), DbError> {
    with_conn!(db, conn => conn.batch_execute(sql).await.map_err(DbError::from))
}

both_backends!(
    role_changes_move_counts_and_write_audit_rows,
    unknown_users_are_not_created_unless_asked,
    the_schema_refuses_roles_outside_the_three,
    a_svix_id_is_stored_once,
    migrations_are_idempotent,
    a_push_is_noted_by_the_databases_clock_under_its_claim,
    the_clerk_budget_spaces_every_slot_and_a_pause_holds_them_all
);

async fn role_changes_move_counts_and_write_audit_rows(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(stats(&app.db).await, RoleStats::default());

    let created = set_role(&app.db, "user_a", Role::Admin, true)
        .await
        .expect("created");
    assert!(matches!(created, RoleUpdate::Changed { from: None, .. }));
    set_role(&app.db, "user_b", Role::Student, true)
        .await
        .expect("created");
    let changed = set_role(&app.db, "user_b", Role::Instructor, false)
        .await
        .expect("changed");
    assert!(matches!(
        changed,
        RoleUpdate::Changed {
            from: Some(Role::Student),
            ..
        }
    ));
    let same = set_role(&app.db, "user_b", Role::Instructor, false)
        .await
        .expect("no-op");
    assert!(matches!(same, RoleUpdate::Unchanged(_)));

    let counts = stats(&app.db).await;
    assert_eq!(
        (counts.admins, counts.instructors, counts.students),
        (1, 1, 0)
    );
    assert_eq!(counts.total(), 2);
    let audit_rows: Result<i64, DbError> = with_conn!(app.db, conn => {
        use clerk_role_sync::db::schema::role_changes::dsl::*;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        Ok(role_changes.count().get_result(conn).await?)
    });
    assert_eq!(
        audit_rows.expect("count"),
        3,
        "two creations and one change; the no-op writes nothing"
    );
}

async fn unknown_users_are_not_created_unless_asked(backend: Backend) {
    let app = spawn_app(backend).await;

    let result = set_role(&app.db, "user_ghost", Role::Admin, false).await;

    assert!(matches!(result, Err(RoleUpdateError::NotFound)));
    assert_eq!(stats(&app.db).await.total(), 0);
    let found: Result<_, DbError> =
        with_conn!(app.db, conn => Ok(conn.find_user(&id("user_ghost")).await?));
    assert!(found.expect("query").is_none());
}

async fn the_schema_refuses_roles_outside_the_three(backend: Backend) {
    let app = spawn_app(backend).await;

    let bad_role = execute(
        &app.db,
        "INSERT INTO users (id, role, created_at, updated_at) \
         VALUES ('user_x', 'SUPERUSER', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )
    .await;
    assert!(bad_role.is_err(), "a CHECK constraint limits roles");

    let bad_source = execute(
        &app.db,
        "INSERT INTO users (id, role, created_at, updated_at) \
         VALUES ('user_y', 'ADMIN', '2026-01-01 00:00:00', '2026-01-01 00:00:00'); \
         INSERT INTO role_changes (user_id, new_role, source, changed_at) \
         VALUES ('user_y', 'ADMIN', 'telepathy', '2026-01-01 00:00:00')",
    )
    .await;
    assert!(bad_source.is_err(), "a CHECK constraint limits sources");
}

async fn a_svix_id_is_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let insert = "INSERT INTO webhook_events (svix_id, event_type, outcome, received_at) \
                  VALUES ('msg_1', 'user.created', 'applied', '2026-01-01 00:00:00')";

    execute(&app.db, insert).await.expect("first insert");
    assert!(
        execute(&app.db, insert).await.is_err(),
        "the svix id is unique"
    );
}

async fn migrations_are_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;

    app.db
        .migrate()
        .await
        .expect("a second run applies nothing and succeeds");
    assert_eq!(stats(&app.db).await.total(), 0);
}

#[derive(diesel::QueryableByName)]
struct Synchronous {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    synchronous: i32,
}

/// A commit on SQLite (a webhook's batch, an admin's change) is synced to
/// disk before it is answered: `synchronous = FULL` in WAL mode survives a
/// power loss, not only a crash of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_synced_to_disk() {
    let app = spawn_app(Backend::Sqlite).await;

    let pragma: Result<Synchronous, DbError> = with_conn!(app.db, conn => {
        Ok(diesel_async::RunQueryDsl::get_result(
            diesel::sql_query("PRAGMA synchronous"),
            conn,
        )
        .await?)
    });

    assert_eq!(pragma.expect("PRAGMA synchronous").synchronous, 2, "FULL");
}

/// Right before a push is sent, the latest time it may land unrecorded is
/// the database's clock plus the request's timeout (or an earlier push's
/// time, when later), the lease is stretched by the database's clock, and
/// nothing is noted under a claim that is not the sender's.
async fn a_push_is_noted_by_the_databases_clock_under_its_claim(backend: Backend) {
    let app = spawn_app(backend).await;
    set_role(&app.db, "user_n", Role::Admin, true)
        .await
        .expect("created");
    let user = id("user_n");
    let noted: Result<_, DbError> = with_conn!(app.db, conn => {
        let claimed = conn.claim_due_pushes("replica-a", 10_000, 1).await?;
        let version = claimed.first().expect("the push is claimed").version;
        let sending = |earlier_until| Sending {
            roles: RoleSet::from_bits(0).with(Role::Admin),
            earlier_until,
            may_apply_ms: 5_000,
        };
        let before = conn.clock().await?.and_utc().timestamp_millis();
        let by_another = conn
            .note_before_sending(&user, version, "replica-b", sending(None), 60_000)
            .await?;
        let noted = conn
            .note_before_sending(&user, version, "replica-a", sending(None), 60_000)
            .await?;
        let paused = noted.map(|noted| noted.paused_us);
        let noted = noted.map(|noted| noted.now_ms);
        let first = conn.find_outbox_row(&user).await?.expect("an outbox row");
        let later = noted.map(|at| at + 3_600_000);
        conn.note_before_sending(&user, version, "replica-a", sending(later), 60_000)
            .await?;
        let second = conn.find_outbox_row(&user).await?.expect("an outbox row");
        // A 429 elsewhere paused the Clerk budget: the note says so.
        conn.pause_clerk(5_000_000).await?;
        let held = conn
            .note_before_sending(&user, version, "replica-a", sending(later), 60_000)
            .await?
            .map(|noted| noted.paused_us);
        let paused = (paused, held);
        Ok::<_, DbError>((before, by_another, noted, paused, first, second, later))
    });
    let (before, by_another, noted, paused, first, second, later) = noted.expect("noted");
    assert_eq!(by_another, None, "noted under another replica's claim");
    assert!(
        paused.0.is_some_and(|paused| paused <= 0),
        "no pause: {paused:?}"
    );
    assert!(
        paused
            .1
            .is_some_and(|paused| (4_000_000..=5_000_000).contains(&paused)),
        "the pause shows: {paused:?}"
    );
    let at = noted.expect("noted under its own claim");
    assert!(
        (before..before + 5_000).contains(&at),
        "noted at {at}, the database's clock read {before}"
    );
    assert_eq!(first.unrecorded_until, Some(at + 5_000));
    let lease = first
        .claimed_until
        .expect("claimed")
        .and_utc()
        .timestamp_millis();
    assert!(
        (at + 55_000..=at + 60_000).contains(&lease),
        "lease until {lease}, noted at {at}"
    );
    assert_eq!(
        second.unrecorded_until, later,
        "an earlier push's later time stays"
    );
}

/// The Clerk budget's row hands out slots one interval apart, whoever
/// asks, and saves up none while idle; a walk gets a slot only when nobody
/// waits for one; a pause holds every later slot, and each slot taken
/// shows it.
async fn the_clerk_budget_spaces_every_slot_and_a_pause_holds_them_all(backend: Backend) {
    const INTERVAL: i64 = 100_000; // µs
    const HORIZON: i64 = 60_000_000;
    let app = spawn_app(backend).await;
    let checked: Result<(), DbError> = with_conn!(app.db, conn => {
        // Unused so far: the first slot starts at once, and a walk finds
        // no slot free while the next one is still to come.
        let first = conn.take_clerk_slot(INTERVAL, HORIZON).await?;
        assert!(first.wait_us <= 0 && first.paused_us <= 0, "{first:?}");
        let second = conn.take_clerk_slot(INTERVAL, HORIZON).await?.wait_us;
        assert!(0 < second && second <= INTERVAL, "{second}");
        let third = conn.take_clerk_slot(INTERVAL, HORIZON).await?.wait_us;
        assert!(second < third && third <= 2 * INTERVAL, "{third}");
        let busy = conn.take_idle_clerk_slot(INTERVAL).await?;
        assert!(busy.is_some_and(|wait| wait > INTERVAL && wait <= 3 * INTERVAL), "{busy:?}");

        conn.pause_clerk(5_000_000).await?;
        // A shorter pause asked later keeps the longer one.
        conn.pause_clerk(1_000).await?;
        let paused = conn.take_clerk_slot(INTERVAL, HORIZON).await?;
        assert!((4_000_000..=5_000_000).contains(&paused.wait_us), "{paused:?}");
        assert!((4_000_000..=5_000_000).contains(&paused.paused_us), "{paused:?}");
        let walk = conn.take_idle_clerk_slot(INTERVAL).await?;
        assert!(walk.is_some_and(|wait| wait >= 4_000_000), "{walk:?}");
        Ok(())
    });
    checked.expect("the budget's queries");

    // Once nobody waits, a walk takes the slot, and the next push waits
    // one interval after it.
    let app = spawn_app(backend).await;
    let idle: Result<(), DbError> = with_conn!(app.db, conn => {
        assert_eq!(conn.take_idle_clerk_slot(INTERVAL).await?, None);
        let after = conn.take_clerk_slot(INTERVAL, HORIZON).await?.wait_us;
        assert!(0 < after && after <= INTERVAL, "{after}");
        // A next slot far ahead of now (the database's clock stepped back
        // an hour, say) holds the next sender for the horizon at most.
        conn.take_clerk_slot(3_600_000_000, HORIZON).await?;
        let held = conn.take_clerk_slot(INTERVAL, HORIZON).await?.wait_us;
        assert!((HORIZON - 1_000_000..=HORIZON).contains(&held), "{held}");
        Ok(())
    });
    idle.expect("the budget's queries");
}
