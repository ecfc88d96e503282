//! The burn-rate alerts on the broker's side, on tokio's paused clock: the engine (fed the
//! way the MQTT front feeds it) crosses the SRE Workbook thresholds, publishes each firing
//! and resolved alert retained on `fleet/alerts`, and the metrics say the same.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::parse_metrics;
use fleet_broker::api::prometheus::{render, Scrape};
use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::engine::EngineMetrics;
use fleet_broker::engine::{
    Batch, CommandSlo, Engine, EngineHandle, EngineOptions, PersistOptions, OPS_QUEUE, UPLINK_QUEUE,
};
use fleet_broker::mqtt::{MqttStats, Uplink};
use fleet_broker::slack::SlackMetrics;
use fleet_broker::store::StoreMetrics;
use fleet_rules::{Fleet, UnixMs};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

const MIN: u64 = 60_000;
/// A minute boundary: the rules evaluate alerts per minute.
const T0: UnixMs = 28_333_340 * MIN;

struct Rig {
    clock: Clock,
    uplinks: mpsc::Sender<Uplink>,
    engine: EngineHandle,
    metrics: Arc<EngineMetrics>,
    alerts: mpsc::Receiver<(bool, Value)>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The engine over a fleet of 100 vehicles that never time out, with a brake fault taking
/// a vehicle out at its first report. A stand-in for the store writer runs each batch's
/// replies and hands over what goes to `fleet/alerts` (with its retain flag).
async fn rig() -> Rig {
    let config = Config::parse("[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n")
        .expect("config");
    let mut rules = config.rules();
    rules.heartbeat.timeout = Duration::from_secs(30 * 24 * 3600);
    let clock = Clock::starting_at(T0);
    let metrics = Arc::new(EngineMetrics::default());
    let (batch_tx, mut batches) = mpsc::channel::<Batch>(1024);
    let engine = Engine::new(
        Fleet::new(rules, T0),
        clock,
        EngineOptions {
            topics: Default::default(),
            max_payload: 1024,
            sli_interval: Duration::from_secs(600),
            persist: PersistOptions::default(),
            command_slo: CommandSlo::default(),
            epoch: None,
            journeys: Default::default(),
        },
        metrics.clone(),
        batch_tx,
    );
    let (uplinks, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
        let _ = stopped.await;
    }));
    let (alerts_tx, alerts) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            for m in batch.outbound {
                if m.topic == "fleet/alerts" {
                    let json = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                    let _ = alerts_tx.send((m.retain, json)).await;
                }
            }
            for reply in batch.after {
                reply();
            }
        }
    });
    let rig = Rig {
        clock,
        uplinks,
        engine: EngineHandle::new(ops_tx),
        metrics,
        alerts,
        stop,
        task,
    };
    for i in 0..100 {
        rig.send(i, "heartbeat", "").await;
    }
    rig
}

impl Rig {
    async fn send(&self, i: usize, kind: &str, payload: &'static str) {
        let id = format!("v{i:03}");
        self.uplinks
            .send(Uplink {
                client_id: id.clone(),
                topic: format!("vehicles/{id}/{kind}"),
                payload: payload.into(),
                ack: None,
                journey: None,
            })
            .await
            .expect("engine running");
    }

    /// Alerts published so far: `(retained, payload)`.
    fn published(&mut self) -> Vec<(bool, Value)> {
        let mut out = Vec::new();
        while let Ok(a) = self.alerts.try_recv() {
            out.push(a);
        }
        out
    }

    async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let engine = self.engine.snapshot().await.expect("engine answers");
        parse_metrics(&render(&Scrape {
            engine: &self.metrics,
            snapshot: &engine,
            mqtt: &MqttStats::default(),
            upstream: None,
            store: &StoreMetrics::default(),
            slack: &SlackMetrics::default(),
            queues: &[],
            slo_window: "30d",
            ha: None,
        }))
    }
}

impl Rig {
    /// Sleeps on the paused clock until `at` plus a second (the engine acts on the minute).
    async fn until(&self, at: UnixMs) {
        tokio::time::sleep_until(self.clock.instant_at(at + 1000)).await;
    }
}

fn series(severity: &str) -> String {
    format!("fleet_slo_alert_firing{{slo=\"fleet-in-service\",severity=\"{severity}\"}}")
}

fn changes(severity: &str, state: &str) -> String {
    format!(
        "fleet_slo_alert_changes_total{{slo=\"fleet-in-service\",severity=\"{severity}\",state=\"{state}\"}}"
    )
}

#[tokio::test(start_paused = true)]
async fn a_page_fires_past_fourteen_point_four_resolves_and_both_go_to_fleet_alerts_and_metrics() {
    let mut rig = rig().await;
    // Six good hours, so only the 1h/5m pair can page.
    let bad_from = T0 + 360 * MIN;
    tokio::time::sleep_until(rig.clock.instant_at(bad_from)).await;
    assert!(
        rig.published().is_empty(),
        "no alert while the fleet is fine"
    );
    for i in 0..10 {
        rig.send(i, "error", r#"{"errors":[{"code":"BRAKE_SENSOR"}]}"#)
            .await;
    }

    // 10 % of the fleet out burns 20x a 0.5 % budget: 3d and 6h cross 1x within minutes,
    // a ticket; 1h crosses 14.4x after 44 minutes (43/60 * 20 = 14.33).
    rig.until(bad_from + 43 * MIN).await;
    let early = rig.published();
    assert_eq!(early.len(), 1, "{early:?}");
    let (retained, ticket) = &early[0];
    assert!(*retained);
    assert_eq!(
        (ticket["severity"].as_str(), ticket["state"].as_str()),
        (Some("ticket"), Some("firing"))
    );
    assert_eq!(ticket["firing"], serde_json::json!(["ticket"]));
    let m = rig.metrics().await;
    assert_eq!((m[&series("page")], m[&series("ticket")]), (0.0, 1.0));

    rig.until(bad_from + 44 * MIN).await;
    let fired = rig.published();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (retained, page) = &fired[0];
    assert!(*retained, "fleet/alerts is retained");
    assert_eq!(page["slo"], "fleet-in-service");
    assert_eq!(
        (page["severity"].as_str(), page["state"].as_str()),
        (Some("page"), Some("firing"))
    );
    assert_eq!(page["at"].as_u64(), Some(bad_from + 44 * MIN));
    assert_eq!(page["firing"], serde_json::json!(["page", "ticket"]));
    let h1 = page["burn_rates"]["1h"].as_f64().expect("1h burn rate");
    assert!(h1 > 14.4 && h1 < 15.0, "{h1}");
    assert!(page["burn_rates"]["5m"].as_f64().is_some_and(|b| b > 14.4));
    assert!(page["summary"]
        .as_str()
        .is_some_and(|s| s.starts_with("PAGE:")));
    assert!(page["policy"].as_str().is_some_and(|p| p.contains("14.4")));
    let m = rig.metrics().await;
    assert_eq!(m[&series("page")], 1.0);
    assert_eq!(m[&changes("page", "firing")], 1.0);
    assert_eq!(m[&changes("page", "resolved")], 0.0);
    let burn_1h = "fleet_slo_burn_rate{slo=\"fleet-in-service\",window=\"1h\"}";
    assert!(m[burn_1h] > 14.4);

    // Field checks done just after +50: the vehicles go back; the 5m window still burns 16x
    // at +51 (4 bad minutes of 5) and 12x at +52.
    rig.until(bad_from + 50 * MIN).await;
    for i in 0..10 {
        let outcome = rig
            .engine
            .service_in(&format!("v{i:03}"), "ana", "brake fixed")
            .await
            .expect("engine answers")
            .expect("known vehicle");
        assert!(outcome.remaining.is_empty());
    }
    rig.until(bad_from + 51 * MIN).await;
    assert!(rig.published().is_empty(), "still paging at 16x");
    rig.until(bad_from + 52 * MIN).await;
    let resolved = rig.published();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let (retained, page) = &resolved[0];
    assert!(*retained);
    assert_eq!(
        (page["severity"].as_str(), page["state"].as_str()),
        (Some("page"), Some("resolved"))
    );
    assert_eq!(page["at"].as_u64(), Some(bad_from + 52 * MIN));
    assert_eq!(
        page["firing"],
        serde_json::json!(["ticket"]),
        "the slow burn still tickets"
    );
    assert!(page["summary"]
        .as_str()
        .is_some_and(|s| s.starts_with("RESOLVED PAGE")));
    let m = rig.metrics().await;
    assert_eq!((m[&series("page")], m[&series("ticket")]), (0.0, 1.0));
    assert_eq!(m[&changes("page", "resolved")], 1.0);
    assert_eq!(m[&changes("ticket", "firing")], 1.0);

    let _ = rig.stop.send(());
    rig.task.await.expect("engine ends cleanly");
}
