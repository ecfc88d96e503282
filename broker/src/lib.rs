//! The fleet health broker: an embedded MQTT broker whose rules engine takes shared
//! e-scooters and e-bikes out of service when they go silent or report hardware faults,
//! and measures the fleet's reliability as an SLO.
//!
//! Data flows one way: MQTT uplink -> [`ingest`] -> [`engine`] (rules) -> [`store`]
//! (committed) -> MQTT publishes. The module map, with the direction of every dependency,
//! is in docs/architecture.md.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod ha;
pub mod ingest;
pub mod journeys;
pub mod metrics;
pub mod mqtt;
pub mod slack;
pub mod store;

/// The MQTT contract (its own crate, shared with the simulated fleet).
pub use fleet_contract as contract;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, Settings};
use crate::engine::{Batch, Engine, EngineHandle, EngineMetrics, Outbound};
use crate::metrics::inc;
use crate::mqtt::upstream::{Upstream, UpstreamError};
use crate::mqtt::{Front, MqttError, MqttFront};
use crate::slack::SlackMetrics;
use crate::store::{Location, Store, StoreError, StoreMetrics, StoreOptions, WriterHandle};

/// Why the broker did not start. Whatever had started is stopped again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has problems (each with its key path, as `check-config` lists).
    #[error("the configuration has {} problem(s):\n{}", .0.len(), .0)]
    Config(ConfigErrors),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The MQTT listener could not start.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// Attach mode could not start.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The ops HTTP API's port could not be bound.
    #[error("cannot listen for the ops HTTP API on {addr} ([http] listen): {source}")]
    HttpListen {
        /// `[http] listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A thread or task could not be started.
    #[error("cannot start the {what}: {source}")]
    Spawn {
        /// Which one.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The Slack notifier could not start.
    #[error("cannot start the Slack notifier: {0}")]
    Slack(#[from] slack::SenderError),
    /// Opening the store did not finish (its thread panicked).
    #[error("opening the store failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the broker with `config` until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: &Config,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let settings = config.settings().map_err(StartError::Config)?;
    if let Some(ha) = settings.ha.clone() {
        return run_as_pair(settings, ha, clock, shutdown).await;
    }
    let broker = Broker::start_with(settings, clock).await?;
    shutdown.await;
    info!("shutdown requested: draining");
    broker.shutdown().await;
    Ok(())
}

/// One engine of an active/standby pair: stands by until it holds the lease, then runs
/// the broker with its store fenced by the lease's epoch; when the lease is lost it
/// refuses every further write at once (nothing more is stored or announced), stops the
/// broker and stands by again. A clean stop releases the lease, so a standby takes over
/// at its next attempt. While standing by it serves a standby's ops API and, in attach
/// mode, watches the uplinks, whose last-seen times the fleet restored at a takeover
/// starts from.
async fn run_as_pair(
    settings: Settings,
    ha: config::HaSettings,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let Some(epoch) = settings.store.fence.as_ref().map(|f| f.epoch.clone()) else {
        return Err(StartError::Config(config::ConfigErrors(vec![
            config::Problem {
                key: "ha.node".into(),
                message: "the store is not fenced by the lease".into(),
            },
        ])));
    };
    let node = ha.target.node.clone();
    // Whether this engine sees the fleet: embedded, always; attached, while its link (or
    // as a standby its watch) is up.
    let eyes = Arc::new(std::sync::atomic::AtomicBool::new(
        settings.attach.is_none(),
    ));
    let lease = crate::ha::run(ha.target.clone(), ha.timings, eyes.clone());
    let status = crate::ha::Status::new(node.clone(), lease.role());
    let mut role = lease.role();
    tokio::pin!(shutdown);
    info!(
        node,
        "active/standby: standing by until this engine holds the lease"
    );
    let outcome = loop {
        let standby = match Standby::start(&settings, &ha, &status, clock).await {
            Ok(standby) => standby,
            Err(e) => break Err(e),
        };
        if settings.attach.is_some() {
            eyes.store(false, std::sync::atomic::Ordering::Relaxed); // until the watch is up
        }
        let sight = follow_link(standby.watch.as_ref().map(|w| w.link()), &eyes);
        let leading = tokio::select! {
            () = &mut shutdown => None,
            e = leader_epoch(&mut role) => e,
        };
        if let Some(task) = sight {
            task.abort();
        }
        let Some(term) = leading else {
            standby.stop().await;
            break Ok(());
        };
        epoch.store(term, std::sync::atomic::Ordering::Release);
        status.took_over();
        info!(
            node,
            epoch = term,
            "active/standby: leading, starting the engine"
        );
        let (watched, watch) = standby.hand_over(clock.now()).await;
        let mut term_settings = settings.clone();
        term_settings.engine.epoch = Some(term);
        let started = Broker::start_in_term(term_settings, clock, status.clone(), watched).await;
        // The watch listens on until the engine has started (its own link connecting).
        if let Some(watch) = watch {
            watch.stop().await;
        }
        let broker = match started {
            Ok(broker) => broker,
            Err(e) => break Err(e),
        };
        let sight = follow_link(broker.front().link(), &eyes);
        let deposed = tokio::select! {
            () = &mut shutdown => false,
            () = term_ends(&mut role, term) => true,
        };
        if let Some(task) = sight {
            task.abort();
        }
        if deposed {
            epoch.store(0, std::sync::atomic::Ordering::Release);
            warn!(node, epoch = term, "active/standby: the lease is lost: nothing more is stored or announced; stopping the engine and standing by");
        } else {
            info!("shutdown requested: draining");
        }
        broker.shutdown().await;
        if !deposed {
            break Ok(());
        }
    };
    lease.stop().await;
    outcome
}

/// Keeps `eyes` set while `link` is up (no link: `eyes` stays as it is). The task ends
/// with the link.
fn follow_link(
    link: Option<tokio::sync::watch::Receiver<mqtt::upstream::Link>>,
    eyes: &Arc<std::sync::atomic::AtomicBool>,
) -> Option<JoinHandle<()>> {
    let mut link = link?;
    let eyes = eyes.clone();
    Some(tokio::spawn(async move {
        loop {
            let up = link.borrow_and_update().up;
            eyes.store(up, std::sync::atomic::Ordering::Relaxed);
            if link.changed().await.is_err() {
                eyes.store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }))
}

/// What runs while an engine of a pair stands by: the standby's ops API and, in attach
/// mode, its watch on the uplinks.
struct Standby {
    api: api::ApiServer,
    watch: Option<crate::ha::Watch>,
}

impl Standby {
    async fn start(
        settings: &Settings,
        ha: &config::HaSettings,
        status: &Arc<crate::ha::Status>,
        clock: Clock,
    ) -> Result<Standby, StartError> {
        let watch = match (&settings.attach, ha.watch) {
            (Some(attach), true) => Some(crate::ha::Watch::start(
                crate::ha::WatchSettings {
                    attach: attach.clone(),
                    credentials: ha.watch_credentials.clone(),
                    node: ha.target.node.clone(),
                    topics: settings.engine.topics.clone(),
                    max_payload: settings.engine.max_payload,
                    max_vehicles: settings.rules.max_vehicles,
                },
                clock,
            )?),
            _ => None,
        };
        let served = match tokio::net::TcpListener::bind(settings.api.listen).await {
            Ok(listener) => {
                let ctx = api::standby::StandbyContext::new(
                    status.clone(),
                    watch.as_ref().map(|w| w.counters().clone()),
                );
                api::ApiServer::spawn(listener, api::standby::router(Arc::new(ctx))).map_err(
                    |source| StartError::Spawn {
                        what: "standby ops HTTP API",
                        source,
                    },
                )
            }
            Err(source) => Err(StartError::HttpListen {
                addr: settings.api.listen,
                source,
            }),
        };
        match served {
            Ok(api) => Ok(Standby { api, watch }),
            Err(e) => {
                if let Some(watch) = watch {
                    watch.stop().await;
                }
                Err(e)
            }
        }
    }

    /// Frees the HTTP port for the leader's API and gives what the watch heard until `now`,
    /// with the watch still running.
    async fn hand_over(
        self,
        now: fleet_rules::UnixMs,
    ) -> (Option<fleet_rules::Watched>, Option<crate::ha::Watch>) {
        self.api.close().await;
        let watched = self.watch.as_ref().map(|w| w.watched(now));
        (watched, self.watch)
    }

    async fn stop(self) {
        self.api.shutdown().await;
        if let Some(watch) = self.watch {
            watch.stop().await;
        }
    }
}

/// The epoch once this engine leads (`None`: the lease task is gone).
async fn leader_epoch(role: &mut tokio::sync::watch::Receiver<crate::ha::Role>) -> Option<u64> {
    loop {
        if let crate::ha::Role::Leader { epoch } = *role.borrow_and_update() {
            return Some(epoch);
        }
        role.changed().await.ok()?;
    }
}

/// Resolves when this engine no longer leads with `term`.
async fn term_ends(role: &mut tokio::sync::watch::Receiver<crate::ha::Role>, term: u64) {
    loop {
        if *role.borrow_and_update() != (crate::ha::Role::Leader { epoch: term }) {
            return;
        }
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// A running broker: the MQTT front, the engine, the store writer, the publisher and the
/// ops HTTP API.
pub struct Broker {
    front: Front,
    api: api::ApiServer,
    engine: EngineHandle,
    metrics: Arc<EngineMetrics>,
    slack_metrics: Arc<SlackMetrics>,
    store_metrics: Arc<StoreMetrics>,
    store_location: Location,
    stop_engine: oneshot::Sender<()>,
    engine_task: JoinHandle<()>,
    writer: WriterHandle,
    publisher_task: JoinHandle<()>,
    slack: Option<slack::SenderHandle>,
}

/// What runs behind the MQTT front once the store writer is up.
struct Started {
    api: api::ApiServer,
    engine: EngineHandle,
    stop_engine: oneshot::Sender<()>,
    engine_task: JoinHandle<()>,
    publisher_task: JoinHandle<()>,
    slack: Option<slack::SenderHandle>,
}

impl Broker {
    /// Checks the configuration (refusing it with every problem listed), opens the store
    /// and restores the fleet from it, binds the listeners and starts every component on
    /// the current runtime.
    pub async fn start(config: &Config, clock: Clock) -> Result<Broker, StartError> {
        let settings = config.settings().map_err(StartError::Config)?;
        Broker::start_with(settings, clock).await
    }

    /// As [`Broker::start`], with settings already checked.
    pub async fn start_with(settings: Settings, clock: Clock) -> Result<Broker, StartError> {
        Broker::start_inner(settings, clock, None, None).await
    }

    /// As [`Broker::start_with`], for a term of an active/standby pair: `status` says who
    /// leads (for /readyz and /metrics), and the fleet restored starts from what the
    /// standby `watched`.
    pub async fn start_in_term(
        settings: Settings,
        clock: Clock,
        status: Arc<crate::ha::Status>,
        watched: Option<fleet_rules::Watched>,
    ) -> Result<Broker, StartError> {
        Broker::start_inner(settings, clock, Some(status), watched).await
    }

    async fn start_inner(
        settings: Settings,
        clock: Clock,
        ha: Option<Arc<crate::ha::Status>>,
        watched: Option<fleet_rules::Watched>,
    ) -> Result<Broker, StartError> {
        if settings.slack.is_none() {
            info!("no [slack] webhook_url or bot_token: notifications go to the log only");
        }
        if settings.api.token.is_none() {
            warn!("no API token ([http] token or FLEET_API_TOKEN): manual service-in/out through the ops API is refused");
        }
        let metrics = Arc::new(EngineMetrics::default());
        let slack_metrics = Arc::new(SlackMetrics::default());
        let store_metrics = Arc::new(StoreMetrics::default());
        let (store, recovery) = open_store(&settings, watched, clock.now()).await?;
        let store_location = store.location().clone();

        let (uplink_tx, uplink_rx) = mpsc::channel(engine::UPLINK_QUEUE);
        let front = match &settings.attach {
            None => {
                let front = MqttFront::start(settings.mqtt.clone(), uplink_tx.clone()).await?;
                info!(mqtt = %front.local_addr(), "MQTT listening");
                Front::Embedded(front)
            }
            Some(attach) => Front::Attached(Upstream::start(
                attach.clone(),
                settings.engine.topics.clone(),
                settings.engine.journeys.clone(),
                uplink_tx.clone(),
            )?),
        };
        // From here on a failure stops the MQTT front (and the writer) again.
        let http = match tokio::net::TcpListener::bind(settings.api.listen).await {
            Ok(listener) => listener,
            Err(source) => {
                front.shutdown().await;
                return Err(StartError::HttpListen {
                    addr: settings.api.listen,
                    source,
                });
            }
        };
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(store::STORE_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(engine::OUTBOUND_QUEUE);
        let queues = vec![
            api::QueueProbe::of("uplink", &uplink_tx),
            api::QueueProbe::of("store", &batch_tx),
            api::QueueProbe::of("outbound", &out_tx),
        ];
        drop(uplink_tx);
        let writer = match store::spawn_writer(store, batch_rx, out_tx, store_metrics.clone()) {
            Ok(writer) => writer,
            Err(source) => {
                front.shutdown().await;
                return Err(StartError::Spawn {
                    what: "store writer thread",
                    source,
                });
            }
        };
        let parts = Parts {
            settings,
            clock,
            recovery,
            http,
            queues,
            batch_tx,
            uplink_rx,
            out_rx,
            front: front.clone(),
            metrics: metrics.clone(),
            slack_metrics: slack_metrics.clone(),
            store_metrics: store_metrics.clone(),
            store_location: store_location.clone(),
            ha,
        };
        let started = match parts.start().await {
            Ok(started) => started,
            Err(e) => {
                // Every sender of the writer's queue is gone with `parts`: it ends.
                if let Err(join) = tokio::task::spawn_blocking(move || writer.join()).await {
                    warn!("store writer ended abnormally: {join}");
                }
                front.shutdown().await;
                return Err(e);
            }
        };
        Ok(Broker {
            front,
            api: started.api,
            engine: started.engine,
            metrics,
            slack_metrics,
            store_metrics,
            store_location,
            stop_engine: started.stop_engine,
            engine_task: started.engine_task,
            writer,
            publisher_task: started.publisher_task,
            slack: started.slack,
        })
    }

    /// The store's counters.
    pub fn store_metrics(&self) -> &Arc<StoreMetrics> {
        &self.store_metrics
    }

    /// The database (for read-only access through [`store::StoreReader`]).
    pub fn store_location(&self) -> &Location {
        &self.store_location
    }

    /// The embedded MQTT listener's address; in attach mode (vehicles connect to the
    /// upstream) the unspecified address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.front
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The MQTT side: the embedded broker or the upstream link.
    pub fn front(&self) -> &Front {
        &self.front
    }

    /// The ops HTTP API's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.api.local_addr()
    }

    /// Ask the engine.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The ingest and engine counters.
    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.metrics
    }

    /// The Slack notifier's counters.
    pub fn slack_metrics(&self) -> &Arc<SlackMetrics> {
        &self.slack_metrics
    }

    /// The MQTT front's counters.
    pub fn mqtt_stats(&self) -> mqtt::MqttStats {
        self.front.stats()
    }

    /// Graceful stop: the ops API finishes the requests in flight, the engine handles what
    /// is queued and hands over its last effects and a final checkpoint, the store writer
    /// commits them and flushes the file, the publisher drains, then the listener closes.
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

/// What the engine, the notifier and the ops API are built from.
struct Parts {
    settings: Settings,
    clock: Clock,
    recovery: store::Recovery,
    http: tokio::net::TcpListener,
    queues: Vec<api::QueueProbe>,
    batch_tx: mpsc::Sender<Batch>,
    uplink_rx: mpsc::Receiver<mqtt::Uplink>,
    out_rx: mpsc::Receiver<Outbound>,
    front: Front,
    metrics: Arc<EngineMetrics>,
    slack_metrics: Arc<SlackMetrics>,
    store_metrics: Arc<StoreMetrics>,
    store_location: Location,
    ha: Option<Arc<crate::ha::Status>>,
}

impl Parts {
    /// Starts the notifier, the engine, the publisher and the ops API; on failure nothing
    /// of them keeps running.
    async fn start(self) -> Result<Started, StartError> {
        let Parts {
            settings,
            clock,
            recovery,
            http,
            mut queues,
            batch_tx,
            uplink_rx,
            out_rx,
            front,
            metrics,
            slack_metrics,
            store_metrics,
            store_location,
            ha,
        } = self;
        let (ops_tx, ops_rx) = mpsc::channel(engine::OPS_QUEUE);
        let engine_handle = EngineHandle::new(ops_tx);
        let ops_probe = engine_handle.clone();
        queues.insert(
            1,
            api::QueueProbe::from_fn("ops", move || ops_probe.queue_fill()),
        );
        let mut engine = Engine::new(
            recovery.fleet,
            clock,
            settings.engine.clone(),
            metrics.clone(),
            batch_tx.clone(),
        );
        if let (Some(link), Some(attach)) = (front.link(), &settings.attach) {
            engine = engine.with_link(link, attach.blindness, store_location.clone());
        }
        let mut slack_sender = None;
        if let Some(slack_settings) = settings.slack {
            let wake = Arc::new(tokio::sync::Notify::new());
            engine = engine.with_slack(slack::EngineOutbox::new(
                &slack_settings,
                wake.clone(),
                slack_metrics.clone(),
                &recovery.open,
            ));
            let links = slack::SenderLinks {
                location: store_location.clone(),
                store: batch_tx,
                wake,
                sli: engine.sli_reports(),
            };
            slack_sender =
                Some(slack::spawn(slack_settings, links, clock, slack_metrics.clone()).await?);
        }
        let api_context = api::ApiContext {
            engine: engine_handle.clone(),
            clock,
            metrics: metrics.clone(),
            slack_metrics,
            store_metrics,
            mqtt: front.clone(),
            queues,
            token: settings.api.token,
            slo: settings.api.slo,
            mds_provider_id: settings.api.mds_provider_id,
            history: api::History::new(store_location),
            page: settings.api.page,
            ha,
        };
        let api = match api::ApiServer::spawn(http, api::router(Arc::new(api_context))) {
            Ok(api) => api,
            Err(source) => {
                if let Some(sender) = slack_sender {
                    sender.shutdown().await;
                }
                return Err(StartError::Spawn {
                    what: "ops HTTP API",
                    source,
                });
            }
        };
        engine.replay_events(recovery.unsure_events);
        if !recovery.changed_at.is_empty() {
            engine.republish_retained_state(recovery.changed_at);
        }
        if let Some(saved_to) = recovery.sli_saved_to {
            engine.resume_sli_history(saved_to);
        }
        engine.restate_alerts(&recovery.open);
        let (stop_engine, stopped) = oneshot::channel::<()>();
        let engine_task = tokio::spawn(engine.run(uplink_rx, ops_rx, async {
            let _ = stopped.await;
        }));
        let publisher_task = tokio::spawn(publish_all(front, out_rx, metrics));
        Ok(Started {
            api,
            engine: engine_handle,
            stop_engine,
            engine_task,
            publisher_task,
            slack: slack_sender,
        })
    }
}

async fn publish_all(front: Front, mut out: mpsc::Receiver<Outbound>, metrics: Arc<EngineMetrics>) {
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

/// Opens the store (off the async threads: it reads the whole fleet) and rebuilds the
/// fleet from it.
async fn open_store(
    settings: &Settings,
    watched: Option<fleet_rules::Watched>,
    now: fleet_rules::UnixMs,
) -> Result<(Store, store::Recovery), StartError> {
    let opts: StoreOptions = settings.store.clone();
    let rules = settings.rules.clone();
    let history_minutes = settings.engine.persist.sli_history.as_secs() / 60 + 1;
    let downtime_is_bad = settings.downtime_counts_as_bad;
    let started = tokio::time::Instant::now();
    let (store, recovery) = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&opts)?;
        let restored =
            store.load(fleet_rules::Fleet::minute_of(now).saturating_sub(history_minutes))?;
        let recovery = store::recover(rules, restored, watched, now, downtime_is_bad);
        Ok::<_, StoreError>((store, recovery))
    })
    .await??;
    info!(
        store = %store.location(),
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
