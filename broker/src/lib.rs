//! The fleet health broker: an embedded MQTT broker whose rules engine takes shared
//! e-scooters and e-bikes out of service when they go silent or report hardware faults,
//! and measures the fleet's reliability as an SLO.
//!
//! Data flows one way: MQTT uplink -> [`ingest`] -> [`engine`] (rules) -> MQTT publishes.

pub mod clock;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod mqtt;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Engine, EngineHandle, EngineOptions, Outbound};
use crate::metrics::{inc, Metrics};
use crate::mqtt::{MqttFront, MqttOptions};

/// A running broker: the MQTT front, the engine and the publisher.
pub struct Broker {
    front: MqttFront,
    engine: EngineHandle,
    metrics: Arc<Metrics>,
    stop_engine: oneshot::Sender<()>,
    engine_task: JoinHandle<()>,
    publisher_task: JoinHandle<()>,
}

impl Broker {
    /// Binds the listener and starts every component on the current runtime.
    pub async fn start(config: &Config, clock: Clock) -> anyhow::Result<Broker> {
        warn_about_sections_not_served_yet(config);
        let metrics = Arc::new(Metrics::default());
        let (uplink_tx, uplink_rx) = mpsc::channel(engine::UPLINK_QUEUE);
        let (ops_tx, ops_rx) = mpsc::channel(engine::OPS_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(engine::OUTBOUND_QUEUE);

        let front = MqttFront::start(
            MqttOptions {
                listen: config.mqtt.listen,
                max_payload: config.mqtt.max_payload,
                max_connections: config.mqtt.max_connections,
                ..MqttOptions::default()
            },
            uplink_tx,
        )
        .await?;
        info!(mqtt = %front.local_addr(), "MQTT listening");

        let fleet = fleet_rules::Fleet::new(config.rules(), clock.now());
        let engine = Engine::new(
            fleet,
            clock,
            EngineOptions {
                max_payload: config.mqtt.max_payload,
                sli_interval: config.slo.publish_interval.0,
            },
            metrics.clone(),
            out_tx,
        );
        let (stop_engine, stopped) = oneshot::channel::<()>();
        let engine_task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
            let _ = stopped.await;
        }));
        let publisher_task = tokio::spawn(publish_all(front.clone(), out_rx, metrics.clone()));
        Ok(Broker {
            front,
            engine: EngineHandle::new(ops_tx),
            metrics,
            stop_engine,
            engine_task,
            publisher_task,
        })
    }

    /// The MQTT listener's address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// Ask the engine.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The MQTT front's counters.
    pub fn mqtt_stats(&self) -> mqtt::MqttStats {
        self.front.stats()
    }

    /// Graceful stop: the engine handles what is queued and publishes its last effects,
    /// the publisher drains, then the listener closes.
    pub async fn shutdown(self) {
        let _ = self.stop_engine.send(());
        if let Err(e) = self.engine_task.await {
            warn!("engine task ended abnormally: {e}");
        }
        if let Err(e) = self.publisher_task.await {
            warn!("publisher task ended abnormally: {e}");
        }
        self.front.shutdown().await;
        info!("broker stopped");
    }
}

async fn publish_all(front: MqttFront, mut out: mpsc::Receiver<Outbound>, metrics: Arc<Metrics>) {
    while let Some(m) = out.recv().await {
        if let Err(e) = front
            .publish(&m.topic, m.payload.into(), m.qos1, m.retain)
            .await
        {
            inc(&metrics.publish_errors);
            warn!(topic = %m.topic, "publish failed: {e}");
        }
    }
}

fn warn_about_sections_not_served_yet(config: &Config) {
    let defaults = Config::default();
    if config.http.token.is_some() || config.http.listen != defaults.http.listen {
        warn!("[http] is accepted but the ops HTTP API is not served by this version");
    }
    if config.store.path != defaults.store.path {
        warn!("[store] is accepted but state is kept in memory by this version");
    }
    if config.slack.webhook_url.is_some() || config.slack.bot_token.is_some() {
        warn!("[slack] is accepted but notifications go to the log in this version");
    }
}
