//! End to end: real MQTT vehicles and observers against the broker, with second-scale
//! timeouts. Each case of DESIGN.md's state machine runs twice: against the embedded
//! broker, and attached to a real Mosquitto that enforces the ACL `fleet-broker acl --for
//! mosquitto` prints (module `attached`).

use std::time::Duration;

use fleet_tests::upstream::{Mode, Rig};
use fleet_tests::WAIT;
use sim_device::Vehicle;

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

/// The rig for `mode` with users for `ids`; `None`: skip (Mosquitto missing outside CI).
async fn rig(mode: Mode, extra: &str, ids: &[&str]) -> Option<Rig> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    Rig::start(mode, extra, &ids).await
}

async fn vehicle(rig: &Rig, id: &str) -> Vehicle {
    Vehicle::connect(rig.mqtt(), id, rig.vehicle(id))
        .await
        .expect("vehicle connects")
}

/// Each case as a test against the embedded broker and one against attach mode.
macro_rules! in_both_modes {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $case() {
                super::$case(fleet_tests::upstream::Mode::Embedded).await
            })*
        }
        mod attached {
            $(#[tokio::test]
            async fn $case() {
                super::$case(fleet_tests::upstream::Mode::Attached).await
            })*
        }
    };
}

in_both_modes!(
    a_silent_vehicle_goes_out_for_heartbeat_lost_and_comes_back_with_its_next_heartbeat,
    a_fault_over_threshold_takes_the_vehicle_out_and_heartbeats_do_not_bring_it_back,
    a_faulted_vehicle_that_goes_silent_and_resumes_stays_out_without_a_service_in,
    manual_service_in_of_a_silent_vehicle_clears_the_fault_but_leaves_it_out,
    a_late_subscriber_gets_the_retained_service_state_and_the_sli,
    a_backend_subscribing_late_receives_every_vehicles_retained_state,
    a_vehicle_cannot_speak_for_another,
);

async fn a_silent_vehicle_goes_out_for_heartbeat_lost_and_comes_back_with_its_next_heartbeat(
    mode: Mode,
) {
    let Some(rig) = rig(mode, FAST, &["scooter-1"]).await else {
        return;
    };
    let mut events = rig.observer(&["fleet/events"]).await;
    let mut v = vehicle(&rig, "scooter-1").await;
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
    rig.shutdown().await;
}

async fn a_fault_over_threshold_takes_the_vehicle_out_and_heartbeats_do_not_bring_it_back(
    mode: Mode,
) {
    let Some(rig) = rig(
        mode,
        "[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n",
        &["scooter-2"],
    )
    .await
    else {
        return;
    };
    let broker = &rig.broker;
    let mut v = vehicle(&rig, "scooter-2").await;
    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    // One report is under the threshold: still in service.
    let view = wait_for_vehicle(broker, "scooter-2", |v| {
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
    rig.shutdown().await;
}

async fn a_faulted_vehicle_that_goes_silent_and_resumes_stays_out_without_a_service_in(mode: Mode) {
    let Some(rig) = rig(mode, FAST, &["scooter-3"]).await else {
        return;
    };
    let mut events = rig.observer(&["fleet/events"]).await;
    let mut v = vehicle(&rig, "scooter-3").await;
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
    rig.shutdown().await;
}

async fn manual_service_in_of_a_silent_vehicle_clears_the_fault_but_leaves_it_out(mode: Mode) {
    let Some(rig) = rig(mode, FAST, &["scooter-4"]).await else {
        return;
    };
    let broker = &rig.broker;
    let mut v = vehicle(&rig, "scooter-4").await;
    v.error("BRAKE_SENSOR", 2).await.expect("error report");
    assert_eq!(
        v.next_command(WAIT).await.expect("service_out").command,
        "service_out"
    );
    // Wait until the rules have found it silent.
    wait_for_vehicle(broker, "scooter-4", |v| v.reasons.len() == 2).await;

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
    rig.shutdown().await;
}

async fn a_late_subscriber_gets_the_retained_service_state_and_the_sli(mode: Mode) {
    // The default 5-minute timeout: the only state change is the fault.
    let Some(rig) = rig(
        mode,
        "[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n",
        &["scooter-5"],
    )
    .await
    else {
        return;
    };
    let mut v = vehicle(&rig, "scooter-5").await;
    v.error("BRAKE_SENSOR", 2).await.expect("error report");
    assert_eq!(
        v.next_command(WAIT).await.expect("service_out").command,
        "service_out"
    );

    let mut late = rig
        .observer(&["vehicles/scooter-5/service", "fleet/sli"])
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
    rig.shutdown().await;
}

async fn a_backend_subscribing_late_receives_every_vehicles_retained_state(mode: Mode) {
    const N: usize = 200;
    let ids: Vec<String> = (0..N).map(|i| format!("r-{i:03}")).collect();
    let Some(rig) = Rig::start(mode, "", &ids).await else {
        return;
    };
    let broker = &rig.broker;
    let mut fleet = Vec::with_capacity(N);
    for id in &ids {
        let v = vehicle(&rig, id).await;
        v.heartbeat().await.expect("heartbeat");
        fleet.push(v);
    }
    wait_for_vehicle(broker, &ids[N - 1], |_| true).await;
    let engine = broker.engine().clone();
    tokio::time::timeout(WAIT, async {
        while engine.sli().await.expect("engine").fleet < N {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every vehicle registered");
    // The retained states are published behind the store: wait for them upstream too.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut backend = rig.observer(&["vehicles/+/service"]).await;
    let expected: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| format!("vehicles/{id}/service"))
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
    rig.shutdown().await;
}

/// A vehicle publishing on another vehicle's heartbeat topic: the embedded ACL refuses it,
/// and in attach mode so does the upstream's (the broker takes the id from the topic).
async fn a_vehicle_cannot_speak_for_another(mode: Mode) {
    let Some(rig) = rig(mode, FAST, &["scooter-6", "scooter-7"]).await else {
        return;
    };
    let broker = &rig.broker;
    let honest = vehicle(&rig, "scooter-6").await;
    honest.heartbeat().await.expect("heartbeat");
    wait_for_vehicle(broker, "scooter-6", |_| true).await;
    let spoofer = vehicle(&rig, "scooter-7").await;
    spoofer
        .publish_to("vehicles/scooter-6/heartbeat", b"{}".to_vec())
        .await
        .expect("publish sent");
    spoofer.heartbeat().await.expect("its own heartbeat");
    // Its own heartbeat, sent after the spoof, arrives: the spoof had its chance.
    wait_for_vehicle(broker, "scooter-7", |_| true).await;
    // scooter-6 goes silent and out: nobody kept it alive.
    wait_for_vehicle(broker, "scooter-6", |v| {
        v.state == fleet_rules::ServiceState::OutOfService
    })
    .await;
    let heartbeats = broker
        .metrics()
        .heartbeats
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        heartbeats, 2,
        "only the two honest heartbeats were ingested"
    );
    rig.shutdown().await;
}
