//! Databases that exist for one test (or one bench run) and are dropped
//! after it: a PostgreSQL database on `TEST_DATABASE_URL`'s server, or a
//! SQLite file in a temporary directory.

use std::path::PathBuf;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// The PostgreSQL server tests create their databases on.
pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let name = format!("crs_test_{}", unique_suffix());
        match backend {
            Backend::Postgres => {
                let admin_url = test_database_url();
                let mut admin = AsyncPgConnection::establish(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL refused or did not answer at {admin_url}: {e}\n\
                             The tests need a PostgreSQL server where this user may CREATE DATABASE.\n\
                             - Is it running? `pg_isready -h 127.0.0.1` (Debian: \
                             `pg_ctlcluster --skip-systemctl-redirect 15 main start`).\n\
                             - Asked for a password? Most distributions' packages ask for one on TCP. Either \
                             give one: `sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'secret'\"` \
                             and `export TEST_DATABASE_URL=postgres://postgres:secret@127.0.0.1:5432/postgres`; \
                             or let local TCP in without one, as CI does: put `host all all 127.0.0.1/32 trust` \
                             first in pg_hba.conf (`sudo -u postgres psql -tAc 'SHOW hba_file'` says where) \
                             and `sudo -u postgres psql -c 'SELECT pg_reload_conf()'`."
                        )
                    });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create the test database");
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Self {
                    url: url.into(),
                    backend,
                    name,
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path: PathBuf = dir.path().join(format!("{name}.db"));
                Self {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    name,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// The SQLite file, for tests that tamper with it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Drops the PostgreSQL database now (open connections are terminated).
    pub fn drop_database(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let name = self.name.clone();
        // Drop runs outside any async context we could block on, so the
        // statement runs on a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&test_database_url()).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.drop_database();
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}
