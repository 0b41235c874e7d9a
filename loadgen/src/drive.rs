//! Runs numbered requests at a fixed concurrency and summarizes them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

/// How the run went.
pub struct Report {
    pub elapsed: Duration,
    /// Latency of every request, sorted.
    pub latencies: Vec<Duration>,
    /// Requests per result label (an outcome, or an HTTP status).
    pub labels: BTreeMap<String, usize>,
}

/// Sends requests `0..total`, `concurrency` at a time: each of `concurrency`
/// senders takes the next number as soon as its previous request is
/// answered. `send` returns a label for the result.
pub async fn drive<F, Fut>(concurrency: usize, total: usize, send: F) -> Report
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = String>,
{
    let next = AtomicUsize::new(0);
    let sender = || async {
        let mut timed = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return timed;
            }
            let started = Instant::now();
            let label = send(i).await;
            timed.push((started.elapsed(), label));
        }
    };
    let started = Instant::now();
    let results = join_all((0..concurrency.max(1)).map(|_| sender())).await;
    let elapsed = started.elapsed();

    let mut latencies = Vec::with_capacity(total);
    let mut labels = BTreeMap::new();
    for (latency, label) in results.into_iter().flatten() {
        latencies.push(latency);
        *labels.entry(label).or_insert(0) += 1;
    }
    latencies.sort_unstable();
    Report {
        elapsed,
        latencies,
        labels,
    }
}

impl Report {
    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    /// Prints throughput, latency quantiles and result counts.
    pub fn print(&self, what: &str) {
        let count = self.latencies.len();
        let rate = count as f64 / self.elapsed.as_secs_f64();
        println!(
            "{count} {what} in {:.2} s: {rate:.0}/s",
            self.elapsed.as_secs_f64()
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.90)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
        );
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(label, n)| format!("{label} {n}"))
            .collect();
        println!("results: {}", labels.join(", "));
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Awaits a request and labels its answer: the `outcome` of a 200
/// acknowledgement, or the status code.
pub async fn label(request: impl Future<Output = reqwest::Result<reqwest::Response>>) -> String {
    match request.await {
        Ok(response) if response.status().is_success() => {
            let status = response.status().as_u16().to_string();
            match response.json::<serde_json::Value>().await {
                Ok(body) => body["outcome"].as_str().map_or(status, str::to_owned),
                Err(_) => status,
            }
        }
        Ok(response) => response.status().as_u16().to_string(),
        Err(error) if error.is_timeout() => "timeout".into(),
        Err(_) => "connection error".into(),
    }
}
