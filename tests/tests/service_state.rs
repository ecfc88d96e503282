//! End to end: real MQTT vehicles and observers against the broker on a free port, with
//! second-scale timeouts. Each test is one case of DESIGN.md's state machine.

use std::time::Duration;

use fleet_tests::{start, test_config, Observer, WAIT};
use sim_device::{Vehicle, VehicleOptions};

const FAST: &str = "[heartbeat]\ntimeout = \"1s\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n";

fn reason_kinds(json: &serde_json::Value) -> Vec<String> {
    json["reasons"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the engine until the vehicle exists and `ready` holds for it.
async fn wait_for_vehicle(
    broker: &fleet_broker::Broker,
    id: &str,
    mut ready: impl FnMut(&fleet_rules::VehicleView) -> bool,
) -> fleet_rules::VehicleView {
    tokio::time::timeout(WAIT, async {
        loop {
            let view = broker.engine().vehicle(id).await.expect("engine running");
            if let Some(view) = view.filter(|v| ready(v)) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("vehicle {id} did not reach the expected state"))
}

#[tokio::test]
async fn a_silent_vehicle_goes_out_for_heartbeat_lost_and_comes_back_with_its_next_heartbeat() {
    let broker = start(&test_config(FAST)).await;
    let mut events = Observer::connect(broker.mqtt_addr(), &["fleet/events"]).await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "scooter-1", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.heartbeat().await.expect("heartbeat");

    let out = v.next_command(WAIT).await.expect("service_out arrives");
    assert_eq!(out.command, "service_out");
    assert_eq!(out.reasons[0]["kind"], "heartbeat_lost");
    let lost = events
        .wait_for("comms_lost event", |s| s.json["vehicle"] == "scooter-1")
        .await;
    assert_eq!(lost.json["to"], "out_of_service");
    assert_eq!(lost.json["mds"]["event_types"][0], "comms_lost");
    assert_eq!(lost.json["mds"]["vehicle_state"], "non_contactable");

    v.heartbeat().await.expect("heartbeat");
    let back = v.next_command(WAIT).await.expect("service_in arrives");
    assert_eq!(back.command, "service_in");
    assert!(back.reasons.is_empty());
    let restored = events
        .wait_for("comms_restored event", |s| s.json["vehicle"] == "scooter-1")
        .await;
    assert_eq!(restored.json["mds"]["event_types"][0], "comms_restored");
    assert_eq!(restored.json["to"], "in_service");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_fault_over_threshold_takes_the_vehicle_out_and_heartbeats_do_not_bring_it_back() {
    let broker = start(&test_config(
        "[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n",
    ))
    .await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "scooter-2", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    // One report is under the threshold: still in service.
    let view = wait_for_vehicle(&broker, "scooter-2", |v| {
        v.error_counts
            .iter()
            .any(|(code, n)| code == "BRAKE_SENSOR" && *n == 1)
    })
    .await;
    assert!(view.reasons.is_empty(), "{view:?}");

    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    let out = v.next_command(WAIT).await.expect("service_out arrives");
    assert_eq!(out.command, "service_out");
    assert_eq!(out.reasons[0]["kind"], "hardware_fault");
    assert_eq!(out.reasons[0]["code"], "BRAKE_SENSOR");

    for _ in 0..5 {
        v.heartbeat().await.expect("heartbeat");
    }
    assert_eq!(v.next_command(Duration::from_millis(700)).await, None);
    let view = broker
        .engine()
        .vehicle("scooter-2")
        .await
        .expect("engine")
        .expect("known vehicle");
    assert_eq!(view.state, fleet_rules::ServiceState::OutOfService);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_faulted_vehicle_that_goes_silent_and_resumes_stays_out_without_a_service_in() {
    let broker = start(&test_config(FAST)).await;
    let mut events = Observer::connect(broker.mqtt_addr(), &["fleet/events"]).await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "scooter-3", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.error("BRAKE_SENSOR", 2).await.expect("error report");
    assert_eq!(
        v.next_command(WAIT).await.expect("service_out").command,
        "service_out"
    );
    let lost = events
        .wait_for("heartbeat_lost set", |s| {
            s.json["change"] == "set" && s.json["reason"]["kind"] == "heartbeat_lost"
        })
        .await;
    assert_eq!(lost.json["from"], "out_of_service");

    v.heartbeat().await.expect("heartbeat");
    let cleared = events
        .wait_for("heartbeat_lost cleared", |s| {
            s.json["change"] == "cleared" && s.json["reason"]["kind"] == "heartbeat_lost"
        })
        .await;
    assert_eq!(cleared.json["to"], "out_of_service");
    assert_eq!(reason_kinds(&cleared.json), vec!["hardware_fault"]);
    assert_eq!(v.next_command(Duration::from_millis(500)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn manual_service_in_of_a_silent_vehicle_clears_the_fault_but_leaves_it_out() {
    let broker = start(&test_config(FAST)).await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "scooter-4", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.error("BRAKE_SENSOR", 2).await.expect("error report");
    assert_eq!(
        v.next_command(WAIT).await.expect("service_out").command,
        "service_out"
    );
    // Wait until the rules have found it silent.
    wait_for_vehicle(&broker, "scooter-4", |v| v.reasons.len() == 2).await;

    let outcome = broker
        .engine()
        .service_in("scooter-4", "aiko", "brake checked in the field")
        .await
        .expect("engine")
        .expect("known vehicle");
    assert_eq!(outcome.state, fleet_rules::ServiceState::OutOfService);
    assert!(matches!(
        outcome.remaining.as_slice(),
        [fleet_rules::Reason::HeartbeatLost { .. }]
    ));
    assert!(matches!(
        outcome.cleared.as_slice(),
        [fleet_rules::Reason::HardwareFault { .. }]
    ));
    assert_eq!(v.next_command(Duration::from_millis(500)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_retained_service_state_and_the_sli() {
    // The default 5-minute timeout: the only state change is the fault.
    let broker = start(&test_config(
        "[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n",
    ))
    .await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "scooter-5", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.error("BRAKE_SENSOR", 2).await.expect("error report");
    assert_eq!(
        v.next_command(WAIT).await.expect("service_out").command,
        "service_out"
    );

    let mut late = Observer::connect(
        broker.mqtt_addr(),
        &["vehicles/scooter-5/service", "fleet/sli"],
    )
    .await;
    let state = late
        .wait_for("retained service state", |s| {
            s.topic == "vehicles/scooter-5/service" && s.json["state"] == "out_of_service"
        })
        .await;
    assert!(state.retain, "delivered as retained");
    assert!(reason_kinds(&state.json).contains(&"hardware_fault".to_owned()));
    assert!(state.json["changed_at"].as_u64().is_some());

    let sli = late
        .wait_for("fleet/sli with the vehicle counted", |s| {
            s.topic == "fleet/sli" && s.json["fleet"] == 1
        })
        .await;
    assert_eq!(sli.json["in_service"], 0);
    assert_eq!(sli.json["fraction"], 0.0);
    assert_eq!(sli.json["slo_target"], 0.995);
    for key in ["5m", "30m", "1h", "6h", "1d", "3d"] {
        assert!(sli.json["burn_rates"][key].is_number(), "burn rate {key}");
    }
    assert!(sli.json["error_budget_remaining"].is_number());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_backend_subscribing_late_receives_every_vehicles_retained_state() {
    let broker = start(&test_config("")).await;
    const N: usize = 200;
    let mut fleet = Vec::with_capacity(N);
    for i in 0..N {
        let v = Vehicle::connect(
            broker.mqtt_addr(),
            &format!("r-{i:03}"),
            VehicleOptions::default(),
        )
        .await
        .expect("vehicle connects");
        v.heartbeat().await.expect("heartbeat");
        fleet.push(v);
    }
    wait_for_vehicle(&broker, &format!("r-{:03}", N - 1), |_| true).await;
    let engine = broker.engine().clone();
    tokio::time::timeout(WAIT, async {
        while engine.sli().await.expect("engine").fleet < N {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every vehicle registered");

    let mut backend = Observer::connect(broker.mqtt_addr(), &["vehicles/+/service"]).await;
    let expected: std::collections::BTreeSet<String> = (0..N)
        .map(|i| format!("vehicles/r-{i:03}/service"))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let s = backend
            .wait_for("one retained state per vehicle", |s| s.retain)
            .await;
        assert_eq!(s.json["state"], "in_service", "{}: {}", s.topic, s.json);
        seen.insert(s.topic);
    }
    assert_eq!(seen, expected);
    broker.shutdown().await;
}
