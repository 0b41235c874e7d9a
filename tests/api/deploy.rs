//! The monitoring files of `deploy/` against the running service: every
//! metric the alerting rules and the Grafana dashboard name is one that
//! `/metrics` serves, the dashboard is a dashboard, and every alert says
//! what it means and what to do.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const DASHBOARD: &str = "deploy/grafana/clerk-role-sync.json";

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{file}: {error}"))
}

/// Every metric name `text` mentions: the words that start with
/// `clerk_role_sync_` or `process_` (`[a-z0-9_]+` after the prefix).
fn named_metrics(text: &str) -> BTreeSet<String> {
    let in_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for prefix in ["clerk_role_sync_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // inside a longer word
            }
            let rest = &text[at + prefix.len()..];
            let end = rest.find(|c: char| !in_name(c)).unwrap_or(rest.len());
            if end > 0 {
                names.insert(format!("{prefix}{}", &rest[..end]));
            }
        }
    }
    names
}

/// The sample names of a Prometheus text page: each family's name, and for
/// a histogram its `_bucket`, `_sum` and `_count` (never the bare name).
fn served_samples(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names of `file` that `/metrics` does not serve.
fn unserved(file: &str, served: &BTreeSet<String>) -> Vec<String> {
    named_metrics(&read(file))
        .into_iter()
        .filter(|name| !served.contains(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_name_only_metrics_the_service_serves() {
    let app = spawn_app(Backend::Sqlite).await;
    let page = app.get("/metrics").await.text().await.expect("text");
    let served = served_samples(&page);
    assert!(
        served.contains("clerk_role_sync_ready") && served.contains("process_cpu_seconds_total"),
        "{page}"
    );

    for file in [ALERTS, DASHBOARD] {
        let named = named_metrics(&read(file));
        assert!(named.len() >= 10, "{file} names only {named:?}");
        assert_eq!(
            unserved(file, &served),
            Vec::<String>::new(),
            "{file} names metrics that /metrics does not serve"
        );
    }
    // What every alert and panel relies on in particular.
    let alerts = named_metrics(&read(ALERTS));
    for name in [
        "clerk_role_sync_ready",
        "clerk_role_sync_clerk_instance_confirmed",
        "clerk_role_sync_outbox_oldest_pending_seconds",
        "clerk_role_sync_push_attempts_total",
        "clerk_role_sync_webhook_refusals_total",
        "clerk_role_sync_drift_audit_last_finished_timestamp_seconds",
        "clerk_role_sync_drift_audit_awaiting_confirmation",
        "clerk_role_sync_push_worker_restarts_total",
        "clerk_role_sync_ingest_writer_restarts_total",
    ] {
        assert!(alerts.contains(name), "{ALERTS} has no rule on {name}");
    }
    let dashboard = named_metrics(&read(DASHBOARD));
    for name in [
        "clerk_role_sync_ingest_batch_size_bucket",
        "clerk_role_sync_ingest_batch_seconds_bucket",
        "clerk_role_sync_http_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            dashboard.contains(name),
            "{DASHBOARD} has no panel on {name}"
        );
    }
}

#[test]
fn a_name_is_read_whole_and_checked_against_the_samples() {
    let text = r#"rate(clerk_role_sync_webhooks_total{job=~"$job"}[5m]) / process_cpu_seconds_total
        histogram_quantile(0.99, clerk_role_sync_ingest_batch_size_bucket) subprocess_x process_*"#;
    assert_eq!(
        named_metrics(text).into_iter().collect::<Vec<_>>(),
        [
            "clerk_role_sync_ingest_batch_size_bucket",
            "clerk_role_sync_webhooks_total",
            "process_cpu_seconds_total",
        ]
    );
    let page = "# TYPE clerk_role_sync_ingest_batch_size histogram\n\
        clerk_role_sync_ingest_batch_size_bucket{le=\"1\"} 0\n\
        clerk_role_sync_ingest_batch_size_sum 0\n\
        clerk_role_sync_ingest_batch_size_count 0\n\
        clerk_role_sync_webhooks_total{outcome=\"applied\",type=\"other\"} 0\n";
    let served = served_samples(page);
    assert!(served.contains("clerk_role_sync_ingest_batch_size_bucket"));
    assert!(served.contains("clerk_role_sync_webhooks_total"));
    // The bare name of a histogram has no samples.
    assert!(!served.contains("clerk_role_sync_ingest_batch_size"));
}

#[test]
fn the_dashboard_has_panels_over_the_prometheus_variable() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(variable(name)["type"], "query", "{name}");
    }

    let panels = dashboard["panels"].as_array().expect("panels");
    let charts: Vec<&Value> = panels
        .iter()
        .filter(|panel| panel["type"] != "row")
        .collect();
    assert!(charts.len() >= 10, "{} panels", charts.len());
    for panel in charts {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!named_metrics(expr).is_empty(), "{title}: {expr}");
            assert!(
                expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#),
                "{title} ignores the job and instance variables: {expr}"
            );
        }
    }
}

#[test]
fn every_alert_says_what_it_means_and_what_to_do() {
    let rules: yaml_serde::Value = yaml_serde::from_str(&read(ALERTS)).expect("the rules are YAML");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            assert!(rule["expr"].as_str().is_some(), "{name} has no expr");
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for annotation in ["summary", "description"] {
                let text = rule["annotations"][annotation].as_str().unwrap_or_default();
                assert!(text.len() > 20, "{name} has no {annotation}");
            }
            alerts.push(name.to_owned());
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");
    // Each is unit-tested.
    let tests = read("deploy/prometheus/alerts_test.yml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alerts_test.yml does not test {alert}"
        );
    }
}
