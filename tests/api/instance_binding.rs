//! One Clerk instance per database: the instance of the key is recorded at
//! first contact; a key of another instance stops `serve` at start (and the
//! command-line walks) before anything is sent or read; while Clerk cannot
//! say which instance the key is of, pushes and the drift audit wait; a
//! webhook of another instance is refused.

use std::path::Path;
use std::process::{Command, Output};

use clerk_role_sync::app::change_roles;
use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::{Db, DbError};
use clerk_role_sync::domain::{Role, RoleSource};
use clerk_role_sync::jobs::clerk_instance::InstanceGate;
use clerk_role_sync::startup::{Application, clerk_client};
use clerk_role_sync::with_conn;
use serde_json::{Value, json};

use crate::admin_auth::seed;
use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, metric, problem, spawn_app_with, spawn_synced_app, test_config, user_id,
    wait_until,
};
use testkit::clerk_emulator::{self, ClerkEmulator, Delivery};
use testkit::clerk_payloads::user_event;
use testkit::instances::Instance;
use testkit::svix;
use testkit::test_db::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_clerk-role-sync");

both_backends!(
    a_key_of_another_instance_stops_serve_before_anything_is_sent,
    pushes_and_the_audit_wait_until_clerk_confirms_the_instance,
    another_instance_found_in_the_background_keeps_pushes_stopped,
    an_unbound_database_whose_users_are_elsewhere_is_refused_until_rebound,
    an_unbound_database_whose_users_are_there_is_bound_after_ten_lookups,
    a_webhook_of_another_instance_is_refused_and_not_applied,
);

/// The environment of a `serve` process talking to `clerk`.
fn serve_env(test_db: &TestDb, clerk: &ClerkEmulator) -> Vec<(String, String)> {
    let (url, key) = (clerk.url(), clerk.secret_key());
    [
        ("DATABASE_URL", test_db.url.as_str()),
        ("CLERK_API_URL", url.as_str()),
        ("CLERK_SECRET_KEY", key.as_str()),
        ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
        ("CLERK_ISSUER", clerk_emulator::ISSUER),
        ("CLERK_WEBHOOK_SECRET", svix::TEST_SECRET),
        ("CLERK_PUSH_RATE", "200"),
        ("RECONCILE_INTERVAL", "1h"),
        ("DATABASE_MAX_CONNECTIONS", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Points `service` at `clerk` (its URL and its key) for the next start.
fn use_instance(service: &mut Instance, clerk: &ClerkEmulator) {
    service.set_env("CLERK_API_URL", &clerk.url());
    service.set_env("CLERK_SECRET_KEY", &clerk.secret_key());
}

async fn connect(test_db: &TestDb) -> Db {
    let db = Db::connect(&DatabaseUrl::parse(&test_db.url).expect("a URL"), 1)
        .await
        .expect("a pool");
    db.migrate().await.expect("migrations");
    db
}

/// What a refused start must leave as it was: every user with its role and
/// whether it is live, the audit rows, the outbox and the binding.
async fn snapshot(db: &Db) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    use diesel_async::RunQueryDsl as _;
    let lines: Result<Vec<Line>, DbError> = with_conn!(db, conn => {
        Ok(diesel::sql_query(
            "SELECT line FROM ( \
                 SELECT 1 AS part, id || ' ' || role || ' ' || \
                     CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END AS line \
                 FROM users \
                 UNION ALL SELECT 2, 'audit rows ' || CAST(count(*) AS TEXT) FROM role_changes \
                 UNION ALL SELECT 3, 'outbox ' || user_id || ' ' || desired_role || ' ' || \
                     CAST(version AS TEXT) FROM clerk_sync \
                 UNION ALL SELECT 4, 'bound to ' || instance_id FROM clerk_instance \
             ) AS everything ORDER BY part, line",
        )
        .load(conn)
        .await?)
    });
    lines
        .expect("the database answers")
        .into_iter()
        .map(|line| line.line)
        .collect()
}

/// `METHOD path` of every request `clerk` received.
fn asked(clerk: &ClerkEmulator) -> Vec<String> {
    clerk
        .requests()
        .iter()
        .map(|request| format!("{} {}", request.method, request.path))
        .collect()
}

/// `GET /api/admin/sync/status` of a real replica, as the admin `token`.
async fn sync_status(client: &reqwest::Client, service: &Instance, token: &str) -> Value {
    client
        .get(service.url("/api/admin/sync/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("the sync status")
}

fn run_cli(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the command runs")
}

/// Users made here from the command line (`set-role`), as a database from
/// before the binding has them.
async fn users_made_here(db: &Db, users: &[(&str, Role)]) {
    for (id, role) in users {
        let made: Result<_, change_roles::RoleUpdateError> = with_conn!(db, conn => {
            change_roles::set_role(conn, &user_id(id), *role, RoleSource::Cli, Some("cli"), true).await
        });
        made.expect("the user is made");
    }
}

/// A service synced with instance A (users, an admin, roles pushed), started
/// again with instance B's key: it refuses to start, names both instances
/// and the command that rebinds, and neither B nor the database is touched.
/// Started again with A's key, it is as it was.
async fn a_key_of_another_instance_stops_serve_before_anything_is_sent(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let ours = ClerkEmulator::start().await;
    let theirs = ClerkEmulator::start_instance("sk_test_other", "ins_other").await;
    theirs.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    theirs.add_user("user_stranger", Some("ADMIN"));
    theirs.add_user("user_teacher", Some("STUDENT"));
    let log_dir = tempfile::tempdir().expect("a log directory");
    let client = reqwest::Client::new();
    let mut service = Instance::new(
        Path::new(BIN),
        "replica-a",
        &serve_env(&test_db, &ours),
        log_dir.path(),
    );
    service.start(&client).await;
    ours.send_webhooks_to(
        &service.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );
    for (id, role) in [
        ("user_admin", Some("ADMIN")),
        ("user_teacher", Some("INSTRUCTOR")),
        ("user_student", None),
        ("user_assistant", Some("INSTRUCTOR")),
    ] {
        ours.add_user(id, role);
    }
    ours.wait_for_deliveries().await;
    let token = ours.mint_token("user_admin");
    let promoted = client
        .patch(service.url("/api/admin/users/user_student"))
        .bearer_auth(&token)
        .json(&json!({ "role": "INSTRUCTOR" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(promoted.status(), 200);
    wait_until("the promotion is in Clerk", || async {
        ours.role("user_student").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    service.stop().await;
    let db = connect(&test_db).await;
    let before = snapshot(&db).await;
    assert!(
        before.contains(&"bound to ins_emulator".to_owned()),
        "{before:?}"
    );
    assert!(
        before.contains(&"user_student INSTRUCTOR live".to_owned()),
        "{before:?}"
    );

    use_instance(&mut service, &theirs);
    let (status, log) = service.start_expecting_exit(&client).await;

    assert!(!status.success(), "{status}: {log}");
    for named in [
        "ins_emulator",
        "ins_other",
        "clerk-role-sync rebind-instance",
    ] {
        assert!(log.contains(named), "the refusal names {named}:\n{log}");
    }
    assert_eq!(
        asked(&theirs),
        ["GET /v1/instance"],
        "nothing but the instance was asked of the other instance"
    );
    assert_eq!(theirs.role("user_teacher").as_deref(), Some("STUDENT"));
    assert_eq!(snapshot(&db).await, before, "nothing here changed");

    use_instance(&mut service, &ours);
    service.start(&client).await;
    let user: Value = client
        .get(service.url("/api/admin/users/user_student"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("a user");
    assert_eq!(user["role"], "INSTRUCTOR", "{user}");
    let status = sync_status(&client, &service, &token).await;
    assert_eq!(status["clerkInstance"]["state"], "confirmed", "{status}");
    assert_eq!(
        status["clerkInstance"]["boundId"], "ins_emulator",
        "{status}"
    );
    let demoted = client
        .patch(service.url("/api/admin/users/user_assistant"))
        .bearer_auth(&token)
        .json(&json!({ "role": "STUDENT" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(demoted.status(), 200);
    wait_until("the demotion is in Clerk", || async {
        ours.role("user_assistant").as_deref() == Some("STUDENT")
    })
    .await;
    let now = snapshot(&db).await;
    assert!(now.contains(&"user_admin ADMIN live".to_owned()), "{now:?}");
    assert!(
        !now.iter().any(|line| line.starts_with("user_stranger")),
        "{now:?}"
    );
    service.stop().await;
}

/// The service of `spawn_synced_app`, started while Clerk cannot say which
/// instance the key is of.
async fn spawn_while_the_instance_is_down(backend: Backend) -> (TestApp, ClerkEmulator) {
    let clerk = ClerkEmulator::start().await;
    clerk.set_instance_down(true);
    let url = clerk.url();
    let app = spawn_app_with(
        backend,
        &[
            ("CLERK_API_URL", url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
            ("CLERK_ISSUER", clerk_emulator::ISSUER),
            ("CLERK_AUTHORIZED_PARTIES", clerk_emulator::AUTHORIZED_PARTY),
            ("CLERK_PUSH_RATE", "200"),
            ("CLERK_PUSH_RETRY_BASE_MS", "50"),
            ("RECONCILE_INTERVAL", "1h"),
        ],
    )
    .await;
    clerk.send_webhooks_to(
        &app.url("/api/webhooks/clerk"),
        svix::TEST_SECRET,
        Delivery::Immediate,
    );
    (app, clerk)
}

/// `GET /v1/instance` answers 503 at start: the service serves (webhooks,
/// the admin API, a green `/readyz`), but an admin's change is not pushed
/// and the drift audit does not walk until Clerk answers; then both go on.
async fn pushes_and_the_audit_wait_until_clerk_confirms_the_instance(backend: Backend) {
    let (app, clerk) = spawn_while_the_instance_is_down(backend).await;
    seed(
        &app,
        &clerk,
        &[("user_admin", Some("ADMIN")), ("user_waiting", None)],
    )
    .await;
    let token = clerk.mint_token("user_admin");

    let changed = app.patch_role(&token, "user_waiting", "INSTRUCTOR").await;

    assert_eq!(changed.status(), 200);
    let ready: Value = app.get("/readyz").await.json().await.expect("JSON");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["clerkPush"], "waiting_for_instance", "{ready}");
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["clerkInstance"]["state"], "unconfirmed", "{status}");
    assert_eq!(status["clerkInstance"]["boundId"], Value::Null, "{status}");
    assert_eq!(status["inSync"], false, "{status}");
    let page = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        metric(&page, "clerk_role_sync_clerk_instance_confirmed"),
        0.0
    );
    // The service asked again in the background; the worker went round
    // its loop meanwhile.
    wait_until("Clerk was asked again", || async {
        asked(&clerk)
            .iter()
            .filter(|request| *request == "GET /v1/instance")
            .count()
            >= 2
    })
    .await;
    assert!(
        clerk.metadata_patches("user_waiting").is_empty(),
        "nothing is pushed while the instance is unconfirmed"
    );
    assert!(
        !asked(&clerk).contains(&"GET /v1/users".to_owned()),
        "the drift audit does not walk while the instance is unconfirmed"
    );
    assert_eq!(
        app.api_user(&token, "user_waiting").await["sync"]["attempts"],
        0
    );

    clerk.set_instance_down(false);

    wait_until("the push lands once the instance is confirmed", || async {
        clerk.role("user_waiting").as_deref() == Some("INSTRUCTOR")
    })
    .await;
    assert_eq!(clerk.metadata_patches("user_waiting").len(), 1);
    let status = app.get_json(&token, "/api/admin/sync/status").await;
    assert_eq!(status["clerkInstance"]["state"], "confirmed", "{status}");
    assert_eq!(
        status["clerkInstance"]["boundId"], "ins_emulator",
        "{status}"
    );
    assert_eq!(
        status["clerkInstance"]["environmentType"], "development",
        "{status}"
    );
    let page = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        metric(&page, "clerk_role_sync_clerk_instance_confirmed"),
        1.0
    );
    wait_until("the drift audit walks", || async {
        asked(&clerk).contains(&"GET /v1/users".to_owned())
    })
    .await;
    // The binding made in the background is the one webhooks compare with.
    let mut foreign = user_event("user.updated", "user_waiting", i64::MAX / 2, Some("ADMIN"));
    foreign["instance_id"] = json!("ins_other");
    problem(app.post_webhook(&foreign).await, 422).await;
}

/// A database bound to one instance, started with another instance's key
/// while that instance's `GET /v1/instance` fails: the service runs,
/// unconfirmed; once Clerk answers with the other id, pushes stay stopped,
/// and `sync/status` and `/readyz` say why.
async fn another_instance_found_in_the_background_keeps_pushes_stopped(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;
    let ours = ClerkEmulator::start().await;
    let ours_url = ours.url();
    let with_ours = test_config(
        &test_db,
        &[
            ("CLERK_API_URL", ours_url.as_str()),
            ("CLERK_SECRET_KEY", clerk_emulator::SECRET_KEY),
        ],
    );
    let client = clerk_client(&with_ours).expect("a client").expect("a key");
    InstanceGate::confirm(&db, &client)
        .await
        .expect("the database is bound to ours");
    users_made_here(
        &db,
        &[("user_admin", Role::Admin), ("user_member", Role::Student)],
    )
    .await;
    let theirs = ClerkEmulator::start_instance("sk_test_other", "ins_other").await;
    theirs.add_user("user_member", None);
    theirs.set_instance_down(true);
    let theirs_url = theirs.url();
    let config = test_config(
        &test_db,
        &[
            ("CLERK_API_URL", theirs_url.as_str()),
            ("CLERK_SECRET_KEY", "sk_test_other"),
            ("CLERK_JWT_KEY", clerk_emulator::primary_public_pem()),
            ("CLERK_ISSUER", clerk_emulator::ISSUER),
            ("CLERK_PUSH_RETRY_BASE_MS", "50"),
        ],
    );
    let app = Application::build(config)
        .await
        .expect("it starts, unconfirmed");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let token = ours.mint_token("user_admin");
    let changed = http
        .patch(format!("{base}/api/admin/users/user_member"))
        .bearer_auth(&token)
        .json(&json!({ "role": "INSTRUCTOR" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(changed.status(), 200);

    theirs.set_instance_down(false);

    let sync_status = || async {
        http.get(format!("{base}/api/admin/sync/status"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answered")
            .json::<Value>()
            .await
            .expect("the sync status")
    };
    wait_until("the other instance is found", || async {
        sync_status().await["clerkInstance"]["state"] == "mismatch"
    })
    .await;
    let status = sync_status().await;
    assert_eq!(
        status["clerkInstance"]["boundId"], "ins_emulator",
        "{status}"
    );
    assert_eq!(
        status["clerkInstance"]["currentId"], "ins_other",
        "{status}"
    );
    // user_admin's push from the set-up, and user_member's (the admin's
    // change, over its own from the set-up): neither was tried.
    assert_eq!(status["outbox"]["pending"], 2, "{status}");
    let pushes = status["unsettledPushes"].as_array().expect("a list");
    assert!(pushes.iter().all(|push| push["attempts"] == 0), "{status}");
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("JSON");
    assert_eq!(ready["clerkPush"], "other_instance", "{ready}");
    assert!(
        asked(&theirs)
            .iter()
            .all(|request| request == "GET /v1/instance"),
        "nothing but the instance was asked: {:?}",
        asked(&theirs)
    );
    assert_eq!(theirs.role("user_member"), None);
    assert_eq!(
        snapshot(&db)
            .await
            .iter()
            .filter(|line| line.starts_with("bound to"))
            .collect::<Vec<_>>(),
        ["bound to ins_emulator"]
    );
    handle.stop(true).await;
    running.await.expect("joined").expect("served");
}

/// A database from before the binding, whose users are not in the key's
/// instance (1 of 3 is): `serve` refuses, after looking them up (admins
/// first), and points to `rebind-instance`; that binds it, and `serve`
/// starts.
async fn an_unbound_database_whose_users_are_elsewhere_is_refused_until_rebound(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;
    users_made_here(
        &db,
        &[
            ("user_old_1", Role::Student),
            ("user_old_admin", Role::Admin),
            ("user_old_2", Role::Instructor),
        ],
    )
    .await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    clerk.add_user("user_old_2", None);
    let before = snapshot(&db).await;
    let env = serve_env(&test_db, &clerk);
    let log_dir = tempfile::tempdir().expect("a log directory");
    let client = reqwest::Client::new();
    let mut service = Instance::new(Path::new(BIN), "replica-a", &env, log_dir.path());

    let (status, log) = service.start_expecting_exit(&client).await;

    assert!(!status.success(), "{status}: {log}");
    for named in [
        "ins_emulator",
        "1 of the 3",
        "clerk-role-sync rebind-instance",
    ] {
        assert!(log.contains(named), "the refusal says {named}:\n{log}");
    }
    let requests = asked(&clerk);
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(
        requests[..2],
        ["GET /v1/instance", "GET /v1/users/user_old_admin"],
        "admins are looked up first"
    );
    assert_eq!(snapshot(&db).await, before, "nothing here changed");

    let without_key: Vec<(String, String)> = env
        .iter()
        .filter(|(name, _)| name != "CLERK_SECRET_KEY")
        .cloned()
        .collect();
    let refused = run_cli(&["rebind-instance"], &without_key);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CLERK_SECRET_KEY"));

    let rebound = run_cli(&["rebind-instance"], &env);
    let stdout = String::from_utf8_lossy(&rebound.stdout);
    assert!(
        rebound.status.success(),
        "{}",
        String::from_utf8_lossy(&rebound.stderr)
    );
    assert!(
        stdout.contains("bound to Clerk instance ins_emulator"),
        "{stdout}"
    );
    assert!(stdout.contains("not bound before"), "{stdout}");
    service.start(&client).await;
    let token = clerk.mint_token("user_old_admin");
    let status = sync_status(&client, &service, &token).await;
    assert_eq!(status["clerkInstance"]["state"], "confirmed", "{status}");
    assert_eq!(
        status["clerkInstance"]["boundId"], "ins_emulator",
        "{status}"
    );
    service.stop().await;
}

/// A database from before the binding whose users are in the key's
/// instance is bound at start, after at most ten lookups, admins first.
async fn an_unbound_database_whose_users_are_there_is_bound_after_ten_lookups(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;
    let clerk = ClerkEmulator::start().await;
    clerk.send_webhooks_to("http://127.0.0.1:9/", svix::TEST_SECRET, Delivery::Dropped);
    let mut users: Vec<(String, Role)> = (0..10)
        .map(|i| (format!("user_s{i:02}"), Role::Student))
        .collect();
    users.push(("user_a1".into(), Role::Admin));
    users.push(("user_a2".into(), Role::Admin));
    for (id, role) in &users {
        clerk.add_user(id, Some(role.as_str()));
    }
    let users: Vec<(&str, Role)> = users
        .iter()
        .map(|(id, role)| (id.as_str(), *role))
        .collect();
    users_made_here(&db, &users).await;
    let log_dir = tempfile::tempdir().expect("a log directory");
    let client = reqwest::Client::new();
    let mut service = Instance::new(
        Path::new(BIN),
        "replica-a",
        &serve_env(&test_db, &clerk),
        log_dir.path(),
    );

    service.start(&client).await;

    let lookups: Vec<String> = asked(&clerk)
        .into_iter()
        .filter(|request| request.starts_with("GET /v1/users/"))
        .collect();
    assert_eq!(lookups.len(), 10, "{lookups:?}");
    let mut admins = lookups[..2].to_vec();
    admins.sort();
    assert_eq!(admins, ["GET /v1/users/user_a1", "GET /v1/users/user_a2"]);
    assert!(
        snapshot(&db)
            .await
            .contains(&"bound to ins_emulator".to_owned())
    );
    service.stop().await;
}

/// A signed webhook whose envelope names another instance is refused with
/// 422 and counted; the user stays as it was, the message is not recorded
/// (Svix keeps it). Without `instance_id`, or with the bound one, events
/// are applied as always.
async fn a_webhook_of_another_instance_is_refused_and_not_applied(backend: Backend) {
    let (app, clerk) = spawn_synced_app(backend).await;
    seed(&app, &clerk, &[("user_target", Some("STUDENT"))]).await;
    let messages = app.processed_messages().await;
    let mut foreign = user_event("user.updated", "user_target", i64::MAX / 2, Some("ADMIN"));
    foreign["instance_id"] = json!("ins_other");

    let refused = problem(app.post_webhook(&foreign).await, 422).await;

    let detail = refused["detail"].as_str().expect("a detail");
    assert!(detail.contains("ins_other"), "{detail}");
    assert!(detail.contains("ins_emulator"), "{detail}");
    assert!(!detail.contains(clerk_emulator::SECRET_KEY), "{detail}");
    let user = app.user("user_target").await.expect("here");
    assert_eq!(user.role, Role::Student, "not applied");
    assert_eq!(app.processed_messages().await, messages, "not recorded");
    let page = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        metric(
            &page,
            "clerk_role_sync_webhook_refusals_total{reason=\"wrong_instance\"}"
        ),
        1.0
    );

    let mut ours = user_event(
        "user.updated",
        "user_target",
        i64::MAX / 2,
        Some("INSTRUCTOR"),
    );
    ours["instance_id"] = json!(clerk_emulator::INSTANCE_ID);
    assert_eq!(app.post_webhook(&ours).await.status(), 200);
    let unnamed = user_event(
        "user.updated",
        "user_target",
        i64::MAX / 2 + 1,
        Some("ADMIN"),
    );
    assert_eq!(app.post_webhook(&unnamed).await.status(), 200);
    assert_eq!(
        app.user("user_target").await.expect("here").role,
        Role::Admin
    );
}

/// `sk_live_…` with `pk_test_…`: the configuration is refused before
/// anything starts, naming both variables and neither key.
#[test]
fn a_live_secret_key_with_a_test_publishable_key_is_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let output = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("CLERK_SECRET_KEY", "sk_live_do_not_print_me")
        // base64("clerk.example.com$")
        .env("CLERK_PUBLISHABLE_KEY", "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k")
        .output()
        .expect("the binary runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLERK_SECRET_KEY"), "{stderr}");
    assert!(stderr.contains("CLERK_PUBLISHABLE_KEY"), "{stderr}");
    assert!(!stderr.contains("do_not_print_me"), "{stderr}");
    assert!(
        !dir.path().join("clerk-role-sync.db").exists(),
        "refused before the database was opened"
    );
}

/// `backfill` and `reconcile` confirm the instance before they walk: the
/// first binds the database; with another instance's key both stop with
/// the two ids and `rebind-instance`, having asked that instance nothing
/// else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_from_the_command_line_confirm_the_instance_first() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    let ours = ClerkEmulator::start().await;
    ours.add_user("user_ours", Some("INSTRUCTOR"));
    let theirs = ClerkEmulator::start_instance("sk_test_other", "ins_other").await;
    theirs.add_user("user_theirs", Some("ADMIN"));
    let env = |clerk: &ClerkEmulator| -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), test_db.url.clone()),
            ("CLERK_API_URL".into(), clerk.url()),
            ("CLERK_SECRET_KEY".into(), clerk.secret_key()),
        ]
    };
    let backfilled = run_cli(&["backfill"], &env(&ours));
    assert!(
        backfilled.status.success(),
        "{}",
        String::from_utf8_lossy(&backfilled.stderr)
    );

    for walk in [["backfill", "--restart"], ["reconcile", "--fix"]] {
        let refused = run_cli(&walk, &env(&theirs));

        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{walk:?}: {stderr}");
        for named in [
            "ins_emulator",
            "ins_other",
            "clerk-role-sync rebind-instance",
        ] {
            assert!(stderr.contains(named), "{walk:?} names {named}: {stderr}");
        }
    }
    assert!(
        asked(&theirs)
            .iter()
            .all(|request| request == "GET /v1/instance"),
        "{:?}",
        asked(&theirs)
    );
    let db = connect(&test_db).await;
    let lines = snapshot(&db).await;
    assert!(
        lines.contains(&"user_ours INSTRUCTOR live".to_owned()),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line.starts_with("user_theirs")),
        "{lines:?}"
    );
}
