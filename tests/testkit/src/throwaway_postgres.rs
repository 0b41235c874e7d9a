//! A PostgreSQL cluster of a test's own, on a free port and in a temporary
//! folder, that the test may restart or stop without touching the shared
//! server the other tests use. Made with the installed server's `initdb`
//! and `pg_ctl` (run as the `postgres` user when the test runs as root,
//! since PostgreSQL refuses to run as root); trust authentication on
//! 127.0.0.1 only. Stopped (immediately) when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One throwaway cluster.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    data: PathBuf,
    /// Holds the data and socket folders.
    _dir: tempfile::TempDir,
    port: u16,
}

impl ThrowawayPostgres {
    /// Creates and starts a cluster; panics, saying why, when it cannot.
    pub fn start() -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("throwaway-postgres")
            .tempdir_in("/tmp")
            .expect("a temporary folder");
        let data = dir.path().join("data");
        give_to_postgres(dir.path());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let cluster = Self {
            bin,
            data,
            _dir: dir,
            port,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data_str(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server as a failover would look to clients: every
    /// connection is cut (fast shutdown), then the server starts again.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// Starts a stopped server again.
    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    fn data_str(&self) -> &str {
        self.data.to_str().expect("a UTF-8 path")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let mut all = vec!["-D", self.data_str(), "-w", "-t", "60", "-o", &options];
        all.extend_from_slice(args);
        let log = self.data.with_file_name("server.log");
        let log = log.to_str().expect("a UTF-8 path").to_owned();
        all.extend_from_slice(&["-l", &log]);
        self.run("pg_ctl", &all);
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = as_postgres(&self.bin.join(program), args)
            .output()
            .unwrap_or_else(|error| panic!("{program} could not be run: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data_str(), "stop", "-m", "immediate"],
        )
        .output();
    }
}

/// The newest installed server's `bin` folder.
fn server_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("a PostgreSQL version");
    root.join(version.to_string()).join("bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `program args`, as the `postgres` user when we are root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// Lets the `postgres` user write in `dir` when we are root.
fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown {} failed", dir.display());
    }
}
