//! `/metrics` after a scripted scenario: every family announced with HELP and TYPE, the
//! conventional names present, and values that agree with what happened.

mod api_support;

use std::collections::BTreeMap;

use api_support::*;
use fleet_broker::cli::ApiClient;
use fleet_broker::clock::Clock;
use fleet_broker::Broker;
use fleet_tests::test_config;
use sim_device::{Vehicle, VehicleOptions};

const FAST: &str = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
[heartbeat]\ntimeout = \"1s\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";

const MINUTE_MS: u64 = 60_000;
/// The broker's clock starts this long before a minute boundary, where the rules evaluate
/// the burn-rate alerts: the scenario (under two seconds) is over by then.
const BEFORE_BOUNDARY_MS: u64 = 5_000;

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// Equal up to float rounding.
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual}, expected {expected}"
    );
}

#[tokio::test]
async fn metrics_after_a_fault_a_silence_an_ack_and_a_bad_message_add_up() {
    let config = test_config(FAST);
    let boundary = (Clock::system().now() / MINUTE_MS + 1) * MINUTE_MS;
    let broker = Broker::start(&config, Clock::starting_at(boundary - BEFORE_BOUNDARY_MS))
        .await
        .expect("broker starts");
    let api = ApiClient::new(
        &format!("http://{}", broker.http_addr()),
        Some(TOKEN.to_owned()),
    )
    .expect("api url");
    // a never acks; b and c ack every command they get.
    let a = Vehicle::connect(
        broker.mqtt_addr(),
        "a",
        VehicleOptions {
            auto_ack: false,
            ..VehicleOptions::default()
        },
    )
    .await
    .expect("a connects");
    a.publish("heartbeat", Vec::new()).await.expect("heartbeat");
    until("a registered", || async {
        broker.engine().vehicle("a").await.ok().flatten().is_some()
    })
    .await;
    let b = vehicle(&broker, "b", Some("e-bike")).await;
    let c = vehicle(&broker, "c", None).await;
    b.error("BRAKE_SENSOR", 1).await.expect("error report");
    c.publish("heartbeat", b"{not json".to_vec())
        .await
        .expect("publish");
    // b's service_out (fault) is acked in time; a and c go silent after 1 s, get a
    // service_out each (to a silent vehicle: not judged), and c acks it; b goes silent
    // too, already out (no command). At the minute boundary the fully-out fleet fires
    // both burn-rate alerts.
    until(
        "the acks, the silences, the rejection and the alerts",
        || async {
            let m = parse_metrics(&api.get("/metrics").await.expect("scrape").text());
            m.get("fleet_command_ack_slo_events_total{outcome=\"acked_in_time\"}") == Some(&1.0)
                && m.get("fleet_commands_acked_total{result=\"ok\"}") == Some(&2.0)
                && m.get("fleet_vehicles_with_reason{reason=\"heartbeat_lost\"}") == Some(&3.0)
                && m.get("fleet_messages_rejected_total{reason=\"malformed\"}") == Some(&1.0)
                && m.get("fleet_slo_alert_firing{slo=\"fleet-in-service\",severity=\"page\"}")
                    == Some(&1.0)
                && m.get("fleet_slo_alert_firing{slo=\"fleet-in-service\",severity=\"ticket\"}")
                    == Some(&1.0)
        },
    )
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

    assert_eq!(
        value(&m, "fleet_messages_ingested_total{kind=\"heartbeat\"}"),
        3.0
    );
    assert_eq!(
        value(&m, "fleet_messages_ingested_total{kind=\"error\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "fleet_messages_ingested_total{kind=\"ack\"}"),
        2.0
    );
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

    // Detection: three deadlines acted on (how fast is for the benchmarks to say).
    let detected = value(&m, "fleet_detection_latency_seconds_count");
    assert_eq!(detected, 3.0);
    assert_eq!(
        value(&m, "fleet_detection_latency_seconds_bucket{le=\"+Inf\"}"),
        detected
    );

    // Commands: b's service_out acked in time; a's and c's go to silent vehicles and are
    // not judged (b was out already when it went silent: no command). c acks its one, a
    // never does: one command waits.
    assert_eq!(value(&m, "fleet_commands_sent_total"), 3.0);
    assert_eq!(value(&m, "fleet_commands_acked_total{result=\"ok\"}"), 2.0);
    assert_eq!(
        value(&m, "fleet_commands_acked_total{result=\"failed\"}"),
        0.0
    );
    assert_eq!(value(&m, "fleet_acks_unknown_total"), 0.0);
    assert_eq!(value(&m, "fleet_commands_to_silent_total"), 2.0);
    assert_eq!(value(&m, "fleet_commands_unacked"), 1.0);
    for (outcome, n) in [
        ("acked_in_time", 1.0),
        ("acked_late", 0.0),
        ("failed", 0.0),
        ("unacked", 0.0),
    ] {
        assert_eq!(
            value(
                &m,
                &format!("fleet_command_ack_slo_events_total{{outcome=\"{outcome}\"}}")
            ),
            n,
            "{outcome}"
        );
    }
    let acked = value(&m, "fleet_command_ack_latency_seconds_count");
    assert_eq!(acked, 2.0);
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
    // The fleet-in-service SLO: the whole history (seconds) lies inside every window, so
    // every window has the same SLI; all three vehicles were out for most of it (in
    // service at most about a second each), so it is below one half and the burn rate,
    // at most 200 with a 0.5 % budget, is far above the 14.4 of a page.
    let f_slo = "fleet-in-service";
    let sli_30d = value(
        &m,
        &format!("fleet_slo_sli_ratio{{slo=\"{f_slo}\",window=\"30d\"}}"),
    );
    assert!(sli_30d > 0.0 && sli_30d < 0.5, "window SLI {sli_30d}");
    for w in ["5m", "30m", "1h", "6h", "1d", "3d"] {
        let sli = value(
            &m,
            &format!("fleet_slo_sli_ratio{{slo=\"{f_slo}\",window=\"{w}\"}}"),
        );
        assert_close(sli, sli_30d, &format!("{f_slo} SLI over {w}"));
        let burn = value(
            &m,
            &format!("fleet_slo_burn_rate{{slo=\"{f_slo}\",window=\"{w}\"}}"),
        );
        assert_close(
            burn,
            (1.0 - sli_30d) / 0.005,
            &format!("{f_slo} burn over {w}"),
        );
        assert!(
            burn > 100.0 && burn < 200.0,
            "{f_slo} burn over {w}: {burn}"
        );
    }
    // A few vehicle-seconds of a 30-day budget: spent, but only a sliver of it.
    let budget = value(
        &m,
        &format!("fleet_slo_error_budget_remaining_ratio{{slo=\"{f_slo}\"}}"),
    );
    assert!(
        budget > 0.999 && budget < 1.0,
        "{f_slo} budget left {budget}"
    );
    assert_eq!(
        value(
            &m,
            "fleet_slo_sli_ratio{slo=\"fleet-in-service\",window=\"now\"}"
        ),
        0.0
    );
    // Both alerts fired once, at the boundary, and none resolved.
    for (severity, state, n) in [
        ("page", "firing", 1.0),
        ("page", "resolved", 0.0),
        ("ticket", "firing", 1.0),
        ("ticket", "resolved", 0.0),
    ] {
        assert_eq!(
            value(
                &m,
                &format!(
                    "fleet_slo_alert_changes_total{{slo=\"{f_slo}\",severity=\"{severity}\",state=\"{state}\"}}"
                )
            ),
            n,
            "{severity} {state}"
        );
        if state == "firing" {
            assert_eq!(
                value(
                    &m,
                    &format!("fleet_slo_alert_firing{{slo=\"{f_slo}\",severity=\"{severity}\"}}")
                ),
                1.0,
                "{severity} firing"
            );
        }
    }

    // The command-ack SLO: one judged command, acked in time, in every window.
    let a_slo = "command-acks";
    for w in ["5m", "30m", "1h", "6h", "1d", "3d", "30d"] {
        assert_eq!(
            value(
                &m,
                &format!("fleet_slo_sli_ratio{{slo=\"{a_slo}\",window=\"{w}\"}}")
            ),
            1.0,
            "{a_slo} SLI over {w}"
        );
    }
    for w in ["5m", "30m", "1h", "6h", "1d", "3d"] {
        assert_eq!(
            value(
                &m,
                &format!("fleet_slo_burn_rate{{slo=\"{a_slo}\",window=\"{w}\"}}")
            ),
            0.0,
            "{a_slo} burn over {w}"
        );
    }
    assert_eq!(
        value(
            &m,
            &format!("fleet_slo_error_budget_remaining_ratio{{slo=\"{a_slo}\"}}")
        ),
        1.0
    );
    for slo in [f_slo, a_slo] {
        assert_eq!(
            value(&m, &format!("fleet_slo_window_seconds{{slo=\"{slo}\"}}")),
            30.0 * 86_400.0
        );
    }
    assert_eq!(
        value(&m, "fleet_slo_target_ratio{slo=\"fleet-in-service\"}"),
        0.995
    );
    assert_eq!(
        value(&m, "fleet_slo_target_ratio{slo=\"command-acks\"}"),
        0.99
    );
    assert_eq!(
        value(
            &m,
            "fleet_slo_broker_downtime_seconds{slo=\"fleet-in-service\"}"
        ),
        0.0
    );

    // The MQTT front, the queues, the store, the build.
    // Three vehicles connected; their seven publishes (a heartbeat each, b's error, c's
    // malformed heartbeat, two acks) passed the ACL; retained: three service states,
    // fleet/sli and fleet/alerts.
    assert_eq!(value(&m, "fleet_mqtt_connected_clients"), 3.0);
    assert_eq!(value(&m, "fleet_mqtt_uplinks_total"), 7.0);
    assert_eq!(value(&m, "fleet_mqtt_retained_messages"), 5.0);
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
    // At least: three registrations, four transitions, three commands, two acks.
    assert!(value(&m, "fleet_store_records_total") >= 12.0);
    assert_eq!(value(&m, "fleet_store_failing"), 0.0);
    assert!(m.keys().any(|k| k.starts_with("fleet_build_info{version=")));
    drop((a, b, c));
    broker.shutdown().await;
}
