//! The resident memory of the service under load, read from `/proc`.

use std::time::Duration;

/// `VmRSS` of process `pid`, in KiB.
pub fn read_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples `pid`'s RSS every 100 ms until dropped; `peak` reads the highest.
pub struct Sampler {
    pid: u32,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            read_kib(pid).unwrap_or(0),
        ));
        let shared = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Some(kib) = read_kib(pid) {
                    shared.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self { pid, peak, task }
    }

    /// Prints the RSS before and at its highest during the run.
    pub fn report(self, idle_kib: u64) {
        self.task.abort();
        let peak = self.peak.load(std::sync::atomic::Ordering::Relaxed);
        let now = read_kib(self.pid).unwrap_or(0);
        println!(
            "service RSS: {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after",
            mib(idle_kib),
            mib(peak),
            mib(now)
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
