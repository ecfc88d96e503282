//! The SLOs as OpenSLO v1 documents: the service, the two CMC SLOs with their Prometheus
//! indicators (the metrics this broker exports), the built-in multi-window burn-rate alert
//! policies, and where their notifications go (`fleet/alerts`).

use std::time::Duration;

use serde_json::{json, Value};

use super::{yaml, SloSettings};
use crate::engine::alerts::{journey_slo, ACK_SLO, FLEET_SLO};

/// The OpenSLO name of the command-ack SLO.
const SERVICE: &str = "fleet-health";

/// A duration in OpenSLO's shorthand: whole days, hours or minutes (`30d`, `6h`, `5m`).
pub fn duration_shorthand(d: Duration) -> String {
    let minutes = (d.as_secs() / 60).max(1);
    if minutes.is_multiple_of(24 * 60) {
        format!("{}d", minutes / (24 * 60))
    } else if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

fn prometheus(query: &str) -> Value {
    json!({ "metricSource": { "type": "Prometheus", "spec": { "query": query } } })
}

fn burn_condition(name: &str, severity: &str, threshold: f64, long: &str, short: &str) -> Value {
    json!({
        "kind": "AlertCondition",
        "metadata": { "name": name },
        "spec": {
            "description": format!(
                "burn rate above {threshold} over {long}, confirmed over {short} \
                 (Google SRE Workbook multi-window policy)"
            ),
            "severity": severity,
            "condition": {
                "kind": "burnrate",
                "op": "gt",
                "threshold": threshold,
                "lookbackWindow": long,
                "alertAfter": short,
            },
        },
    })
}

/// The documents as a YAML stream.
pub fn openslo_yaml(slo: &SloSettings) -> String {
    yaml::documents(&documents(slo))
}

/// The documents.
pub fn documents(slo: &SloSettings) -> Vec<Value> {
    let window = duration_shorthand(slo.window);
    let time_window = json!([{ "duration": window, "isRolling": true }]);
    let maintenance = if slo.maintenance_counts_as_bad {
        "vehicles out only for maintenance count as bad"
    } else {
        "vehicles out only for maintenance are excluded from both"
    };
    let notify_to = "fleet-alerts-mqtt";
    let mut docs = vec![
        json!({
            "apiVersion": "openslo/v1",
            "kind": "Service",
            "metadata": { "name": SERVICE, "displayName": "Fleet health broker" },
            "spec": {
                "description": "Shared e-scooters and e-bikes that can be rented safely: \
                                silent or faulty vehicles are taken out of service.",
            },
        }),
        json!({
            "apiVersion": "openslo/v1",
            "kind": "SLO",
            "metadata": {
                "name": FLEET_SLO,
                "displayName": "Fleet in service (CMC availability)",
            },
            "spec": {
                "description": format!(
                    "Share of the active fleet's vehicle-time in service (no heartbeat_lost, \
                     no hardware_fault); decommissioned vehicles are excluded and {maintenance}. \
                     The indicator samples the broker's in-service and fleet gauges; the broker \
                     itself integrates them exactly (fleet_slo_sli_ratio, fleet_slo_burn_rate)."
                ),
                "service": SERVICE,
                "indicator": {
                    "metadata": { "name": "fleet-in-service-vehicle-time" },
                    "spec": {
                        "ratioMetric": {
                            "counter": false,
                            "good": prometheus("sum(fleet_slo_good_vehicles)"),
                            "total": prometheus("sum(fleet_slo_valid_vehicles)"),
                        },
                    },
                },
                "timeWindow": time_window,
                "budgetingMethod": "Occurrences",
                "objectives": [{ "displayName": "In service", "target": slo.target }],
                "alertPolicies": [
                    { "alertPolicyRef": "fleet-in-service-page" },
                    { "alertPolicyRef": "fleet-in-service-ticket" },
                ],
            },
        }),
        json!({
            "apiVersion": "openslo/v1",
            "kind": "AlertPolicy",
            "metadata": { "name": "fleet-in-service-page", "displayName": "Fast burn: page" },
            "spec": {
                "description": "Page: the error budget burns 14.4x over 1h (2 % of a 30-day \
                                budget) or 6x over 6h (5 %), each confirmed by its short window.",
                "alertWhenBreaching": true,
                "alertWhenResolved": true,
                "conditions": [
                    burn_condition("fleet-in-service-burn-1h-5m", "page", 14.4, "1h", "5m"),
                    burn_condition("fleet-in-service-burn-6h-30m", "page", 6.0, "6h", "30m"),
                ],
                "notificationTargets": [{ "targetRef": notify_to }],
            },
        }),
        json!({
            "apiVersion": "openslo/v1",
            "kind": "AlertPolicy",
            "metadata": { "name": "fleet-in-service-ticket", "displayName": "Slow burn: ticket" },
            "spec": {
                "description": "Ticket: the error budget burns faster than 1x over 3 days, \
                                confirmed over 6h.",
                "alertWhenBreaching": true,
                "alertWhenResolved": true,
                "conditions": [
                    burn_condition("fleet-in-service-burn-3d-6h", "ticket", 1.0, "3d", "6h"),
                ],
                "notificationTargets": [{ "targetRef": notify_to }],
            },
        }),
        json!({
            "apiVersion": "openslo/v1",
            "kind": "AlertNotificationTarget",
            "metadata": { "name": notify_to },
            "spec": {
                "description": format!(
                    "The broker publishes each firing and resolved alert, retained, on the MQTT \
                     topic {}.",
                    slo.alerts_topic
                ),
                "target": "mqtt",
            },
        }),
        json!({
            "apiVersion": "openslo/v1",
            "kind": "SLO",
            "metadata": {
                "name": ACK_SLO,
                "displayName": "Commands acknowledged in time (CMC)",
            },
            "spec": {
                "description": format!(
                    "Share of service-in/service-out commands to reachable vehicles that the \
                     vehicle acknowledges ok within {}s. Commands to silent vehicles are not \
                     counted.",
                    slo.command_ack_within.as_secs()
                ),
                "service": SERVICE,
                "indicator": {
                    "metadata": { "name": "commands-acked-in-time" },
                    "spec": {
                        "ratioMetric": {
                            "counter": true,
                            "good": prometheus(
                                "sum(fleet_command_ack_slo_events_total{outcome=\"acked_in_time\"})"
                            ),
                            "total": prometheus("sum(fleet_command_ack_slo_events_total)"),
                        },
                    },
                },
                "timeWindow": time_window,
                "budgetingMethod": "Occurrences",
                "objectives": [{ "displayName": "Acked in time", "target": slo.command_ack_target }],
            },
        }),
    ];
    if !slo.journeys.is_empty() {
        docs.push(json!({
            "apiVersion": "openslo/v1",
            "kind": "AlertNotificationTarget",
            "metadata": { "name": JOURNEY_TARGET },
            "spec": {
                "description": "The broker posts each firing and resolved journey alert to \
                                Slack (when configured) and logs it.",
                "target": "slack",
            },
        }));
    }
    for j in &slo.journeys {
        docs.extend(journey_documents(j));
    }
    docs
}

/// Where the journeys' built-in alerts go.
const JOURNEY_TARGET: &str = "fleet-broker-slack";

/// A journey's SLO and its two alert policies (the same burn-rate policy as the CMC SLO).
fn journey_documents(j: &fleet_rules::JourneyConfig) -> Vec<Value> {
    let name = journey_slo(&j.name);
    let (page, ticket) = (format!("{name}-page"), format!("{name}-ticket"));
    let ends = format!("fleet_journey_ends_total{{journey=\"{}\"}}", j.name);
    let good = format!(
        "fleet_journey_ends_total{{journey=\"{}\",outcome=\"succeeded\"}}",
        j.name
    );
    let policy = |policy: &str, severity: &str, conditions: Vec<Value>| {
        json!({
            "apiVersion": "openslo/v1",
            "kind": "AlertPolicy",
            "metadata": { "name": policy },
            "spec": {
                "alertWhenBreaching": true,
                "alertWhenResolved": true,
                "conditions": conditions,
                "notificationTargets": [{ "targetRef": JOURNEY_TARGET }],
                "description": format!("{severity}: the {} journey's error budget burns fast", j.name),
            },
        })
    };
    vec![
        json!({
            "apiVersion": "openslo/v1",
            "kind": "SLO",
            "metadata": { "name": name, "displayName": format!("Rider journey: {}", j.name) },
            "spec": {
                "description": format!(
                    "Share of {} requests the vehicle answers with success within {}s \
                     (measured by the broker on the fleet's own request and answer topics).",
                    j.name,
                    j.timeout.as_secs()
                ),
                "service": SERVICE,
                "indicator": {
                    "metadata": { "name": format!("{name}-answered-ok-in-time") },
                    "spec": {
                        "ratioMetric": {
                            "counter": true,
                            "good": prometheus(&format!("sum({good})")),
                            "total": prometheus(&format!("sum({ends})")),
                        },
                    },
                },
                "timeWindow": [{ "duration": duration_shorthand(j.window), "isRolling": true }],
                "budgetingMethod": "Occurrences",
                "objectives": [{ "displayName": "Answered ok in time", "target": j.target }],
                "alertPolicies": [
                    { "alertPolicyRef": page },
                    { "alertPolicyRef": ticket },
                ],
            },
        }),
        policy(
            &page,
            "page",
            vec![
                burn_condition(&format!("{name}-burn-1h-5m"), "page", 14.4, "1h", "5m"),
                burn_condition(&format!("{name}-burn-6h-30m"), "page", 6.0, "6h", "30m"),
            ],
        ),
        policy(
            &ticket,
            "ticket",
            vec![burn_condition(
                &format!("{name}-burn-3d-6h"),
                "ticket",
                1.0,
                "3d",
                "6h",
            )],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_whole_unit() {
        assert_eq!(duration_shorthand(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(duration_shorthand(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(duration_shorthand(Duration::from_secs(90 * 60)), "90m");
    }

    #[test]
    fn the_slo_documents_carry_the_configured_targets_and_window() {
        let docs = documents(&SloSettings {
            target: 0.99,
            window: Duration::from_secs(7 * 86_400),
            maintenance_counts_as_bad: false,
            command_ack_target: 0.95,
            command_ack_within: Duration::from_secs(20),
            alerts_topic: "fleet/alerts".into(),
            journeys: vec![fleet_rules::JourneyConfig {
                name: "unlock".into(),
                timeout: Duration::from_secs(10),
                max_pending_per_vehicle: 4,
                max_pending: 100,
                target: 0.98,
                window: Duration::from_secs(86_400),
                rule: None,
            }],
        });
        let slos: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "SLO").collect();
        assert_eq!(slos.len(), 3);
        assert_eq!(slos[2]["metadata"]["name"], "journey-unlock");
        assert_eq!(slos[2]["spec"]["objectives"][0]["target"], 0.98);
        assert_eq!(slos[2]["spec"]["timeWindow"][0]["duration"], "1d");
        let policies = docs.iter().filter(|d| d["kind"] == "AlertPolicy").count();
        assert_eq!(policies, 4);
        assert_eq!(slos[0]["spec"]["objectives"][0]["target"], 0.99);
        assert_eq!(slos[0]["spec"]["timeWindow"][0]["duration"], "7d");
        assert_eq!(slos[1]["spec"]["objectives"][0]["target"], 0.95);
        assert!(slos[1]["spec"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("20s")));
    }
}
