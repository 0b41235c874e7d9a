//! Prometheus metrics, served at `/metrics`.
//!
//! | metric | labels |
//! | --- | --- |
//! | `clerk_role_sync_webhooks_total` | `type` (user.created, user.updated, user.deleted, other), `outcome` (applied, duplicate, stale, …) |
//! | `clerk_role_sync_webhook_refusals_total` | `reason` (missing_header, bad_signature, timestamp, too_large, body_timeout, busy, malformed_body, not_configured, database, wrong_instance: from another Clerk instance than the database's) |
//! | `clerk_role_sync_push_attempts_total` | `result` (landed, retry, rate_limited, failed, cancelled: a newer intent won, or another replica took the push over, before it was sent) |
//! | `clerk_role_sync_push_worker_restarts_total` | the push worker ended or panicked and was started again |
//! | `clerk_role_sync_push_claims_held` | pushes this replica is sending now (its claims) |
//! | `clerk_role_sync_push_lease_renewals_total` | claims whose lease this replica renewed while their push was in flight |
//! | `clerk_role_sync_push_leases_expired_total` | claims this replica took over from an owner whose lease had expired (a replica that died), and claims it found taken over before sending (it then sends nothing) |
//! | `clerk_role_sync_push_claims_taken_back_total` | claims left by an earlier run of this replica, taken back at its start |
//! | `clerk_role_sync_clerk_instance_confirmed` | 1 once the Clerk instance of the key is confirmed as the database's (pushes and the drift audit wait until then), else 0 |
//! | `clerk_role_sync_ingest_batch_size` | webhook events applied per transaction (a histogram) |
//! | `clerk_role_sync_ingest_batch_seconds` | how long applying one batch took, commit included (a histogram) |
//! | `clerk_role_sync_ingest_pending` | webhook events waiting for their transaction: queued for an ingest writer, or in the batch it is applying |
//! | `clerk_role_sync_ingest_writer_restarts_total` | the ingest writer ended or panicked and was started again |
//! | `clerk_role_sync_outbox_pending` | pushes queued or retrying, in the shared database: the same on every replica (aggregate with `max`) |
//! | `clerk_role_sync_outbox_oldest_pending_seconds` | age of the oldest queued push, likewise shared (`max`) |
//! | `clerk_role_sync_drift_audit_last_started_timestamp_seconds` | when the drift audit run this replica last worked on started (Unix time) |
//! | `clerk_role_sync_drift_audit_last_finished_timestamp_seconds` | when the last drift audit run finished, by any replica (Unix time) |
//! | `clerk_role_sync_drift_audit_users_checked_total` | users this replica's drift audit compared with Clerk |
//! | `clerk_role_sync_drift_found_total`, `clerk_role_sync_drift_repaired_total` | `kind` (missing_here, role_differs, outdated, missing_in_clerk) |
//! | `clerk_role_sync_drift_audit_runs_total` | `result` (finished; waiting: it held back what it may not make, or the lookups of users missing from Clerk's list, and waits for an operator; stopped: an error stopped it; it resumes) |
//! | `clerk_role_sync_drift_audit_awaiting_confirmation` | deletions and ADMIN demotions the last run held back for an operator to confirm, or (a short list, more missing users than it names) the live users Clerk's list did not show (0: none) |
//! | `clerk_role_sync_ready` | 1 when `/readyz` would answer 200 (the database answers, the push worker goes round its loop, the service is not stopping), else 0: worked out at each scrape as `/readyz` works it out (a check slower than the scrape's 0.5 s shows at the next one) |
//! | `clerk_role_sync_build_info` | `version`, `backend`: always 1 |
//! | `process_*` | the standard process metrics (CPU, memory, open files, start time) |
//! | `clerk_role_sync_http_request_duration_seconds` | `method`, `route`, `status` (a histogram; its `_count` counts requests) |
//!
//! Every family is prefixed `clerk_role_sync_` (but `process_*`). Every
//! label value comes from a fixed, small set: nothing a client sends
//! becomes a label as it is, so no request can add a series. Known label
//! values are exported at zero from the start. Counters and the claim
//! gauge are per replica (sum them); the outbox gauges are read from the
//! database every replica shares (take their `max`).

use actix_web::http::{Method, StatusCode};
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{DriftKind, Outcome};

/// The `type` label values of `clerk_role_sync_webhooks_total`.
const WEBHOOK_TYPES: [&str; 4] = ["user.created", "user.updated", "user.deleted", "other"];

/// Why a webhook was refused before it was applied.
pub const REFUSAL_REASONS: [&str; 10] = [
    "not_configured",
    "missing_header",
    "too_large",
    "body_timeout",
    "busy",
    "timestamp",
    "bad_signature",
    "malformed_body",
    "database",
    "wrong_instance",
];

/// What one push attempt came to.
pub const PUSH_RESULTS: [&str; 5] = ["landed", "retry", "rate_limited", "failed", "cancelled"];

/// How a drift audit run ends.
pub const AUDIT_RESULTS: [&str; 3] = ["finished", "waiting", "stopped"];

/// The `route` label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    webhooks: IntCounterVec,
    webhook_refusals: IntCounterVec,
    push_attempts: IntCounterVec,
    pub push_worker_restarts: IntCounter,
    pub push_claims_held: IntGauge,
    pub push_lease_renewals: IntCounter,
    pub push_leases_expired: IntCounter,
    pub push_claims_taken_back: IntCounter,
    pub clerk_instance_confirmed: IntGauge,
    pub push_pending: IntGauge,
    pub push_oldest_pending: Gauge,
    ingest_batch_size: Histogram,
    ingest_batch_seconds: Histogram,
    pub ingest_pending: IntGauge,
    pub ingest_writer_restarts: IntCounter,
    pub drift_audit_last_started: Gauge,
    pub drift_audit_last_finished: Gauge,
    pub drift_audit_users_checked: IntCounter,
    drift_found: IntCounterVec,
    drift_repaired: IntCounterVec,
    drift_audit_runs: IntCounterVec,
    pub drift_audit_awaiting_confirmation: IntGauge,
    pub ready: IntGauge,
    build_info: IntGaugeVec,
    http_requests: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            webhooks: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_webhooks_total",
                    "Clerk webhooks processed, by event type and outcome",
                ),
                &["type", "outcome"],
            )
            .expect("valid metric"),
            webhook_refusals: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_webhook_refusals_total",
                    "Webhooks refused before processing, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            push_attempts: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_push_attempts_total",
                    "Role pushes to Clerk, by result",
                ),
                &["result"],
            )
            .expect("valid metric"),
            push_worker_restarts: IntCounter::new(
                "clerk_role_sync_push_worker_restarts_total",
                "Times the push worker ended or panicked and was started again",
            )
            .expect("valid metric"),
            push_claims_held: IntGauge::new(
                "clerk_role_sync_push_claims_held",
                "Pushes this replica is sending now (the claims it holds)",
            )
            .expect("valid metric"),
            push_lease_renewals: IntCounter::new(
                "clerk_role_sync_push_lease_renewals_total",
                "Claims whose lease this replica renewed while their push was in flight",
            )
            .expect("valid metric"),
            push_leases_expired: IntCounter::new(
                "clerk_role_sync_push_leases_expired_total",
                "Claims taken over from an owner whose lease had expired, or found taken over before sending",
            )
            .expect("valid metric"),
            push_claims_taken_back: IntCounter::new(
                "clerk_role_sync_push_claims_taken_back_total",
                "Claims left by an earlier run of this replica, taken back at its start",
            )
            .expect("valid metric"),
            clerk_instance_confirmed: IntGauge::new(
                "clerk_role_sync_clerk_instance_confirmed",
                "1 once the Clerk instance of the key is confirmed as the database's, else 0 (pushes and the drift audit wait)",
            )
            .expect("valid metric"),
            push_pending: IntGauge::new(
                "clerk_role_sync_outbox_pending",
                "Role pushes queued or retrying (the shared database's: the same on every replica)",
            )
            .expect("valid metric"),
            push_oldest_pending: Gauge::new(
                "clerk_role_sync_outbox_oldest_pending_seconds",
                "Age of the oldest queued role push (the shared database's: the same on every replica)",
            )
            .expect("valid metric"),
            ingest_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "clerk_role_sync_ingest_batch_size",
                    "Webhook events applied per transaction by the ingest writer",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )
            .expect("valid metric"),
            ingest_batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "clerk_role_sync_ingest_batch_seconds",
                    "How long applying one batch of webhook events took, commit included",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .expect("valid metric"),
            ingest_pending: IntGauge::new(
                "clerk_role_sync_ingest_pending",
                "Webhook events waiting for their transaction: queued, or in a batch being applied",
            )
            .expect("valid metric"),
            ingest_writer_restarts: IntCounter::new(
                "clerk_role_sync_ingest_writer_restarts_total",
                "Times the ingest writer ended or panicked and was started again",
            )
            .expect("valid metric"),
            drift_audit_last_started: Gauge::new(
                "clerk_role_sync_drift_audit_last_started_timestamp_seconds",
                "When the drift audit run this replica last worked on started (Unix time; 0: none yet)",
            )
            .expect("valid metric"),
            drift_audit_last_finished: Gauge::new(
                "clerk_role_sync_drift_audit_last_finished_timestamp_seconds",
                "When the last drift audit run finished, by any replica (Unix time; 0: none yet)",
            )
            .expect("valid metric"),
            drift_audit_users_checked: IntCounter::new(
                "clerk_role_sync_drift_audit_users_checked_total",
                "Users this replica's drift audit compared with Clerk",
            )
            .expect("valid metric"),
            drift_found: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_drift_found_total",
                    "Drift the audit found, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            drift_repaired: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_drift_repaired_total",
                    "Drift the audit repaired, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            drift_audit_runs: IntCounterVec::new(
                Opts::new(
                    "clerk_role_sync_drift_audit_runs_total",
                    "Drift audit runs this replica ended, by result (finished; waiting for an operator's confirmation; or stopped by an error, to resume)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            drift_audit_awaiting_confirmation: IntGauge::new(
                "clerk_role_sync_drift_audit_awaiting_confirmation",
                "Deletions and ADMIN demotions the last drift audit run held back, or the users Clerk's list did not show that it left to look up, waiting for `reconcile --fix --max-deletions N` (0: none)",
            )
            .expect("valid metric"),
            ready: IntGauge::new(
                "clerk_role_sync_ready",
                "1 when /readyz would answer 200 (the database answers, the push worker goes round its loop, the service is not stopping), else 0",
            )
            .expect("valid metric"),
            http_requests: HistogramVec::new(
                HistogramOpts::new(
                    "clerk_role_sync_http_request_duration_seconds",
                    "HTTP requests, by method, route and status",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["method", "route", "status"],
            )
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                Opts::new("clerk_role_sync_build_info", "The running build: always 1"),
                &["version", "backend"],
            )
            .expect("valid metric"),
            registry,
        };
        for collector in [
            Box::new(metrics.webhooks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.webhook_refusals.clone()),
            Box::new(metrics.push_attempts.clone()),
            Box::new(metrics.push_worker_restarts.clone()),
            Box::new(metrics.push_claims_held.clone()),
            Box::new(metrics.push_lease_renewals.clone()),
            Box::new(metrics.push_leases_expired.clone()),
            Box::new(metrics.push_claims_taken_back.clone()),
            Box::new(metrics.clerk_instance_confirmed.clone()),
            Box::new(metrics.push_pending.clone()),
            Box::new(metrics.push_oldest_pending.clone()),
            Box::new(metrics.ingest_batch_size.clone()),
            Box::new(metrics.ingest_batch_seconds.clone()),
            Box::new(metrics.ingest_pending.clone()),
            Box::new(metrics.ingest_writer_restarts.clone()),
            Box::new(metrics.drift_audit_last_started.clone()),
            Box::new(metrics.drift_audit_last_finished.clone()),
            Box::new(metrics.drift_audit_users_checked.clone()),
            Box::new(metrics.drift_found.clone()),
            Box::new(metrics.drift_repaired.clone()),
            Box::new(metrics.drift_audit_runs.clone()),
            Box::new(metrics.drift_audit_awaiting_confirmation.clone()),
            Box::new(metrics.ready.clone()),
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.build_info.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("registered once");
        }
        for kind in WEBHOOK_TYPES {
            for outcome in Outcome::ALL {
                metrics
                    .webhooks
                    .with_label_values(&[kind, outcome.as_str()]);
            }
        }
        for reason in REFUSAL_REASONS {
            metrics.webhook_refusals.with_label_values(&[reason]);
        }
        for result in PUSH_RESULTS {
            metrics.push_attempts.with_label_values(&[result]);
        }
        for kind in DriftKind::ALL {
            metrics.drift_found.with_label_values(&[kind.as_str()]);
            metrics.drift_repaired.with_label_values(&[kind.as_str()]);
        }
        for result in AUDIT_RESULTS {
            metrics.drift_audit_runs.with_label_values(&[result]);
        }
        metrics
    }

    /// Counts one user's drift found.
    pub fn drift_found(&self, kind: DriftKind) {
        self.drift_found.with_label_values(&[kind.as_str()]).inc();
    }

    /// Counts one user's drift repaired (when found, or later: a change
    /// held back until the end of its run).
    pub fn drift_repaired(&self, kind: DriftKind) {
        self.drift_repaired
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts a drift audit run that ended; `result` is one of
    /// [`AUDIT_RESULTS`].
    pub fn drift_audit_ended(&self, result: &'static str) {
        debug_assert!(AUDIT_RESULTS.contains(&result), "{result}");
        self.drift_audit_runs.with_label_values(&[result]).inc();
    }

    /// Names the build and its storage backend in `clerk_role_sync_build_info`.
    pub fn set_build(&self, backend: &'static str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), backend])
            .set(1);
    }

    /// Exports the request histogram of each documented operation at zero.
    pub fn init_routes<'a>(&self, operations: impl IntoIterator<Item = (&'a Method, &'a str)>) {
        for (method, route) in operations {
            self.http_requests
                .with_label_values(&[method_label(method), route, "200"]);
        }
    }

    /// Counts a processed webhook of Clerk type `kind`.
    pub fn webhook(&self, kind: &str, outcome: Outcome) {
        let kind = WEBHOOK_TYPES[..3]
            .iter()
            .find(|known| **known == kind)
            .copied()
            .unwrap_or("other");
        self.webhooks
            .with_label_values(&[kind, outcome.as_str()])
            .inc();
    }

    /// Notes a batch of `events` webhook events applied in `seconds`.
    pub fn ingest_batch(&self, events: usize, seconds: f64) {
        self.ingest_batch_size.observe(events as f64);
        self.ingest_batch_seconds.observe(seconds);
    }

    /// Counts a refused webhook; `reason` is one of [`REFUSAL_REASONS`].
    pub fn webhook_refused(&self, reason: &'static str) {
        debug_assert!(REFUSAL_REASONS.contains(&reason), "{reason}");
        self.webhook_refusals.with_label_values(&[reason]).inc();
    }

    /// Counts a push attempt; `result` is one of [`PUSH_RESULTS`].
    pub fn push_attempt(&self, result: &'static str) {
        debug_assert!(PUSH_RESULTS.contains(&result), "{result}");
        self.push_attempts.with_label_values(&[result]).inc();
    }

    /// Times one request. `route` is a registered route pattern or
    /// [`UNMATCHED_ROUTE`]; the method is folded into a fixed set.
    pub fn request(&self, method: &Method, route: &str, status: StatusCode, seconds: f64) {
        self.http_requests
            .with_label_values(&[method_label(method), route, status.as_str()])
            .observe(seconds);
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

/// The standard methods by name; any other token (actix accepts any) is
/// `other`, so made-up methods cannot add series (or flood log lines).
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_and_types_fold_into_one_label() {
        let metrics = Metrics::new();
        let before = metrics.render().len();
        for i in 0..200 {
            let method = Method::from_bytes(format!("M{i:0>300}").as_bytes()).expect("a token");
            metrics.request(&method, UNMATCHED_ROUTE, StatusCode::NOT_FOUND, 0.001);
            metrics.webhook(&format!("made.up.{i}"), Outcome::Ignored);
        }
        let text = metrics.render();
        assert!(text.contains(r#"method="other",route="unmatched",status="404""#));
        assert!(
            text.contains(r#"clerk_role_sync_webhooks_total{outcome="ignored",type="other"} 200"#)
        );
        assert!(!text.contains("M000"), "a made-up method became a label");
        assert!(text.len() < before + 4096, "{} → {}", before, text.len());
    }

    #[test]
    fn standard_methods_keep_their_names() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::HEAD), "HEAD");
        assert_eq!(method_label(&Method::TRACE), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }

    #[test]
    fn known_series_exist_before_any_event() {
        let text = Metrics::new().render();
        for series in [
            r#"clerk_role_sync_webhooks_total{outcome="applied",type="user.created"} 0"#,
            r#"clerk_role_sync_webhook_refusals_total{reason="bad_signature"} 0"#,
            r#"clerk_role_sync_push_attempts_total{result="landed"} 0"#,
            "clerk_role_sync_push_worker_restarts_total 0",
        ] {
            assert!(text.contains(series), "{series} missing");
        }
    }
}
