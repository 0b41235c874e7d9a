//! The connection pool of either backend, migrations, and [`with_conn!`],
//! which hands a pooled connection of whichever backend is in use to code
//! generic over [`Store`](super::Store).

use std::time::Duration;

use deadpool::managed::{Manager, Object};
use diesel::SqliteConnection;
use diesel::result::ConnectionError;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::pooled_connection::deadpool::{Pool as DeadPool, PoolError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;

use super::sqlite_runtime;
use super::url::DatabaseUrl;

/// The SQLite connection, made async by running it on tokio's blocking pool.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, sqlite_runtime::BlockingPool>;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a request waits for a pooled connection, or for a new one to be
/// opened, before the database counts as unreachable (503).
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long SQLite waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// PostgreSQL session limits: no statement runs longer, and a session left
/// idle inside a transaction (abandoned midway) is ended and its locks
/// freed. (How long a statement waits for a lock is configured: see
/// [`Db::connect_with`].)
const PG_STATEMENT_TIMEOUT: &str = "30s";
const PG_IDLE_IN_TRANSACTION_TIMEOUT: &str = "30s";
/// The lock timeout of [`Db::connect`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP keepalive on PostgreSQL connections: a half-open connection (a
/// failover, a dropped NAT entry) is found dead within about a minute
/// instead of the kernel's two hours, and its requests fail instead of
/// hanging.
const PG_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const PG_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const PG_KEEPALIVE_RETRIES: u32 = 3;
/// How long opening a PostgreSQL connection may take, when the URL does not
/// say.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database failure, as the rest of the service needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the database is down or overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// Whether a statement gave up waiting (PostgreSQL's lock or statement
    /// timeout): retrying later may succeed.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(_, info))
                if info.message().starts_with("canceling statement due to")
        )
    }

    /// Whether a statement hit a unique constraint: a transaction lost a
    /// race to insert the same row (run again, it finds the row).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

impl From<PoolError> for DbError {
    fn from(error: PoolError) -> Self {
        DbError::Unavailable(error.to_string())
    }
}

/// Which database the service talks to: `postgres` or `sqlite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A pool of connections to one of the two backends.
#[derive(Clone)]
pub enum Pool {
    Postgres(DeadPool<AsyncPgConnection>),
    Sqlite(DeadPool<SqliteConn>),
}

/// The database handle the service shares between requests and workers.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    url: DatabaseUrl,
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever
/// backend `$db` uses, and evaluates to the body's `Result<_, E>` (where
/// `E: From<DbError>`; `?` inside the body stops the body only). The body is
/// compiled once per backend, so it may call anything generic over
/// [`Store`](super::Store).
#[macro_export]
macro_rules! with_conn {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db.pool() {
            $crate::db::Pool::Postgres(pool) => {
                async {
                    let pooled = pool.get().await.map_err($crate::db::DbError::from)?;
                    let mut pooled = $crate::db::ClosedIfAbandoned::new(pooled);
                    let $conn = &mut *pooled;
                    $body
                }
                .await
            }
            $crate::db::Pool::Sqlite(pool) => {
                async {
                    let pooled = pool.get().await.map_err($crate::db::DbError::from)?;
                    let mut pooled = $crate::db::ClosedIfAbandoned::new(pooled);
                    let $conn = &mut *pooled;
                    $body
                }
                .await
            }
        }
    };
}

/// A pooled connection that is closed, not handed back to the pool, when
/// it is dropped inside a transaction (the task using it stopped or
/// panicked midway, or a walk lost its lease): the database then ends the
/// transaction and frees its locks at once, instead of when the pool next
/// hands the connection out.
pub struct ClosedIfAbandoned<M: Manager>(Option<Object<M>>)
where
    M::Type: PoolableConnection;

impl<M: Manager> ClosedIfAbandoned<M>
where
    M::Type: PoolableConnection,
{
    pub fn new(pooled: Object<M>) -> Self {
        Self(Some(pooled))
    }
}

impl<M: Manager> std::ops::Deref for ClosedIfAbandoned<M>
where
    M::Type: PoolableConnection,
{
    type Target = M::Type;

    fn deref(&self) -> &M::Type {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl<M: Manager> std::ops::DerefMut for ClosedIfAbandoned<M>
where
    M::Type: PoolableConnection,
{
    fn deref_mut(&mut self) -> &mut M::Type {
        self.0.as_mut().expect("taken only on drop")
    }
}

impl<M: Manager> Drop for ClosedIfAbandoned<M>
where
    M::Type: PoolableConnection,
{
    fn drop(&mut self) {
        if let Some(mut pooled) = self.0.take()
            && pooled.is_broken()
        {
            drop(Object::take(pooled));
        }
    }
}

impl Db {
    /// Opens a pool of at most `max_connections` (PostgreSQL) connections.
    /// SQLite always gets one connection: it allows one writer at a time, and
    /// a single connection turns lock waits into fair queueing in the pool.
    pub async fn connect(url: &DatabaseUrl, max_connections: usize) -> Result<Self, DbError> {
        Self::connect_with(url, max_connections, DEFAULT_LOCK_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect); on PostgreSQL no statement waits
    /// longer than `lock_timeout` for a lock (a row an operator's session
    /// holds, say): it fails instead, and its request answers 503.
    pub async fn connect_with(
        url: &DatabaseUrl,
        max_connections: usize,
        lock_timeout: Duration,
    ) -> Result<Self, DbError> {
        // Connections are opened on the runtime that opens the pool, whoever
        // asks for them. A connection keeps a task on the runtime it was
        // opened on (PostgreSQL's connection driver, SQLite's blocking
        // calls); actix-web's workers each have a runtime of their own that
        // ends with the server, and a connection tied to one would die with
        // it while the pool still hands it out.
        let runtime = tokio::runtime::Handle::current();
        let pool = match url {
            DatabaseUrl::Postgres(conn_str) => {
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    on_runtime(&runtime, async move {
                        connect_postgres(&url, lock_timeout).await
                    })
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    conn_str, config,
                );
                Pool::Postgres(build_pool(manager, max_connections)?)
            }
            DatabaseUrl::Sqlite(path) => {
                create_parent_dir(path)?;
                let mut config = ManagerConfig::default();
                config.custom_setup =
                    Box::new(move |path| on_runtime(&runtime, open_sqlite(path.to_owned())));
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path.to_string_lossy(),
                    config,
                );
                Pool::Sqlite(build_pool(manager, 1)?)
            }
        };
        let db = Self {
            pool,
            url: url.clone(),
        };
        // Fail at start-up, not on the first request, when the database is
        // unreachable. (This also creates a new SQLite file.)
        db.select_one().await?;
        Ok(db)
    }

    /// The pool, for [`with_conn!`].
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the embedded migrations that have not run yet.
    ///
    /// On PostgreSQL an advisory lock makes replicas that start together
    /// migrate one after another instead of racing.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.url {
            DatabaseUrl::Postgres(conn_str) => {
                let mut conn = AsyncPgConnection::establish(conn_str)
                    .await
                    .map_err(|e| DbError::Unavailable(e.to_string()))?;
                conn.batch_execute("SELECT pg_advisory_lock(7243017)")
                    .await?;
                let conn = run_migrations(conn, POSTGRES_MIGRATIONS).await?;
                let mut conn = conn;
                conn.batch_execute("SELECT pg_advisory_unlock(7243017)")
                    .await?;
            }
            DatabaseUrl::Sqlite(path) => {
                let conn = open_sqlite(path.to_string_lossy().into_owned())
                    .await
                    .map_err(|e| DbError::Unavailable(e.to_string()))?;
                run_migrations(conn, SQLITE_MIGRATIONS).await?;
            }
        }
        Ok(())
    }

    /// Checks that the database answers a trivial query. For SQLite it also
    /// checks that the file is still where it was opened: a deleted file
    /// would silently become a new, empty database on the next connection.
    pub async fn ping(&self) -> Result<(), DbError> {
        if let DatabaseUrl::Sqlite(path) = &self.url
            && !path.exists()
        {
            return Err(DbError::Unavailable(format!(
                "SQLite file {} is gone",
                path.display()
            )));
        }
        self.select_one().await
    }

    async fn select_one(&self) -> Result<(), DbError> {
        with_conn!(self, conn => {
            conn.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }
}

/// Runs `connect` as a task of `runtime` and waits for it.
fn on_runtime<C: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    connect: impl Future<Output = diesel::ConnectionResult<C>> + Send + 'static,
) -> futures_util::future::BoxFuture<'static, diesel::ConnectionResult<C>> {
    let task = runtime.spawn(connect);
    async move {
        task.await.unwrap_or_else(|error| {
            Err(ConnectionError::BadConnection(format!(
                "opening the connection failed: {error}"
            )))
        })
    }
    .boxed()
}

fn build_pool<M: deadpool::managed::Manager>(
    manager: M,
    max_size: usize,
) -> Result<deadpool::managed::Pool<M>, DbError> {
    deadpool::managed::Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Creates the SQLite file's directory when it is missing. When it cannot
/// be, the error names the missing directory, says where creating it
/// stopped, and how to fix it.
fn create_parent_dir(path: &std::path::Path) -> Result<(), DbError> {
    let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    std::fs::create_dir_all(parent).map_err(|error| {
        // The deepest part of the path that exists.
        let reason = match parent.ancestors().find(|dir| dir.exists()) {
            Some(dir) if !dir.is_dir() => format!("{} is a file, not a directory", dir.display()),
            Some(dir) => format!("it cannot be created in {} ({error})", dir.display()),
            None => format!("it cannot be created ({error})"),
        };
        DbError::Unavailable(format!(
            "the directory {shown} of the SQLite file does not exist and {reason}: create it \
             (`mkdir -p {shown}`, writable by the service's user), or set DATABASE_URL to a \
             file in a directory that exists",
            shown = parent.display()
        ))
    })
}

/// Opens a PostgreSQL connection with the service's session limits and
/// TCP keepalive (see the `PG_*` constants), whatever the URL sets besides.
async fn connect_postgres(
    url: &str,
    lock_timeout: Duration,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|error: tokio_postgres::Error| {
            ConnectionError::InvalidConnectionUrl(error.to_string())
        })?;
    let options = format!(
        "{} -c statement_timeout={PG_STATEMENT_TIMEOUT} -c lock_timeout={}ms \
         -c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_TIMEOUT}",
        config.get_options().unwrap_or_default(),
        lock_timeout.as_millis()
    );
    config
        .options(options.trim_start())
        .keepalives(true)
        .keepalives_idle(PG_KEEPALIVE_IDLE)
        .keepalives_interval(PG_KEEPALIVE_INTERVAL)
        .keepalives_retries(PG_KEEPALIVE_RETRIES);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|error| ConnectionError::BadConnection(connect_failure(&config, &error)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Why a PostgreSQL connection could not be opened, with the server's own
/// words when it refused (tokio-postgres shows only "db error"). A
/// database that does not exist (SQLSTATE 3D000) is not created by the
/// service: the message says how to create it. Nothing of the password is
/// shown.
fn connect_failure(config: &tokio_postgres::Config, error: &tokio_postgres::Error) -> String {
    let Some(refusal) = error.as_db_error() else {
        return error.to_string();
    };
    if refusal.code() != &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME {
        return format!(
            "the server refused: {} (SQLSTATE {})",
            refusal.message(),
            refusal.code().code()
        );
    }
    // The server's default database is the user's name.
    let user = config.get_user();
    let Some(name) = config.get_dbname().or(user) else {
        return format!("the server refused: {}", refusal.message());
    };
    let mut createdb = String::from("createdb");
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        createdb.push_str(&format!(" -h {host}"));
    }
    if let Some(port) = config.get_ports().first() {
        createdb.push_str(&format!(" -p {port}"));
    }
    if let Some(user) = user {
        createdb.push_str(&format!(" -U {user}"));
    }
    format!(
        "the database \"{name}\" does not exist on the PostgreSQL server: create it, with \
         `{createdb} {name}` or, in psql as a user allowed to, `CREATE DATABASE \"{}\";` \
         (the service creates its tables itself), or correct the name in DATABASE_URL",
        name.replace('"', "\"\"")
    )
}

/// Opens a SQLite connection in WAL mode (readers never block the writer)
/// with a busy timeout and foreign keys enforced. Each commit syncs the
/// write-ahead log (`synchronous = FULL`): a transaction answered as
/// committed (a webhook's 200, an admin's change) survives a power loss or
/// an OS crash, not only a crash of the process as with `NORMAL`. Group
/// commit makes that one fsync per batch of events.
async fn open_sqlite(path: String) -> diesel::ConnectionResult<SqliteConn> {
    let mut conn = SqliteConn::establish(&path).await?;
    // The busy timeout comes first: switching to WAL needs a lock, and
    // without the timeout a connection opened while another process (the
    // service, the CLI) writes would fail at once with "database is locked".
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
         PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; \
         PRAGMA foreign_keys = ON;"
    ))
    .await
    .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

async fn run_migrations<C>(conn: C, migrations: EmbeddedMigrations) -> Result<C, DbError>
where
    C: AsyncConnection + 'static,
    AsyncMigrationHarness<C>: MigrationHarness<C::Backend>,
{
    let mut harness = AsyncMigrationHarness::new(conn);
    harness
        .run_pending_migrations(migrations)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(harness.into_inner())
}
