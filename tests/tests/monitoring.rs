//! The monitoring files in the repository (`monitoring/`) against what the broker really
//! exports: every metric a rule or a dashboard panel queries exists, and the Prometheus
//! rules carry the built-in burn-rate policy's windows and thresholds.

mod api_support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use api_support::*;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Identifiers starting with `fleet_` in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("fleet_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The series names a running broker exposes (histogram families with their suffixes).
async fn exported() -> BTreeSet<String> {
    let (broker, api) = broker_with("", None).await;
    let text = api.get("/metrics").await.expect("scrape").text();
    broker.shutdown().await;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn exprs_of_rules(rules: &Value) -> Vec<(String, String, String)> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or("").to_owned(),
                r["expr"].as_str().unwrap_or("").to_owned(),
                r["labels"]["severity"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_prometheus_rules_use_exported_metrics_and_the_built_in_policy() {
    let exported = exported().await;
    let rules: Value = serde_norway::from_str(&repo_file("monitoring/prometheus/alerts.yml"))
        .expect("alerts.yml is YAML");
    let rules = exprs_of_rules(&rules);
    assert!(rules.len() >= 6);
    for (alert, expr, severity) in &rules {
        assert!(
            matches!(severity.as_str(), "page" | "ticket"),
            "{alert}: {severity}"
        );
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "{alert} queries {name}, which is not exported"
            );
        }
    }
    let rule = |name: &str| {
        rules
            .iter()
            .find(|(a, _, _)| a == name)
            .unwrap_or_else(|| panic!("no rule {name}"))
            .clone()
    };
    for slo in ["FleetInService", "CommandAcks"] {
        let (_, fast, severity) = rule(&format!("{slo}ErrorBudgetFastBurn"));
        assert_eq!(severity, "page");
        for part in [
            "window=\"1h\"} > 14.4",
            "window=\"5m\"} > 14.4",
            "window=\"6h\"} > 6",
            "window=\"30m\"} > 6",
        ] {
            assert!(fast.contains(part), "{slo} fast burn lacks {part}");
        }
        // Without `ignoring(window)` the two windows' series never match.
        assert_eq!(fast.matches("and ignoring(window)").count(), 2, "{fast}");
        let (_, slow, severity) = rule(&format!("{slo}ErrorBudgetSlowBurn"));
        assert_eq!(severity, "ticket");
        assert!(slow.contains("window=\"3d\"} > 1") && slow.contains("window=\"6h\"} > 1"));
        assert!(slow.contains("and ignoring(window)"));
    }
    let config: Value = serde_norway::from_str(&repo_file("monitoring/prometheus/prometheus.yml"))
        .expect("prometheus.yml is YAML");
    assert_eq!(config["rule_files"][0], "alerts.yml");
    assert_eq!(config["scrape_configs"][0]["job_name"], "fleet-broker");
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let exported = exported().await;
    let dashboard: Value = serde_json::from_str(&repo_file("monitoring/grafana/fleet-health.json"))
        .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "fleet-health");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            let expr = t["expr"].as_str().expect("a PromQL expression");
            queried.extend(metric_names(expr));
        }
    }
    for name in [
        "fleet_slo_burn_rate",
        "fleet_slo_error_budget_remaining_ratio",
        "fleet_vehicles",
        "fleet_command_ack_latency_seconds_bucket",
        "fleet_detection_latency_seconds_bucket",
    ] {
        assert!(queried.contains(name), "the dashboard does not show {name}");
    }
    for name in &queried {
        assert!(
            exported.contains(name),
            "a panel queries {name}, which is not exported"
        );
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names("rate(fleet_a_total[5m]) / fleet_b{x=\"fleet_c\"} + my_fleet_d");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["fleet_a_total", "fleet_b", "fleet_c"]
    );
}
