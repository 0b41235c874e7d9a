//! Prometheus metrics, served at `/metrics`.
//!
//! | metric | labels |
//! | --- | --- |
//! | `clerk_webhooks_total` | `type`, `outcome` (applied, duplicate, stale, …) |
//! | `clerk_webhook_refusals_total` | `reason` (missing_header, bad_signature, timestamp, malformed_body, not_configured) |
//! | `clerk_push_attempts_total` | `result` (landed, retry, rate_limited, failed, deferred: handed back unsent) |
//! | `clerk_push_pending` | pushes queued or retrying |
//! | `clerk_push_oldest_pending_seconds` | age of the oldest queued push |
//! | `http_request_duration_seconds` | `method`, `route`, `status` (a histogram; its `_count` counts requests) |

use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub webhooks: IntCounterVec,
    pub webhook_refusals: IntCounterVec,
    pub push_attempts: IntCounterVec,
    pub push_pending: IntGauge,
    pub push_oldest_pending: Gauge,
    pub http_requests: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            webhooks: IntCounterVec::new(
                Opts::new(
                    "clerk_webhooks_total",
                    "Clerk webhooks processed, by event type and outcome",
                ),
                &["type", "outcome"],
            )
            .expect("valid metric"),
            webhook_refusals: IntCounterVec::new(
                Opts::new(
                    "clerk_webhook_refusals_total",
                    "Webhooks refused before processing, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            push_attempts: IntCounterVec::new(
                Opts::new(
                    "clerk_push_attempts_total",
                    "Role pushes to Clerk, by result",
                ),
                &["result"],
            )
            .expect("valid metric"),
            push_pending: IntGauge::new("clerk_push_pending", "Role pushes queued or retrying")
                .expect("valid metric"),
            push_oldest_pending: Gauge::new(
                "clerk_push_oldest_pending_seconds",
                "Age of the oldest queued role push",
            )
            .expect("valid metric"),
            http_requests: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP requests, by route and status",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["method", "route", "status"],
            )
            .expect("valid metric"),
            registry,
        };
        for collector in [
            Box::new(metrics.webhooks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.webhook_refusals.clone()),
            Box::new(metrics.push_attempts.clone()),
            Box::new(metrics.push_pending.clone()),
            Box::new(metrics.push_oldest_pending.clone()),
            Box::new(metrics.http_requests.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("registered once");
        }
        metrics
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
