//! The fleet health broker: an embedded MQTT broker whose rules engine takes shared
//! e-scooters and e-bikes out of service when they go silent or report hardware faults,
//! and measures the fleet's reliability as an SLO.
//!
//! Data flows one way: MQTT uplink -> [`ingest`] -> [`engine`] (rules) -> [`store`]
//! (committed) -> MQTT publishes.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod slack;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Engine, EngineHandle, EngineOptions, Outbound, PersistOptions};
use crate::metrics::{inc, Metrics};
use crate::mqtt::MqttFront;
use crate::store::{Store, StoreMetrics, StoreOptions, WriterHandle};

/// A running broker: the MQTT front, the engine, the store writer, the publisher and the
/// ops HTTP API.
pub struct Broker {
    front: MqttFront,
    api: api::ApiServer,
    engine: EngineHandle,
    metrics: Arc<Metrics>,
    store_metrics: Arc<StoreMetrics>,
    store_path: PathBuf,
    stop_engine: oneshot::Sender<()>,
    engine_task: JoinHandle<()>,
    writer: WriterHandle,
    publisher_task: JoinHandle<()>,
    slack: Option<slack::SenderHandle>,
}

impl Broker {
    /// Opens the store and restores the fleet from it, binds the listener and starts every
    /// component on the current runtime.
    pub async fn start(config: &Config, clock: Clock) -> anyhow::Result<Broker> {
        let slack_settings =
            slack::SlackSettings::from_config(&config.slack).map_err(anyhow::Error::msg)?;
        if slack_settings.is_none() {
            if config.slack.channel.is_some() {
                warn!("[slack] channel is set but there is no bot token ([slack] bot_token or SLACK_BOT_TOKEN): notifications go to the log only");
            } else {
                info!("no [slack] webhook_url or bot_token: notifications go to the log only");
            }
        }
        let metrics = Arc::new(Metrics::default());
        let store_metrics = Arc::new(StoreMetrics::default());
        let (store, recovery) = open_store(config, clock.now()).await?;
        let store_path = store.path().to_owned();
        // Bound before anything runs, so a taken port fails the start cleanly.
        let http_listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for the ops HTTP API on {} ([http] listen)",
                    config.http.listen
                )
            })?;
        let (uplink_tx, uplink_rx) = mpsc::channel(engine::UPLINK_QUEUE);
        let (ops_tx, ops_rx) = mpsc::channel(engine::OPS_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(engine::OUTBOUND_QUEUE);
        let engine_handle = EngineHandle::new(ops_tx);
        let ops_probe = engine_handle.clone();
        let mut queues = vec![
            api::QueueProbe::of("uplink", &uplink_tx),
            api::QueueProbe::from_fn("ops", move || ops_probe.queue_fill()),
            api::QueueProbe::of("outbound", &out_tx),
        ];

        let mqtt_options = config.mqtt_options().map_err(anyhow::Error::msg)?;
        let front = MqttFront::start(mqtt_options, uplink_tx).await?;
        info!(mqtt = %front.local_addr(), "MQTT listening");

        let (batch_tx, batch_rx) = mpsc::channel(store::STORE_QUEUE);
        queues.push(api::QueueProbe::of("store", &batch_tx));
        let writer = store::spawn_writer(store, batch_rx, out_tx, store_metrics.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the store writer thread: {e}"))?;
        let slack_batches = batch_tx.clone();
        let mut engine = Engine::new(
            recovery.fleet,
            clock,
            EngineOptions {
                max_payload: config.mqtt.max_payload,
                sli_interval: config.slo.publish_interval.0,
                persist: PersistOptions {
                    checkpoint_interval: config.store.checkpoint_interval.0,
                    sli_history: sli_history(config),
                    command_log_retention: config.store.command_log_retention.0,
                },
                command_slo: engine::CommandSlo {
                    ack_within: config.slo.command_ack_within.0,
                    target: config.slo.command_ack_target,
                    window: config.slo.window.0,
                },
            },
            metrics.clone(),
            batch_tx,
        );
        let mut slack_sender = None;
        if let Some(settings) = slack_settings {
            let wake = Arc::new(tokio::sync::Notify::new());
            engine = engine.with_slack(slack::EngineOutbox::new(
                &settings,
                wake.clone(),
                metrics.clone(),
            ));
            slack_sender = Some(
                slack::spawn(
                    settings,
                    store_path.clone(),
                    slack_batches,
                    clock,
                    metrics.clone(),
                    engine_handle.clone(),
                    wake,
                )
                .await
                .context("cannot start the Slack notifier")?,
            );
        } else {
            drop(slack_batches);
        }
        if !recovery.changed_at.is_empty() {
            engine.republish_retained_state(recovery.changed_at);
        }
        if let Some(saved_to) = recovery.sli_saved_to {
            engine.resume_sli_history(saved_to);
        }
        let (stop_engine, stopped) = oneshot::channel::<()>();
        let engine_task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
            let _ = stopped.await;
        }));
        let publisher_task = tokio::spawn(publish_all(front.clone(), out_rx, metrics.clone()));
        let api_context = api::ApiContext {
            engine: engine_handle.clone(),
            clock,
            metrics: metrics.clone(),
            store_metrics: store_metrics.clone(),
            mqtt: front.clone(),
            queues,
            token: config.http.token.clone(),
            slo: api::SloSettings {
                target: config.slo.target,
                window: config.slo.window.0,
                maintenance_counts_as_bad: config.slo.maintenance_counts_as_bad,
                command_ack_target: config.slo.command_ack_target,
                command_ack_within: config.slo.command_ack_within.0,
            },
            mds_provider_id: config
                .mds
                .provider_id
                .clone()
                .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_owned()),
            history: api::History::new(store_path.clone()),
        };
        if api_context.token.is_none() {
            warn!("no API token ([http] token or FLEET_API_TOKEN): manual service-in/out through the ops API is refused");
        }
        let api = api::ApiServer::spawn(http_listener, api::router(Arc::new(api_context)))
            .context("cannot serve the ops HTTP API")?;
        Ok(Broker {
            front,
            api,
            engine: engine_handle,
            metrics,
            store_metrics,
            store_path,
            stop_engine,
            engine_task,
            writer,
            publisher_task,
            slack: slack_sender,
        })
    }

    /// The store's counters.
    pub fn store_metrics(&self) -> &Arc<StoreMetrics> {
        &self.store_metrics
    }

    /// The database file (for read-only access through [`store::StoreReader`]).
    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    /// The MQTT listener's address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// The ops HTTP API's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.api.local_addr()
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

    /// Graceful stop: the ops API finishes the requests in flight, the engine handles what
    /// is queued and hands over its last effects and a final checkpoint, the store writer commits them and flushes the file, the
    /// publisher drains, then the listener closes.
    pub async fn shutdown(self) {
        // The API first: requests in flight still get their answers from the engine.
        self.api.shutdown().await;
        let _ = self.stop_engine.send(());
        if let Err(e) = self.engine_task.await {
            warn!("engine task ended abnormally: {e}");
        }
        // The sender writes through the store writer too: it stops before the writer.
        if let Some(slack) = self.slack {
            slack.shutdown().await;
        }
        let writer = self.writer;
        if let Err(e) = tokio::task::spawn_blocking(move || writer.join()).await {
            warn!("store writer ended abnormally: {e}");
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

/// The SLI minutes kept: the SLO window, and never less than the longest burn window.
fn sli_history(config: &Config) -> std::time::Duration {
    config
        .slo
        .window
        .0
        .max(std::time::Duration::from_secs(3 * 24 * 3600))
}

/// Opens the store (off the async threads: it reads the whole fleet) and rebuilds the
/// fleet from it.
async fn open_store(
    config: &Config,
    now: fleet_rules::UnixMs,
) -> anyhow::Result<(Store, store::Recovery)> {
    let opts = StoreOptions {
        path: config.store.path.clone(),
        synchronous: config.store.synchronous,
    };
    let rules = config.rules();
    let history_minutes = sli_history(config).as_secs() / 60 + 1;
    let downtime_is_bad = config.slo.downtime_counts_as_bad;
    let started = tokio::time::Instant::now();
    let (store, recovery) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&opts)?;
        let restored =
            store.load(fleet_rules::Fleet::minute_of(now).saturating_sub(history_minutes))?;
        let recovery = store::recover(rules, restored, now, downtime_is_bad);
        Ok::<_, store::StoreError>((store, recovery))
    })
    .await??;
    info!(
        path = %store.path().display(),
        vehicles = recovery.vehicles,
        out_of_service = recovery.out_of_service,
        decommissioned = recovery.decommissioned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store opened, fleet restored"
    );
    if recovery.downtime_ms > 0 {
        warn!(
            downtime = %humantime::format_duration(std::time::Duration::from_millis(recovery.downtime_ms)),
            downtime_ms = recovery.downtime_ms,
            clean_stop = recovery.clean_stop,
            counted_as_bad = downtime_is_bad,
            "the broker was down: the gap is marked as downtime in the SLI history (fleet/sli downtime_ms)"
        );
    }
    Ok((store, recovery))
}
