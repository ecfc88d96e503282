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
    metrics: Arc<EngineMetrics>,
    records: mpsc::UnboundedReceiver<Record>,
    ops: EngineHandle,
}

/// Stands in for the store writer: records are dropped, announcements forwarded in order.
fn forward_without_storing(
    mut batches: mpsc::Receiver<Batch>,
    out: mpsc::Sender<Outbound>,
    records: mpsc::UnboundedSender<Record>,
) {
    tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            for r in batch.records {
                let _ = records.send(r);
            }
            for m in batch.outbound {
                let _ = out.send(m).await;
            }
            for after in batch.after {
                after();
            }
        }
    });
}

/// An engine whose batches come out on the returned receiver (no store behind it).
fn engine(metrics: Arc<EngineMetrics>) -> (Engine, mpsc::Receiver<Batch>) {
    let clock = Clock::starting_at(1_700_000_000_000);
    let fleet = Fleet::new(RulesConfig::default(), clock.now());
    let (batch_tx, batch_rx) = mpsc::channel(crate::store::STORE_QUEUE);
    let engine = Engine::new(
        fleet,
        clock,
        EngineOptions {
            topics: Default::default(),
            max_payload: 1024,
            sli_interval: Duration::from_secs(10),
            persist: PersistOptions::default(),
            command_slo: CommandSlo::default(),
            epoch: None,
            journeys: Default::default(),
        },
        metrics,
        batch_tx,
    );
    (engine, batch_rx)
}

fn harness() -> Harness {
    let metrics = Arc::new(EngineMetrics::default());
    let (engine, batch_rx) = engine(metrics.clone());
    let (out_tx, out) = mpsc::channel(1024);
    let (records_tx, records) = mpsc::unbounded_channel();
    forward_without_storing(batch_rx, out_tx, records_tx);
    let (uplinks, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
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
        records,
        ops: EngineHandle::new(ops_tx),
    }
}

fn records_so_far(h: &mut Harness) -> Vec<Record> {
    drain_records(&mut h.records)
}

fn drain_records(records: &mut mpsc::UnboundedReceiver<Record>) -> Vec<Record> {
    let mut out = Vec::new();
    while let Ok(r) = records.try_recv() {
        out.push(r);
    }
    out
}

fn uplink(vehicle: &str, kind: &str, payload: &'static [u8]) -> Uplink {
    Uplink {
        client_id: vehicle.to_owned(),
        topic: format!("vehicles/{vehicle}/{kind}"),
        payload: Bytes::from_static(payload),
        ack: None,
        journey: None,
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
async fn the_sli_report_is_computed_at_most_once_a_second_between_publishes_of_a_steady_fleet() {
    let mut h = harness();
    // 20 s of heartbeats from a steady fleet, a batch every 10 ms: fleet/sli is due every
    // 10 s and nothing changes, so the report is needed about once a second, not per batch.
    for i in 0..2000 {
        let vehicle = ["v1", "v2", "v3"][i % 3];
        h.uplinks
            .send(uplink(vehicle, "heartbeat", b""))
            .await
            .expect("engine running");
        tokio::time::sleep(Duration::from_millis(10)).await;
        while h.out.try_recv().is_ok() {}
    }
    let computed = h
        .metrics
        .sli_reports
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (15..=25).contains(&computed),
        "{computed} SLI reports over 20 s of 2,000 batches"
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
                ack: None,
                journey: None,
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

#[tokio::test(start_paused = true)]
async fn a_transition_and_its_command_are_handed_to_the_store_before_they_are_announced() {
    let mut h = harness();
    h.uplinks
        .send(uplink("v1", "heartbeat", b""))
        .await
        .expect("engine running");
    next_on(&mut h.out, "vehicles/v1/command").await;
    // The forwarder passes records on before the batch's messages: all are here already.
    let records = records_so_far(&mut h);
    let kinds: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Registered { .. } => Some("registered"),
            Record::Transition(..) => Some("transition"),
            Record::CommandSent { .. } => Some("command"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["registered", "transition", "command"]);
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
}

#[tokio::test(start_paused = true)]
async fn an_operators_answer_waits_until_the_batch_with_its_transition_is_stored() {
    let metrics = Arc::new(EngineMetrics::default());
    let (engine, mut batches) = engine(metrics);
    let (uplinks, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
        let _ = stopped.await;
    }));
    let ops = EngineHandle::new(ops_tx);
    uplinks
        .send(uplink("v1", "heartbeat", b""))
        .await
        .expect("engine running");
    // Registration: store it (run its after-commit work), so v1 exists.
    let mut stored = Vec::new();
    while !stored
        .iter()
        .any(|r| matches!(r, Record::Registered { .. }))
    {
        let batch = batches.recv().await.expect("a batch");
        stored.extend(batch.records);
        batch.after.into_iter().for_each(|after| after());
    }
    let asking = tokio::spawn(async move { ops.service_out("v1", "ana", "bell").await });
    let batch = loop {
        let batch = batches.recv().await.expect("a batch");
        if batch
            .records
            .iter()
            .any(|r| matches!(r, Record::Transition(..)))
        {
            break batch;
        }
        batch.after.into_iter().for_each(|after| after());
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !asking.is_finished(),
        "the operator was answered before the transition was stored"
    );
    batch.after.into_iter().for_each(|after| after());
    let answer = asking.await.expect("asked").expect("engine running");
    assert_eq!(answer, Ok(fleet_rules::ServiceState::OutOfService));
    let _ = stop.send(());
    drop(uplinks);
    while let Some(batch) = batches.recv().await {
        batch.after.into_iter().for_each(|after| after());
    }
    task.await.expect("engine ends cleanly");
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_not_stored_one_by_one_but_checkpointed_with_the_latest_last_seen() {
    let mut h = harness();
    for _ in 0..5 {
        h.uplinks
            .send(uplink("v1", "heartbeat", b"{\"model\":\"e-bike\"}"))
            .await
            .expect("engine running");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seen_before: usize = records_so_far(&mut h)
        .iter()
        .filter(|r| matches!(r, Record::Seen(_)))
        .count();
    assert_eq!(seen_before, 0, "a checkpoint before its interval");
    tokio::time::sleep(PersistOptions::default().checkpoint_interval).await;
    let checkpoints: Vec<Vec<fleet_rules::VehicleView>> = records_so_far(&mut h)
        .into_iter()
        .filter_map(|r| match r {
            Record::Seen(views) => Some(views),
            _ => None,
        })
        .collect();
    assert_eq!(checkpoints.len(), 1);
    let v1 = &checkpoints[0][0];
    assert_eq!(v1.last_seen, 1_700_000_000_000 + 4_000);
    assert_eq!(v1.model.as_deref(), Some("e-bike"));
    let _ = h.ops.vehicle("v1").await;
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_clean_stop_writes_a_final_checkpoint_the_sli_history_and_the_stop_mark() {
    let mut h = harness();
    h.uplinks
        .send(uplink("v1", "heartbeat", b""))
        .await
        .expect("engine running");
    next_on(&mut h.out, "vehicles/v1/service").await;
    let _ = h.stop.send(());
    h.task.await.expect("engine ends cleanly");
    tokio::task::yield_now().await;
    let records = drain_records(&mut h.records);
    let tail: Vec<&str> = records
        .iter()
        .rev()
        .take(3)
        .map(|r| match r {
            Record::Seen(_) => "seen",
            Record::Sli { .. } => "sli",
            Record::Stopped { .. } => "stopped",
            _ => "other",
        })
        .collect();
    assert_eq!(tail, ["stopped", "sli", "seen"]);
}

#[tokio::test(start_paused = true)]
async fn checkpoints_keep_one_chunk_with_the_store_writer_and_a_stop_stays_bounded() {
    let metrics = Arc::new(EngineMetrics::default());
    let (engine, mut batch_rx) = engine(metrics);
    // A writer that holds every batch with a checkpoint chunk until the test lets it go,
    // and is done with every other batch at once.
    let (held_tx, mut held) = mpsc::unbounded_channel::<Batch>();
    tokio::spawn(async move {
        while let Some(batch) = batch_rx.recv().await {
            if batch.records.iter().any(|r| matches!(r, Record::Seen(_))) {
                let _ = held_tx.send(batch);
            } else {
                for after in batch.after {
                    after();
                }
            }
        }
    });
    let (uplinks, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let (_ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
        let _ = stopped.await;
    }));
    let fleet = 3 * persist::SCAN_CHUNK;
    let ids: Vec<String> = (0..fleet).map(|i| format!("v{i:05}")).collect();
    for id in &ids {
        let up = uplink(id, "heartbeat", b"");
        uplinks.send(up).await.expect("engine running");
    }
    tokio::time::sleep(PersistOptions::default().checkpoint_interval + Duration::from_secs(1))
        .await;

    let mut checkpointed = 0;
    for chunk in 1..=3 {
        let batch = held.recv().await.expect("a checkpoint chunk");
        // However long the writer takes, the engine scans no further chunk meanwhile.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            held.try_recv().is_err(),
            "chunk {chunk}: a second one was queued"
        );
        for r in &batch.records {
            if let Record::Seen(views) = r {
                assert!(views.len() <= persist::SCAN_CHUNK);
                checkpointed += views.len();
            }
        }
        drop(batch); // stored or given up: either way the next chunk may go
    }
    assert_eq!(checkpointed, fleet, "every vehicle checkpointed once");

    // Every vehicle heard from again, then a stop while the writer keeps every chunk (as a
    // store that cannot be written does): the final checkpoint waits for its first chunk
    // a bounded time, then queues the rest, and the engine ends.
    for id in &ids {
        let up = uplink(id, "heartbeat", b"");
        uplinks.send(up).await.expect("engine running");
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the stop is bounded with a writer that never finishes")
        .expect("engine ends cleanly");
    let mut at_stop = 0;
    while let Ok(batch) = held.try_recv() {
        for r in &batch.records {
            if let Record::Seen(views) = r {
                at_stop += views.len();
            }
        }
    }
    assert_eq!(at_stop, fleet, "the final checkpoint covers every vehicle");
}
