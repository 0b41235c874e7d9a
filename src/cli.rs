//! The command line: `clerk-role-sync [serve|migrate|openapi|env-example|set-role|backfill|reconcile|rebind-instance]`.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

use crate::app::backfill::{BackfillOptions, Prefer};
use crate::app::change_roles::{self, RoleUpdate};
use crate::app::clerk_instance;
use crate::app::drift_audit::{self, RunMode};
use crate::clerk::ClerkClient;
use crate::config::{self, Config};
use crate::db::Db;
use crate::db::rows::DriftAuditRow;
use crate::domain::{ClerkUserId, Role, RoleSource};
use crate::jobs::clerk_instance::{InstanceGate, InstanceState, confirm_or_refuse};
use crate::jobs::drift_audit::{AuditSettings, DriftAudit};
use crate::jobs::walk_lease::WalkLease;
use crate::jobs::{ClerkBudget, allowance_ms, backfill};
use crate::metrics::Metrics;
use crate::startup::{self, Application};
use crate::{openapi, telemetry, with_conn};

#[derive(Debug, Parser)]
#[command(
    name = "clerk-role-sync",
    version,
    about = "Keeps each user's role identical in our database and in Clerk.",
    long_about = "Keeps each user's role (STUDENT, INSTRUCTOR, ADMIN) identical in our \
                  database and in Clerk's public_metadata.role, in both directions.\n\n\
                  Configuration comes from the environment and from .env; see the README.",
    after_help = config::environment_help(),
    // clap's own `help` subcommand refuses `help --help`; ours (below) is a
    // command like the others.
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    #[command(after_help = config::environment_help())]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (YAML) to stdout.
    Openapi,
    /// Print `.env.example` (every variable, what it takes, its default or an example) to stdout.
    EnvExample,
    /// Bring every existing Clerk user in (resumable; paced under Clerk's limits).
    Backfill {
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Queue a push of STUDENT to Clerk for users whose metadata has no role.
        #[arg(long)]
        write_defaults: bool,
        /// Whose role wins when both sides have one and they differ.
        #[arg(long, value_enum, default_value_t = Side::Clerk)]
        prefer: Side,
        /// Start over instead of resuming an interrupted run.
        #[arg(long)]
        restart: bool,
        /// Requests per second to Clerk at most, out of what the service's
        /// pushes leave of CLERK_PUSH_RATE (and never more than
        /// RECONCILE_RATE_SHARE of it).
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
    },
    /// Run the drift audit now: compare every user here with Clerk and
    /// report the drift (exit 1 when there is some); --fix repairs it.
    Reconcile {
        /// Repair the drift by the --prefer policy.
        #[arg(long)]
        fix: bool,
        /// Whose role wins when both sides have one and they differ.
        #[arg(long, value_enum, default_value_t = Side::Clerk)]
        prefer: Side,
        /// Deletions and ADMIN demotions this run may make (default:
        /// RECONCILE_MAX_DELETIONS); a run that finds more makes none.
        #[arg(long, requires = "fix", value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        max_deletions: Option<i64>,
        /// Requests per second to Clerk at most, out of what the service's
        /// pushes leave of CLERK_PUSH_RATE (and never more than
        /// RECONCILE_RATE_SHARE of it).
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
    },
    /// Set a user's role, e.g. to make the first admin.
    SetRole {
        /// The Clerk user id (user_…).
        user_id: String,
        /// STUDENT, INSTRUCTOR or ADMIN.
        role: String,
    },
    /// Bind the database to the Clerk instance of CLERK_SECRET_KEY, after a
    /// deliberate move to another instance.
    RebindInstance,
    /// Print this message or the help of the given subcommand(s).
    Help {
        /// The subcommand(s) to print the help of.
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// Whose role wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Side {
    Clerk,
    Db,
}

impl From<Side> for Prefer {
    fn from(side: Side) -> Self {
        match side {
            Side::Clerk => Prefer::Clerk,
            Side::Db => Prefer::Db,
        }
    }
}

/// `reconcile` found drift it did not repair.
const DRIFT_REMAINS: u8 = 1;
/// Any command failed (as clap does for a bad command line).
const FAILED: u8 = 2;

/// Parses the command line and runs the command; errors are printed, not
/// panicked. Exit codes: 0 done (in sync), 1 drift remains (`reconcile`),
/// 2 an error, like `diff`.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command.unwrap_or(Command::Serve)).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(FAILED)
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Openapi => {
            print!("{}", openapi::yaml()?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::EnvExample => {
            print!("{}", config::env_example());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Help { command } => help(command),
        _ => {}
    }
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match command {
        Command::Serve => serve(config).await?,
        Command::Migrate => {
            startup::connect(&config).await?.migrate().await?;
            eprintln!("migrations applied");
        }
        Command::SetRole { user_id, role } => set_role(config, &user_id, &role).await?,
        Command::RebindInstance => rebind_instance(&config).await?,
        Command::Backfill {
            dry_run,
            write_defaults,
            prefer,
            restart,
            rate,
        } => {
            let (db, client, _) = clerk_tools(&config).await?;
            let options = BackfillOptions {
                prefer: prefer.into(),
                write_defaults,
                dry_run,
                allowance_ms: allowance_ms(config.clerk.push.clock_skew_allowance),
            };
            let budget = ClerkBudget::for_walks(
                db.clone(),
                config.clerk.push.rate_per_sec,
                walk_rate(&config, rate),
            );
            let backfill = backfill::run(&db, &client, options, &budget, restart);
            let progress = if dry_run {
                backfill.await?
            } else {
                walking(&db, &format!("backfill@{}", config.replica_id), backfill).await?
            };
            println!("{}", backfill::summary(&progress, dry_run));
        }
        Command::Reconcile {
            fix,
            prefer,
            max_deletions,
            rate,
        } => {
            let mode = if fix {
                RunMode::Fix(prefer.into())
            } else {
                RunMode::Report
            };
            let max_deletions = max_deletions.unwrap_or(config.drift_audit.max_deletions);
            return reconcile(&config, mode, max_deletions, rate).await;
        }
        Command::Openapi | Command::EnvExample | Command::Help { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `help [COMMAND]…`: prints what `[COMMAND]… --help` prints and exits 0;
/// an unknown command is an error (exit 2), as clap reports it.
fn help(command: Vec<String>) -> ! {
    let program = std::env::args_os()
        .next()
        .unwrap_or_else(|| "clerk-role-sync".into());
    let args = std::iter::once(program)
        .chain(command.into_iter().map(Into::into))
        .chain(["--help".into()]);
    match Cli::command().try_get_matches_from(args) {
        // `--help` always ends the parse with the help as its "error".
        Err(help) => help.exit(),
        Ok(_) => std::process::exit(0),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config.clone()).await?;
    tracing::info!(
        address = %config.bind_addr,
        port = app.port(),
        "listening; Swagger UI at /swagger-ui/"
    );
    let handle = app.handle();
    let (signalled, stop_asked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = signalled.send(());
        handle.stop(true).await;
    });
    let serving = app.run_until_stopped();
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => return served.context("serving HTTP"),
        _ = stop_asked => {}
    }
    match tokio::time::timeout(startup::STOP_DEADLINE, serving).await {
        Ok(served) => {
            tracing::info!("stopped");
            served.context("serving HTTP")
        }
        Err(_) => anyhow::bail!(
            "the stop took longer than {} s: exiting with work unfinished",
            startup::STOP_DEADLINE.as_secs()
        ),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (container stop).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// `reconcile`: one drift audit run of `mode`, its findings printed as it
/// goes; exit 1 while drift remains.
async fn reconcile(
    config: &Config,
    mode: RunMode,
    max_deletions: i64,
    rate: f64,
) -> anyhow::Result<ExitCode> {
    let (db, client, instance) = clerk_tools(config).await?;
    let allowance = allowance_ms(config.clerk.push.clock_skew_allowance);
    let interval = config.drift_audit.interval.unwrap_or_default();
    let settings = AuditSettings {
        rate_per_sec: walk_rate(config, rate),
        ..startup::audit_settings(config, interval, allowance)
    };
    let owner = format!("reconcile@{}", config.replica_id);
    let metrics = Arc::new(Metrics::new());
    let audit = DriftAudit::new(db.clone(), client, owner, settings, metrics, instance);
    let run = audit.printing().run_fresh(mode, max_deletions).await?;
    let found = run.found_missing_here
        + run.found_role_differs
        + run.found_outdated
        + run.found_missing_in_clerk;
    println!(
        "checked {} users: {found} drifted, {} fixed",
        run.checked, run.repaired
    );
    if let Some(waiting) = &run.waiting {
        println!("nothing was deleted or demoted: {waiting}");
        match print_held(&db, &run).await? {
            0 => println!(
                "if Clerk's list is right, run: clerk-role-sync reconcile --fix \
                 --max-deletions N, with N at least the number of users it did not show"
            ),
            held => println!(
                "review them, then run: clerk-role-sync reconcile --fix --max-deletions {held}"
            ),
        }
    }
    match found - run.repaired {
        // A run that stopped before its end checked less than it should.
        0 if run.waiting.is_some() => Ok(ExitCode::from(DRIFT_REMAINS)),
        0 => Ok(ExitCode::SUCCESS),
        n => {
            eprintln!("{n} users still differ (run with --fix to repair)");
            Ok(ExitCode::from(DRIFT_REMAINS))
        }
    }
}

/// Lists every change `run` held back, a page at a time; how many.
async fn print_held(db: &Db, run: &DriftAuditRow) -> anyhow::Result<i64> {
    let mut after: Option<ClerkUserId> = None;
    let mut count = 0;
    loop {
        let held = with_conn!(db, conn => drift_audit::held(conn, run, after.as_ref(), 500).await)?;
        let Some((last, _)) = held.last() else {
            return Ok(count);
        };
        count += held.len() as i64;
        after = Some(last.clone());
        for (id, kind) in &held {
            println!("held: {id} [{}]", kind.as_str());
        }
    }
}

/// Runs `work`, a walk of Clerk's users that writes here, under the walk
/// lease in `owner`'s name: never beside the drift audit or another walk.
async fn walking<T>(
    db: &Db,
    owner: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let lease = WalkLease::take(db, owner).await?.map_err(|held| {
        anyhow::anyhow!(
            "{held}: two walks of one database do not run at once; try again once it is done"
        )
    })?;
    let result = lease.hold(work).await;
    lease.release().await;
    result
}

/// The database (migrated) and Clerk's API, for the commands that need
/// both; the key's Clerk instance confirmed as the database's (or the
/// database bound to it at first contact) before anything is walked.
async fn clerk_tools(config: &Config) -> anyhow::Result<(Db, ClerkClient, InstanceGate)> {
    let client = startup::clerk_client(config)?
        .context("CLERK_SECRET_KEY is needed to read users from Clerk")?;
    let db = startup::connect(config).await?;
    db.migrate().await?;
    let bound = confirm_or_refuse(&db, &client).await?;
    tracing::info!(instance.id = %bound.instance_id, "Clerk instance confirmed");
    Ok((
        db,
        client,
        InstanceGate::new(InstanceState::Confirmed(bound)),
    ))
}

/// Binds the database to the instance of the current key, and says what it
/// was bound to before.
async fn rebind_instance(config: &Config) -> anyhow::Result<()> {
    let client = startup::clerk_client(config)?
        .context("CLERK_SECRET_KEY is needed: the database is bound to the instance of that key")?;
    let db = startup::connect(config).await?;
    db.migrate().await?;
    let (before, now) = clerk_instance::rebind(&db, &client).await?;
    let now_shown = format!("{} ({})", now.instance_id, now.environment_type);
    match before {
        Some(before) if before.instance_id == now.instance_id => {
            println!("already bound to Clerk instance {now_shown}");
        }
        Some(before) => println!(
            "bound to Clerk instance {now_shown}; it was bound to {} ({})",
            before.instance_id, before.environment_type
        ),
        None => println!("bound to Clerk instance {now_shown}; it was not bound before"),
    }
    Ok(())
}

async fn set_role(config: Config, user_id: &str, role: &str) -> anyhow::Result<()> {
    let id = ClerkUserId::parse(user_id).context("invalid user id")?;
    let role: Role = Role::parse_lenient(role).context("invalid role")?;
    let db = startup::connect(&config).await?;
    db.migrate().await?;
    let update = with_conn!(db, conn => {
        change_roles::set_role(conn, &id, role, RoleSource::Cli, Some("cli"), true).await
    })?;
    match update {
        RoleUpdate::Unchanged(_) => println!("{id} already has role {role}"),
        RoleUpdate::Changed { from: None, .. } => println!("{id} created with role {role}"),
        RoleUpdate::Changed {
            from: Some(from), ..
        } => println!("{id}: {from} -> {role}"),
    }
    Ok(())
}

/// A walk's requests per second from the command line: `--rate`, within
/// its share of the deployment's budget (`RECONCILE_RATE_SHARE` of
/// `CLERK_PUSH_RATE`).
fn walk_rate(config: &Config, rate: f64) -> f64 {
    rate.min(config.clerk.push.rate_per_sec * config.drift_audit.rate_share)
}
