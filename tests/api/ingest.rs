//! Webhook ingest by group commit: a batch applies each message once and
//! each user's events in Clerk's order, one event the database refuses fails
//! alone, events that queue while the writer waits are applied together,
//! batches never deadlock with admin changes and backfill pages, a crash
//! mid-batch loses nothing acknowledged and half-applies nothing, and a
//! batch given up midway leaves no lock behind.

use std::time::Duration;

use clerk_role_sync::app::Outcome;
use clerk_role_sync::app::backfill::{self, BackfillOptions};
use clerk_role_sync::app::webhook_event::{Received, apply_events};
use clerk_role_sync::clerk::ClerkUser;
use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::schema::webhook_events;
use clerk_role_sync::db::{Db, DbError, Queries as _, Store as _};
use clerk_role_sync::domain::ClerkUserId;
use clerk_role_sync::domain::Role;
use clerk_role_sync::webhooks::events;
use clerk_role_sync::with_conn;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{
    Backend, HeldWrites, TestApp, TestDb, assert_counters_match_a_recount, deadlocks, metric,
    outcome, post_signed, spawn_app, spawn_app_with, spawn_synced_app, wait_until,
};
use testkit::clerk_payloads::{deleted_event, user_event};
use testkit::instances::Instance;
use testkit::svix;

both_backends!(
    a_message_twice_in_one_batch_is_applied_once,
    a_users_events_in_one_batch_apply_in_clerks_order,
    a_poison_event_fails_alone_and_its_batch_lands,
    events_that_queue_while_the_writer_waits_are_applied_together,
    a_refused_event_among_queued_ones_is_the_only_503,
    batches_admin_changes_and_backfill_pages_never_deadlock,
    a_crash_mid_batch_loses_nothing_acknowledged_and_half_applies_nothing,
    an_abandoned_batch_leaves_no_lock_behind
);

/// A verified event under `svix_id`, parsed as the webhook parses it.
fn received(svix_id: &str, body: &Value) -> Received {
    let bytes = serde_json::to_vec(body).expect("serializable");
    Received {
        svix_id: svix_id.to_owned(),
        event: events::parse(&bytes).expect("a Clerk event"),
    }
}

/// Applies `events` as one batch, straight through the use-case; each
/// answer as its outcome, or `not stored`.
async fn apply_batch(app: &TestApp, events: &[Received]) -> Vec<&'static str> {
    apply_on(&app.db, events).await
}

/// [`apply_batch`] on a connection of `db`.
async fn apply_on(db: &Db, events: &[Received]) -> Vec<&'static str> {
    let answers: Result<_, DbError> = with_conn!(db, conn => {
        Ok(apply_events(conn, events, 2_000).await)
    });
    answers
        .expect("a connection")
        .into_iter()
        .map(|answer| answer.map_or("not stored", Outcome::as_str))
        .collect()
}

/// Makes the database refuse every write of user `id`, as it would a row it
/// cannot store.
async fn refuse_user(app: &TestApp, backend: Backend, id: &str) {
    app.execute(&match backend {
        Backend::Postgres => format!(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
             IF NEW.id = '{id}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON users \
             FOR EACH ROW EXECUTE FUNCTION refuse();"
        ),
        Backend::Sqlite => format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON users WHEN NEW.id = '{id}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;"
        ),
    })
    .await;
}

async fn a_message_twice_in_one_batch_is_applied_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let twice = user_event("user.created", "user_twice", 1_000, Some("INSTRUCTOR"));
    let other = user_event("user.created", "user_other", 1_000, None);

    let answers = apply_batch(
        &app,
        &[
            received("msg_twice", &twice),
            received("msg_twice", &twice),
            received("msg_other", &other),
            received("msg_twice", &twice),
        ],
    )
    .await;

    assert_eq!(answers, ["applied", "duplicate", "applied", "duplicate"]);
    assert_eq!(app.processed_messages().await, 2);
    assert_eq!(app.audit_trail("user_twice").await, ["none->INSTRUCTOR"]);
    let stats = app.stats().await;
    assert_eq!((stats.students, stats.instructors, stats.admins), (1, 1, 0));
    // In a later batch, both are known.
    let again = apply_batch(
        &app,
        &[received("msg_other", &other), received("msg_twice", &twice)],
    )
    .await;
    assert_eq!(again, ["duplicate", "duplicate"]);
    assert_eq!(app.processed_messages().await, 2);
    assert_counters_match_a_recount(&app.db).await;
}

async fn a_users_events_in_one_batch_apply_in_clerks_order(backend: Backend) {
    let app = spawn_app(backend).await;

    // Received newest first; a deletion before the creation it follows.
    let answers = apply_batch(
        &app,
        &[
            received(
                "msg_3",
                &user_event("user.updated", "user_x", 3_000, Some("ADMIN")),
            ),
            received("msg_1", &user_event("user.created", "user_x", 1_000, None)),
            received(
                "msg_2",
                &user_event("user.updated", "user_x", 2_000, Some("INSTRUCTOR")),
            ),
            received("msg_gone", &deleted_event("user_y")),
            received(
                "msg_born",
                &user_event("user.created", "user_y", 1_000, Some("ADMIN")),
            ),
        ],
    )
    .await;

    // As Clerk made them: each state applied, the deletion last.
    assert_eq!(
        answers,
        ["applied", "applied", "applied", "deleted", "applied"]
    );
    let x = app.user("user_x").await.expect("created");
    assert_eq!((x.role, x.clerk_updated_at), (Role::Admin, Some(3_000)));
    assert_eq!(
        app.audit_trail("user_x").await,
        ["none->STUDENT", "STUDENT->INSTRUCTOR", "INSTRUCTOR->ADMIN"]
    );
    let y = app.user("user_y").await.expect("a tombstone");
    assert!(y.deleted_at.is_some());
    assert_eq!(
        app.audit_trail("user_y").await,
        ["none->ADMIN", "ADMIN->none"]
    );
    let stats = app.stats().await;
    assert_eq!((stats.students, stats.instructors, stats.admins), (0, 0, 1));

    // An older state in a later batch changes nothing; the tombstone stays.
    let later = apply_batch(
        &app,
        &[
            received(
                "msg_old",
                &user_event("user.updated", "user_x", 2_500, Some("STUDENT")),
            ),
            received(
                "msg_back",
                &user_event("user.updated", "user_y", 5_000, Some("STUDENT")),
            ),
        ],
    )
    .await;
    assert_eq!(later, ["stale", "user_deleted"]);
    assert_eq!(app.user("user_x").await.expect("kept").role, Role::Admin);
    assert_counters_match_a_recount(&app.db).await;
}

async fn a_poison_event_fails_alone_and_its_batch_lands(backend: Backend) {
    let app = spawn_app(backend).await;
    let seeded = apply_batch(
        &app,
        &[received(
            "msg_seed",
            &user_event("user.created", "user_kept", 1_000, None),
        )],
    )
    .await;
    assert_eq!(seeded, ["applied"]);
    refuse_user(&app, backend, "user_poison").await;
    let poison = user_event("user.created", "user_poison", 1_000, Some("ADMIN"));

    let answers = apply_batch(
        &app,
        &[
            received(
                "msg_good",
                &user_event("user.created", "user_good", 1_000, Some("INSTRUCTOR")),
            ),
            received("msg_poison", &poison),
            received(
                "msg_other",
                &json!({"type": "session.created", "data": {"id": "sess_1"}}),
            ),
            received(
                "msg_promote",
                &user_event("user.updated", "user_kept", 2_000, Some("ADMIN")),
            ),
        ],
    )
    .await;

    assert_eq!(answers, ["applied", "not stored", "ignored", "applied"]);
    assert!(app.user("user_poison").await.is_none());
    assert_eq!(
        app.message_outcome("msg_poison").await,
        None,
        "unrecorded: Svix's retry applies it"
    );
    assert_eq!(app.processed_messages().await, 4);
    assert_eq!(
        app.user("user_good").await.expect("landed").role,
        Role::Instructor
    );
    assert_eq!(
        app.user("user_kept").await.expect("landed").role,
        Role::Admin
    );
    assert_counters_match_a_recount(&app.db).await;

    // Once the database takes it, the retry applies it.
    app.execute(match backend {
        Backend::Postgres => "DROP TRIGGER refuse ON users",
        Backend::Sqlite => "DROP TRIGGER refuse",
    })
    .await;
    let retried = apply_batch(&app, &[received("msg_poison", &poison)]).await;
    assert_eq!(retried, ["applied"]);
    assert_counters_match_a_recount(&app.db).await;
}

/// The service's `/metrics` page.
async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.expect("a page")
}

/// Posts each `(svix id, body)` to webhook endpoint `url` at once, each
/// signed now; returns the requests in flight, in order.
fn post_all(
    client: &reqwest::Client,
    url: &str,
    messages: &[(String, Value)],
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    messages
        .iter()
        .map(|(id, body)| {
            let (client, url) = (client.clone(), url.to_owned());
            let (id, body) = (id.clone(), body.clone());
            tokio::spawn(async move { post_signed(&client, &url, &id, &body).await })
        })
        .collect()
}

/// Holds the writer, posts `messages` at once, waits until every one of
/// them waits for its transaction, releases the writer and returns the
/// answers, in order, with how many batches and events the writers applied
/// meanwhile.
async fn post_while_held(
    app: &TestApp,
    messages: &[(String, Value)],
) -> (Vec<reqwest::Response>, f64, f64) {
    let before = metrics(app).await;
    let held = HeldWrites::take(&app.db).await;
    let sent = post_all(&app.client, &app.url("/api/webhooks/clerk"), messages);
    let waiting = messages.len() as f64;
    wait_until("every event waits for its transaction", || async {
        metric(&metrics(app).await, "clerk_role_sync_ingest_pending") == waiting
    })
    .await;
    held.release().await;
    let mut answers = Vec::new();
    for request in sent {
        answers.push(request.await.expect("joined").expect("answered"));
    }
    let after = metrics(app).await;
    let grew = |name| metric(&after, name) - metric(&before, name);
    (
        answers,
        grew("clerk_role_sync_ingest_batch_size_count"),
        grew("clerk_role_sync_ingest_batch_size_sum"),
    )
}

async fn events_that_queue_while_the_writer_waits_are_applied_together(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut messages: Vec<(String, Value)> = (0..12)
        .map(|i| {
            let id = format!("user_q{i:02}");
            (
                format!("msg_q{i:02}"),
                user_event("user.created", &id, 1_000, None),
            )
        })
        .collect();
    // The same message twice, and one user's two states newest first.
    messages.push(messages[3].clone());
    messages.push((
        "msg_z2".into(),
        user_event("user.updated", "user_z", 2_000, Some("ADMIN")),
    ));
    messages.push((
        "msg_z1".into(),
        user_event("user.created", "user_z", 1_000, Some("INSTRUCTOR")),
    ));

    let (answers, batches, applied) = post_while_held(&app, &messages).await;

    // Each writer's first batch waited behind the held lock (two writers on
    // PostgreSQL, one on SQLite); everything that arrived meanwhile made one
    // more batch.
    let writers = if backend == Backend::Postgres {
        2.0
    } else {
        1.0
    };
    assert!(
        (1.0..=writers + 1.0).contains(&batches),
        "{batches} batches for {} events",
        messages.len()
    );
    assert_eq!(applied, messages.len() as f64);
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(outcome(answer).await);
    }
    let duplicates = [&outcomes[3], &outcomes[12]];
    assert!(
        duplicates.contains(&&"applied".to_owned())
            && duplicates.contains(&&"duplicate".to_owned()),
        "{outcomes:?}"
    );
    assert_eq!(app.processed_messages().await, 14);
    // However the two states were split between batches, the newest wins
    // and the audit tells how it got there.
    let z = app.user("user_z").await.expect("created");
    assert_eq!((z.role, z.clerk_updated_at), (Role::Admin, Some(2_000)));
    let z_audit = app.audit_trail("user_z").await;
    assert!(
        z_audit == ["none->INSTRUCTOR", "INSTRUCTOR->ADMIN"] || z_audit == ["none->ADMIN"],
        "{z_audit:?}"
    );
    let stats = app.stats().await;
    assert_eq!(
        (stats.students, stats.instructors, stats.admins),
        (12, 0, 1)
    );
    assert_counters_match_a_recount(&app.db).await;
}

async fn a_refused_event_among_queued_ones_is_the_only_503(backend: Backend) {
    let app = spawn_app(backend).await;
    refuse_user(&app, backend, "user_poison").await;
    let messages: Vec<(String, Value)> = ["user_a", "user_poison", "user_b", "user_c"]
        .into_iter()
        .map(|id| {
            (
                format!("msg_{id}"),
                user_event("user.created", id, 1_000, None),
            )
        })
        .collect();

    let (answers, _, _) = post_while_held(&app, &messages).await;

    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(statuses, [200, 503, 200, 200]);
    for id in ["user_a", "user_b", "user_c"] {
        assert!(app.user(id).await.is_some(), "{id} landed");
    }
    assert!(app.user("user_poison").await.is_none());
    assert_eq!(app.processed_messages().await, 3);
    assert_counters_match_a_recount(&app.db).await;
}

const ROLES: [&str; 3] = ["STUDENT", "INSTRUCTOR", "ADMIN"];

async fn batches_admin_changes_and_backfill_pages_never_deadlock(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    let users: Vec<String> = (0..30).map(|i| format!("user_d{i:02}")).collect();
    clerk.add_user("user_boss", Some("ADMIN"));
    for (i, id) in users.iter().enumerate() {
        clerk.add_user(id, Some(ROLES[i % 3]));
    }
    clerk.wait_for_deliveries().await;
    let token = clerk.mint_token("user_boss");
    let deadlocks_before = match backend {
        Backend::Postgres => deadlocks(&app.db).await,
        Backend::Sqlite => 0,
    };
    // Clerk time for the events sent here, later than any state so far.
    let clock = std::sync::atomic::AtomicI64::new(chrono::Utc::now().timestamp_millis() + 60_000);
    let tick = || clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // Webhooks: many senders, so that the writers apply them in batches.
    let webhooks = async {
        let mut statuses = Vec::new();
        for round in 0..6_u64 {
            let mut rng = StdRng::seed_from_u64(round);
            let messages: Vec<(String, Value)> = (0..32)
                .map(|i| {
                    let id = users.choose(&mut rng).expect("users");
                    let role = ROLES.choose(&mut rng).copied();
                    (
                        format!("msg_r{round}_{i}"),
                        user_event("user.updated", id, tick(), role),
                    )
                })
                .collect();
            for request in post_all(&app.client, &app.url("/api/webhooks/clerk"), &messages) {
                statuses.push(request.await.expect("joined").expect("answered").status());
            }
        }
        statuses
    };
    // Admins: bulk changes of users in random order, demotions included.
    let admin = async {
        let mut statuses = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..12 {
            let mut chosen: Vec<&String> = users.choose_multiple(&mut rng, 8).collect();
            chosen.shuffle(&mut rng);
            let changes: Vec<Value> = chosen
                .iter()
                .map(|id| json!({"userId": id, "role": ROLES.choose(&mut rng)}))
                .collect();
            let response = app.post_role_changes(&token, Value::from(changes)).await;
            statuses.push(response.status());
        }
        statuses
    };
    // A backfill: pages in Clerk's order (newest first), not by id.
    let pages = async {
        let mut rng = StdRng::seed_from_u64(11);
        let mut results = Vec::new();
        for _ in 0..8 {
            let mut page: Vec<ClerkUser> = users
                .choose_multiple(&mut rng, 12)
                .map(|id| {
                    let role = ROLES.choose(&mut rng).copied();
                    let event = user_event("user.updated", id, tick(), role);
                    serde_json::from_value(event["data"].clone()).expect("a Clerk user")
                })
                .collect();
            page.sort_by(|a, b| b.id.cmp(&a.id));
            results.push(apply_page(&app.db, &page).await);
        }
        results
    };
    let (webhooks, admin, pages) = tokio::join!(webhooks, admin, pages);

    assert!(webhooks.iter().all(|s| *s == 200), "{webhooks:?}");
    assert!(admin.iter().all(|s| *s == 200), "{admin:?}");
    for result in pages {
        result.expect("every backfill page is stored");
    }
    if backend == Backend::Postgres {
        assert_eq!(deadlocks(&app.db).await, deadlocks_before, "a deadlock");
    }
    assert_counters_match_a_recount(&app.db).await;
}

/// One backfill page, as `backfill` applies it.
async fn apply_page(db: &Db, page: &[ClerkUser]) -> Result<(), DbError> {
    with_conn!(db, conn => {
        let progress = backfill::resume_or_start(conn).await?;
        backfill::apply_page(conn, page, BackfillOptions::default(), &progress).await?;
        Ok(())
    })
}

async fn a_crash_mid_batch_loses_nothing_acknowledged_and_half_applies_nothing(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let log_dir = tempfile::tempdir().expect("a log folder");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        // The batch waits on the held row until the service is killed.
        ("DATABASE_LOCK_TIMEOUT_MS", "60000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_clerk-role-sync"));
    let client = reqwest::Client::new();
    let mut service = Instance::new(binary, "crash", &env, log_dir.path());
    service.start(&client).await;
    let url = DatabaseUrl::parse(&test_db.url).expect("a database URL");
    let db = Db::connect(&url, 2).await.expect("a connection");
    let event = |i: usize| {
        let id = format!("user_c{i:03}");
        let role = ROLES[i % 3];
        (
            format!("msg_c{i:03}"),
            user_event("user.created", &id, 1_000, Some(role)),
        )
    };
    // The same port across the restart.
    let webhook_url = service.url("/api/webhooks/clerk");
    let metrics_url = service.url("/metrics");
    let send = |messages: Vec<(String, Value)>| {
        let requests = post_all(&client, &webhook_url, &messages);
        async move {
            let mut statuses = Vec::new();
            for request in requests {
                let answer = request.await.expect("joined");
                statuses.push(answer.map(|response| response.status().as_u16()));
            }
            statuses
        }
    };
    // Acknowledged before the crash.
    for status in send((0..60).map(event).collect()).await {
        assert_eq!(status.expect("answered"), 200);
    }
    // Batches cut off mid-way, before their commit: each has begun and
    // waits for a user's row (PostgreSQL, both writers) or the write lock
    // (SQLite, its one writer), events queued behind them. (Once a batch's
    // COMMIT has gone out, with its writes, the batch lands whole even if
    // the service dies before it answers: Svix's retry then finds it
    // recorded.)
    let pending = |count: f64| {
        let (client, metrics_url) = (&client, &metrics_url);
        wait_until("the events wait for the held lock", move || async move {
            let page = client.get(metrics_url).send().await;
            let page = page.expect("scraped").text().await.expect("a page");
            metric(&page, "clerk_role_sync_ingest_pending") == count
        })
    };
    let held = HeldWrites::take_user(&db, "user_c000").await;
    let edit = |svix_id: &str| {
        let state = user_event("user.updated", "user_c000", 2_000, Some(ROLES[1]));
        (svix_id.to_owned(), state)
    };
    let edits = [edit("msg_c000_edit"), edit("msg_c000_edit2")];
    // On PostgreSQL each of the two writers takes an edit and waits for the
    // row: both are busy before the other events come.
    let writers_waiting = |count: i64| {
        let db = &db;
        wait_until("the writers wait for the held row", move || async move {
            backend == Backend::Sqlite || waiting_for_locks(db).await == count
        })
    };
    let first = tokio::spawn(send(vec![edits[0].clone()]));
    pending(1.0).await;
    writers_waiting(1).await;
    let second = tokio::spawn(send(vec![edits[1].clone()]));
    pending(2.0).await;
    writers_waiting(2).await;
    let cut_off = tokio::spawn(send((60..80).map(event).collect()));
    pending(22.0).await;
    service.kill();
    held.release().await;
    for answer in [first, second, cut_off] {
        for answer in answer.await.expect("joined") {
            assert!(answer.is_err(), "no answer from a killed service");
        }
    }

    assert_eq!(
        role_of(&db, "user_c000").await,
        ROLES[0],
        "edit never acknowledged"
    );
    for (svix_id, _) in &edits {
        assert!(!message_recorded(&db, svix_id).await);
    }
    for i in 0..80 {
        let (svix_id, _) = event(i);
        let id = format!("user_c{i:03}");
        let stored = (
            find_user(&db, &id).await,
            message_recorded(&db, &svix_id).await,
        );
        if i < 60 {
            assert_eq!(stored, (true, true), "{id} was acknowledged");
        } else {
            assert_eq!(stored, (false, false), "{id} was never acknowledged");
        }
    }
    assert_counters_match_a_recount(&db).await;

    // Svix delivers again whatever it was not told: the cut-off batch
    // lands, the rest are duplicates.
    // (Fewer at once than the webhook bodies buffered at once.)
    service.start(&client).await;
    let mut outcomes = Vec::new();
    for chunk in [0..40, 40..80] {
        for status in send(chunk.map(event).collect()).await {
            outcomes.push(status.expect("answered"));
        }
    }
    for status in send(edits.to_vec()).await {
        outcomes.push(status.expect("answered"));
    }
    assert!(outcomes.iter().all(|status| *status == 200), "{outcomes:?}");
    for i in 0..80 {
        assert!(find_user(&db, &format!("user_c{i:03}")).await);
    }
    assert_eq!(role_of(&db, "user_c000").await, ROLES[1]);
    assert_counters_match_a_recount(&db).await;
    service.stop().await;
}

/// Whether user `id` exists (deleted or not).
async fn find_user(db: &Db, id: &str) -> bool {
    let id = ClerkUserId::parse(id).expect("a user id");
    let found: Result<_, DbError> = with_conn!(db, conn => Ok(conn.find_user(&id).await?));
    found.expect("query users").is_some()
}

/// User `id`'s role.
async fn role_of(db: &Db, id: &str) -> &'static str {
    let id = ClerkUserId::parse(id).expect("a user id");
    let found: Result<_, DbError> = with_conn!(db, conn => Ok(conn.find_user(&id).await?));
    found.expect("query users").expect("a user").role.as_str()
}

/// Whether Svix message `svix_id` is recorded as processed.
async fn message_recorded(db: &Db, svix_id: &str) -> bool {
    use diesel::{ExpressionMethods as _, QueryDsl as _};
    use diesel_async::RunQueryDsl as _;
    let count: Result<i64, DbError> = with_conn!(db, conn => {
        Ok(webhook_events::table
            .filter(webhook_events::svix_id.eq(svix_id))
            .count()
            .get_result(conn)
            .await?)
    });
    count.expect("query webhook_events") == 1
}

/// How many of the test database's sessions wait for a lock (PostgreSQL).
async fn waiting_for_locks(db: &Db) -> i64 {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl as _;
    let waiting: Result<i64, DbError> = with_conn!(db, conn => {
        Ok(diesel::select(sql::<BigInt>(
            "(SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock')",
        ))
        .get_result(conn)
        .await?)
    });
    waiting.expect("query pg_stat_activity")
}

/// One user's row held locked by another session (a long admin
/// transaction, an operator's psql) delays only that user's events: the
/// other users' events answer and apply while it is still held, the locked
/// user's answers 503, and Svix's redelivery after the release applies it.
/// (PostgreSQL: SQLite has no row locks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_locked_row_stalls_no_other_user() {
    let app = spawn_app_with(Backend::Postgres, &[("DATABASE_LOCK_TIMEOUT_MS", "1000")]).await;
    let id = |i: usize| format!("user_l{i}");
    for i in 0..7 {
        let created = user_event("user.created", &id(i), 1_000, None);
        assert_eq!(app.post_webhook(&created).await.status(), 200);
    }
    let edit = |i: usize| {
        let event = user_event("user.updated", &id(i), 2_000, Some("INSTRUCTOR"));
        (format!("msg_edit_{i}"), event)
    };

    let held = HeldWrites::take_user(&app.db, &id(0)).await;
    let edits: Vec<(String, Value)> = (0..7).map(edit).collect();
    let sent = post_all(&app.client, &app.url("/api/webhooks/clerk"), &edits);
    let mut statuses = Vec::new();
    for request in sent {
        let answer = request.await.expect("joined").expect("answered");
        statuses.push(answer.status().as_u16());
    }
    // Answered, every one, while the row is still held.
    assert_eq!(statuses, [503, 200, 200, 200, 200, 200, 200]);
    for i in 1..7 {
        let user = app.user(&id(i)).await.expect("here");
        assert_eq!(user.role, Role::Instructor, "{}", id(i));
    }
    let locked = app.user(&id(0)).await.expect("here");
    assert_eq!(locked.role, Role::Student, "nothing applied under the lock");
    assert_eq!(app.message_outcome("msg_edit_0").await, None);

    held.release().await;
    let (svix_id, event) = edit(0);
    let redelivered = app.post_webhook_as(&svix_id, &event).await;
    assert_eq!(outcome(redelivered).await, "applied");
    assert_eq!(app.user(&id(0)).await.expect("here").role, Role::Instructor);
    assert_counters_match_a_recount(&app.db).await;
}

/// Two replicas' batches holding the same messages, written at once: the
/// second finds neither recorded (the first has not committed), waits on
/// the first's rows, then fails on them, rolls back and runs again.
/// (PostgreSQL: on SQLite one writer at a time holds the database.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_batches_of_the_same_messages_apply_each_once() {
    let app = spawn_app(Backend::Postgres).await;
    let url = DatabaseUrl::parse(&app.test_db.url).expect("a database URL");
    let replica = || async {
        let lock_timeout = Duration::from_secs(60);
        let db = Db::connect_with(&url, 1, lock_timeout).await;
        db.expect("a connection")
    };
    let (first, second) = (replica().await, replica().await);
    let batch = [
        received(
            "msg_session",
            &json!({"type": "session.created", "data": {"id": "sess_1"}}),
        ),
        received(
            "msg_new",
            &user_event("user.created", "user_new", 1_000, Some("ADMIN")),
        ),
    ];

    // The first writes its rows, then waits for the counters.
    let held = HeldWrites::take(&app.db).await;
    let first = apply_on(&first, &batch);
    tokio::pin!(first);
    let second = apply_on(&second, &batch);
    tokio::pin!(second);
    let both_wait = async {
        wait_until("the first batch waits for the counters", || async {
            waiting_for_locks(&app.db).await == 1
        })
        .await;
        let mut second = second.as_mut();
        tokio::select! {
            answers = &mut second => panic!("the second batch did not wait: {answers:?}"),
            () = wait_until("the second batch waits for the first", || async {
                waiting_for_locks(&app.db).await == 2
            }) => {}
        }
    };
    tokio::select! {
        answers = &mut first => panic!("the first batch did not wait: {answers:?}"),
        () = both_wait => {}
    }
    held.release().await;
    let (first, second) = tokio::join!(first, second);

    assert_eq!(first, ["ignored", "applied"]);
    assert_eq!(second, ["duplicate", "duplicate"]);
    assert_eq!(app.processed_messages().await, 2);
    assert_eq!(app.audit_trail("user_new").await, ["none->ADMIN"]);
    assert_counters_match_a_recount(&app.db).await;
}

/// A batch given up after it locked its users and before it wrote (as when
/// the writer's task stops midway): the pool closes its connection the next
/// time it is asked for one, so the locks go with it; handed out again in
/// its transaction, it would keep them.
async fn an_abandoned_batch_leaves_no_lock_behind(backend: Backend) {
    let app = spawn_app(backend).await;
    let seeded = apply_batch(
        &app,
        &[received(
            "msg_seed",
            &user_event("user.created", "user_a", 1_000, None),
        )],
    )
    .await;
    assert_eq!(seeded, ["applied"]);
    // One connection: the abandoned one is the one asked for next.
    let url = DatabaseUrl::parse(&app.test_db.url).expect("a database URL");
    let db = Db::connect(&url, 1).await.expect("a connection");
    let id = ClerkUserId::parse("user_a").expect("a user id");

    let locked: Result<usize, DbError> = with_conn!(db, conn => {
        let locked = conn
            .begin_locking_users(std::slice::from_ref(&id), &["msg_abandoned"])
            .await?;
        Ok(locked.users.len())
    });
    assert_eq!(locked.expect("begun"), 1);

    // The connection was closed as the batch was left, not when the pool
    // next hands it out (nothing asks for one before this): the service's
    // own writers can lock the user at once (within SQLite's busy timeout;
    // PostgreSQL would wait on the abandoned transaction's lock).
    let promoted = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        apply_batch(
            &app,
            &[received(
                "msg_promote",
                &user_event("user.updated", "user_a", 2_000, Some("ADMIN")),
            )],
        ),
    )
    .await
    .expect("the user is not locked any more");
    assert_eq!(promoted, ["applied"]);
    assert_eq!(app.user("user_a").await.expect("kept").role, Role::Admin);
    assert!(find_user(&db, "user_a").await, "a connection again");
    assert_counters_match_a_recount(&app.db).await;
}
