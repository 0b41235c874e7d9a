//! Real `clerk-role-sync serve` processes, for tests and benchmarks that
//! run several replicas: started on a port of their own, killed without
//! warning (SIGKILL, as an OOM kill or a lost node would), stopped with
//! SIGTERM, and restarted on the same port under the same `REPLICA_ID`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a starting instance has to answer `/readyz`.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// One replica of the service.
pub struct Instance {
    /// Also its `REPLICA_ID`.
    pub name: String,
    pub port: u16,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// A replica named `name` running `binary` with `env` (plus its
    /// `BIND_ADDR` and `REPLICA_ID`), logging to `<log_dir>/<name>.log`.
    pub fn new(binary: &Path, name: &str, env: &[(String, String)], log_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        Self {
            name: name.to_owned(),
            port,
            binary: binary.to_owned(),
            env: env.to_vec(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sets environment variable `name` for the next starts (replacing it
    /// if it was set).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(key, _)| key != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a log file");
        let child = Command::new(&self.binary)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BIND_ADDR", format!("127.0.0.1:{}", self.port))
            .env("REPLICA_ID", &self.name)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("the service starts");
        self.child = Some(child);
    }

    /// Starts the process for a start that is to be refused: waits until it
    /// exits on its own (panics if it becomes ready or runs on), and returns
    /// its exit status and what it logged.
    pub async fn start_expecting_exit(&mut self, client: &reqwest::Client) -> (ExitStatus, String) {
        let logged_before = std::fs::metadata(&self.log).map_or(0, |meta| meta.len());
        self.spawn();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let log = std::fs::read(&self.log).unwrap_or_default();
                let start = usize::try_from(logged_before).unwrap_or(0).min(log.len());
                return (status, String::from_utf8_lossy(&log[start..]).into_owned());
            }
            if let Ok(response) = client.get(self.url("/readyz")).send().await {
                panic!(
                    "{} answered /readyz ({}) instead of refusing to start:\n{}",
                    self.name,
                    response.status(),
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} neither exited nor became ready:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process and waits until it is ready.
    pub async fn start(&mut self, client: &reqwest::Client) {
        self.spawn();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process at once, without any chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP), as a stalled VM, a long GC-like pause
    /// or CPU starvation would: it holds its connections and does nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the instance runs");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {}", self.name);
    }

    /// SIGTERM, and waits for the process to exit (a graceful shutdown).
    pub async fn stop(&mut self) {
        let _ = self.terminate().await;
    }

    /// SIGTERM, and waits for the process to exit; its exit status (`None`
    /// when it was not running).
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop on SIGTERM:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process has logged (all its starts), for a caller
    /// that remembers how much it had read.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines the process logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `count` replicas of `binary` (`replica-0`, `replica-1`, …) started with
/// `env`, logging to `log_dir`; `clerk` delivers its webhooks to any of
/// them that runs, retried as Svix retries.
pub async fn start_replicas(
    binary: &Path,
    count: usize,
    env: &[(String, String)],
    log_dir: &Path,
    client: &reqwest::Client,
    clerk: &crate::clerk_emulator::ClerkEmulator,
) -> Vec<Instance> {
    let mut replicas: Vec<Instance> = (0..count)
        .map(|i| Instance::new(binary, &format!("replica-{i}"), env, log_dir))
        .collect();
    for replica in &mut replicas {
        replica.start(client).await;
    }
    let endpoints: Vec<String> = replicas
        .iter()
        .map(|replica| replica.url("/api/webhooks/clerk"))
        .collect();
    clerk.send_webhooks_to_any(
        &endpoints,
        crate::svix::TEST_SECRET,
        crate::clerk_emulator::Delivery::Retried,
    );
    replicas
}
