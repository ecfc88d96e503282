//! `/metrics` after a scripted scenario: every family announced with HELP and TYPE, the
//! conventional names present, and values that agree with what happened.

mod api_support;

use std::collections::BTreeMap;

use api_support::*;

const FAST: &str = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
[heartbeat]\ntimeout = \"1s\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

#[tokio::test]
async fn metrics_after_a_fault_a_silence_an_ack_and_a_bad_message_add_up() {
    let (broker, api) = broker_with(FAST, Some(TOKEN)).await;
    let _a = vehicle(&broker, "a", None).await;
    let b = vehicle(&broker, "b", Some("e-bike")).await;
    let c = vehicle(&broker, "c", None).await;
    b.error("BRAKE_SENSOR", 1).await.expect("error report");
    c.publish("heartbeat", b"{not json".to_vec())
        .await
        .expect("publish");
    // b acks its service_out; a and c go silent after 1 s.
    until("the ack, the silences and the rejection", || async {
        let m = parse_metrics(&api.get("/metrics").await.expect("scrape").text());
        m.get("fleet_command_ack_slo_events_total{outcome=\"acked_in_time\"}") == Some(&1.0)
            && m.get("fleet_vehicles_with_reason{reason=\"heartbeat_lost\"}") == Some(&3.0)
            && m.get("fleet_messages_rejected_total{reason=\"malformed\"}") == Some(&1.0)
    })
    .await;

    let r = api.get("/metrics").await.expect("scrape");
    assert_eq!(r.status, 200);
    let text = r.text();
    // Every sample belongs to a family announced with HELP and TYPE just before it.
    let mut family = String::new();
    let mut announced = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap_or("").to_owned();
            assert!(!announced.contains(&family), "{family} announced twice");
            announced.push(family.clone());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            assert_eq!(parts.next(), Some(family.as_str()), "{line}");
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
                .unwrap_or(name);
            assert_eq!(base, family, "sample {line:?} outside its family");
            assert!(name.starts_with("fleet_"), "{line}");
        }
    }
    let m = parse_metrics(&text);

    assert_eq!(value(&m, "fleet_vehicles{state=\"in_service\"}"), 0.0);
    assert_eq!(value(&m, "fleet_vehicles{state=\"out_of_service\"}"), 3.0);
    assert_eq!(
        value(&m, "fleet_vehicles_with_reason{reason=\"hardware_fault\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "fleet_vehicles_with_reason{reason=\"maintenance\"}"),
        0.0
    );
    assert_eq!(value(&m, "fleet_vehicles_held"), 0.0);
    assert_eq!(value(&m, "fleet_slo_good_vehicles"), 0.0);
    assert_eq!(value(&m, "fleet_slo_valid_vehicles"), 3.0);

    assert!(value(&m, "fleet_messages_ingested_total{kind=\"heartbeat\"}") >= 3.0);
    assert_eq!(
        value(&m, "fleet_messages_ingested_total{kind=\"error\"}"),
        1.0
    );
    assert!(value(&m, "fleet_messages_ingested_total{kind=\"ack\"}") >= 1.0);
    assert_eq!(
        value(&m, "fleet_messages_rejected_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "fleet_messages_rejected_total{reason=\"refused_by_rules\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "fleet_transitions_total{change=\"set\",reason=\"hardware_fault\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "fleet_transitions_total{change=\"set\",reason=\"heartbeat_lost\"}"
        ),
        3.0
    );

    // Detection: three deadlines, each acted on within a few seconds of passing.
    let detected = value(&m, "fleet_detection_latency_seconds_count");
    assert_eq!(detected, 3.0);
    assert!(value(&m, "fleet_detection_latency_seconds_sum") / detected < 5.0);
    assert_eq!(
        value(&m, "fleet_detection_latency_seconds_bucket{le=\"+Inf\"}"),
        detected
    );

    // Commands: b's service_out acked in time; a's and c's go to silent vehicles and are
    // not counted (b was out already when it went silent: no command).
    assert_eq!(value(&m, "fleet_commands_sent_total"), 3.0);
    assert!(value(&m, "fleet_commands_acked_total{result=\"ok\"}") >= 1.0);
    assert_eq!(value(&m, "fleet_commands_to_silent_total"), 2.0);
    assert_eq!(
        value(
            &m,
            "fleet_command_ack_slo_events_total{outcome=\"unacked\"}"
        ),
        0.0
    );
    let acked = value(&m, "fleet_command_ack_latency_seconds_count");
    assert!(acked >= 1.0);
    assert_eq!(
        value(&m, "fleet_command_ack_latency_seconds_bucket{le=\"30\"}"),
        acked
    );
    let mut last = 0.0;
    for le in [
        "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "+Inf",
    ] {
        let n = value(
            &m,
            &format!("fleet_command_ack_latency_seconds_bucket{{le=\"{le}\"}}"),
        );
        assert!(n >= last, "buckets are cumulative");
        last = n;
    }
    assert!(value(&m, "fleet_commands_unacked") >= 0.0);

    // SLOs: ratios within [0, 1], the configured targets, non-negative burn rates.
    for slo in ["fleet-in-service", "command-acks"] {
        for w in ["5m", "30m", "1h", "6h", "1d", "3d", "30d"] {
            let s = value(
                &m,
                &format!("fleet_slo_sli_ratio{{slo=\"{slo}\",window=\"{w}\"}}"),
            );
            assert!((-1e-9..=1.0 + 1e-9).contains(&s), "{slo} {w}: {s}");
        }
        for w in ["5m", "30m", "1h", "6h", "1d", "3d"] {
            let b = value(
                &m,
                &format!("fleet_slo_burn_rate{{slo=\"{slo}\",window=\"{w}\"}}"),
            );
            assert!(b >= 0.0, "{slo} {w}: {b}");
        }
        assert_eq!(
            value(&m, &format!("fleet_slo_window_seconds{{slo=\"{slo}\"}}")),
            30.0 * 86_400.0
        );
        assert!(
            value(
                &m,
                &format!("fleet_slo_error_budget_remaining_ratio{{slo=\"{slo}\"}}")
            ) <= 1.0
        );
    }
    assert_eq!(
        value(
            &m,
            "fleet_slo_sli_ratio{slo=\"fleet-in-service\",window=\"now\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "fleet_slo_sli_ratio{slo=\"command-acks\",window=\"5m\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "fleet_slo_target_ratio{slo=\"fleet-in-service\"}"),
        0.995
    );
    assert_eq!(
        value(&m, "fleet_slo_target_ratio{slo=\"command-acks\"}"),
        0.99
    );
    for severity in ["page", "ticket"] {
        let firing = value(
            &m,
            &format!("fleet_slo_alert_firing{{slo=\"fleet-in-service\",severity=\"{severity}\"}}"),
        );
        assert!(firing == 0.0 || firing == 1.0);
    }

    // The MQTT front, the queues, the store, the build.
    assert!(value(&m, "fleet_mqtt_connected_clients") >= 3.0);
    assert!(value(&m, "fleet_mqtt_uplinks_total") >= 5.0);
    assert!(value(&m, "fleet_mqtt_retained_messages") >= 3.0);
    for queue in ["uplink", "ops", "store", "outbound"] {
        let depth = value(
            &m,
            &format!("fleet_engine_queue_depth{{queue=\"{queue}\"}}"),
        );
        let capacity = value(
            &m,
            &format!("fleet_engine_queue_capacity{{queue=\"{queue}\"}}"),
        );
        assert!(capacity > 0.0 && depth <= capacity, "{queue}");
    }
    assert_eq!(
        value(&m, "fleet_engine_queue_capacity{queue=\"uplink\"}"),
        8192.0
    );
    assert!(value(&m, "fleet_store_commits_total") >= 1.0);
    assert_eq!(value(&m, "fleet_store_failing"), 0.0);
    assert!(m.keys().any(|k| k.starts_with("fleet_build_info{version=")));
    broker.shutdown().await;
}
