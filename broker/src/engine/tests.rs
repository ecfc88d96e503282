//! The engine on tokio's paused clock, with the MQTT front replaced by the outbound
//! queue: deadlines fire on virtual time, effects come out in order, shutdown drains.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleet_rules::{Fleet, RulesConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;

struct Harness {
    uplinks: mpsc::Sender<Uplink>,
    out: mpsc::Receiver<Outbound>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

fn harness() -> Harness {
    let clock = Clock::starting_at(1_700_000_000_000);
    let fleet = Fleet::new(RulesConfig::default(), clock.now());
    let (out_tx, out) = mpsc::channel(1024);
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(
        fleet,
        clock,
        EngineOptions {
            max_payload: 1024,
            sli_interval: Duration::from_secs(10),
        },
        metrics.clone(),
        out_tx,
    );
    let (uplinks, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let (_ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
        let _ = stopped.await;
    }));
    Harness {
        uplinks,
        out,
        stop,
        task,
        metrics,
    }
}

fn uplink(vehicle: &str, kind: &str, payload: &'static [u8]) -> Uplink {
    Uplink {
        client_id: vehicle.to_owned(),
        topic: format!("vehicles/{vehicle}/{kind}"),
        payload: Bytes::from_static(payload),
    }
}

async fn next_on(out: &mut mpsc::Receiver<Outbound>, topic: &str) -> Outbound {
    loop {
        let m = out.recv().await.expect("engine still publishing");
        if m.topic == topic {
            return m;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_vehicle_is_commanded_out_at_its_deadline_on_virtual_time() {
    let mut h = harness();
    let start = Instant::now();
    h.uplinks
        .send(uplink("v1", "heartbeat", b"{\"battery\":50}"))
        .await
        .expect("engine running");
    let registered = next_on(&mut h.out, "vehicles/v1/service").await;
    assert!(registered.retain);

    let command = next_on(&mut h.out, "vehicles/v1/command").await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(300) && waited < Duration::from_secs(301),
        "commanded after {waited:?}, the default timeout is 5m"
    );
    let json: serde_json::Value = serde_json::from_slice(&command.payload).expect("json");
    assert_eq!(json["command"], "service_out");
    assert_eq!(json["reasons"][0]["kind"], "heartbeat_lost");
    assert!(json["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(command.qos1 && !command.retain);

    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
}

#[tokio::test(start_paused = true)]
async fn effects_of_one_transition_go_out_state_then_event_then_command() {
    let mut h = harness();
    h.uplinks
        .send(uplink("v1", "heartbeat", b""))
        .await
        .expect("engine running");
    let mut topics = Vec::new();
    loop {
        let m = h.out.recv().await.expect("publishing");
        if m.topic == "fleet/sli" {
            continue;
        }
        topics.push(m.topic.clone());
        if m.topic == "vehicles/v1/command" {
            break;
        }
    }
    // Registration's retained state, then the transition: state, event, command.
    assert_eq!(
        topics,
        vec![
            "vehicles/v1/service",
            "vehicles/v1/service",
            "fleet/events",
            "vehicles/v1/command"
        ]
    );
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
}

#[tokio::test(start_paused = true)]
async fn shutdown_handles_every_queued_uplink_before_the_engine_stops() {
    let mut h = harness();
    for i in 0..100 {
        let id = format!("v{i}");
        h.uplinks
            .send(Uplink {
                client_id: id.clone(),
                topic: format!("vehicles/{id}/heartbeat"),
                payload: Bytes::new(),
            })
            .await
            .expect("queued");
    }
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
    let mut registered = 0;
    let mut last_sli = None;
    while let Ok(m) = h.out.try_recv() {
        if m.topic.ends_with("/service") {
            registered += 1;
        } else if m.topic == "fleet/sli" {
            last_sli = Some(m);
        }
    }
    assert_eq!(registered, 100);
    assert_eq!(
        h.metrics
            .heartbeats
            .load(std::sync::atomic::Ordering::Relaxed),
        100
    );
    let sli: serde_json::Value =
        serde_json::from_slice(&last_sli.expect("final SLI published").payload).expect("json");
    assert_eq!(sli["fleet"], 100);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_uplink_is_counted_and_changes_nothing() {
    let mut h = harness();
    h.uplinks
        .send(uplink("v1", "heartbeat", b"{\"battery\":\"lots\"}"))
        .await
        .expect("queued");
    h.uplinks
        .send(uplink("v2", "heartbeat", b""))
        .await
        .expect("queued");
    let registered = next_on(&mut h.out, "vehicles/v2/service").await;
    assert!(registered.retain);
    assert_eq!(h.metrics.rejected("malformed"), 1);
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
    while let Ok(m) = h.out.try_recv() {
        assert_ne!(
            m.topic, "vehicles/v1/service",
            "rejected heartbeat registered v1"
        );
    }
}
