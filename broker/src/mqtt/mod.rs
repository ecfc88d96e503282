//! The embedded MQTT broker (rmqtt) and the link to it.
//!
//! `MqttFront` is the only door to rmqtt: it starts the listener on the caller's tokio
//! runtime, enforces the contract's topic rules with our own hooks (`acl`), hands allowed
//! uplinks to a bounded channel, and publishes the broker's own messages (commands,
//! retained service state, fleet topics). rmqtt's API changes often; keep it in here.

pub mod acl;
mod hooks;
mod retain;
mod stats;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use rmqtt::codec::types::Publish as CodecPublish;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::SessionState;
use rmqtt::types::{From, Id, Publish, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use self::hooks::ContractHooks;
use self::retain::BrokerRetainStore;
use self::stats::Counters;
pub use self::stats::MqttStats;

/// A message a client published on one of its own uplink topics, after the ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The publishing client's MQTT client id (a valid vehicle id, the one in the topic).
    pub client_id: String,
    /// `vehicles/{client_id}/heartbeat|error|ack`.
    pub topic: String,
    /// The payload as received (at most `MqttOptions::max_payload` bytes).
    pub payload: Bytes,
}

/// Settings of the MQTT listener and its per-session limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// Address to listen on; port 0 picks a free port (see `MqttFront::local_addr`).
    pub listen: SocketAddr,
    /// Largest accepted PUBLISH payload in bytes. Larger payloads are denied and counted
    /// (the client stays connected); packets beyond `max_payload + PACKET_OVERHEAD`
    /// are a protocol error that closes the connection.
    pub max_payload: usize,
    /// Most MQTT sessions (connected, or persistent and offline) at once; further
    /// CONNECTs get "server unavailable".
    pub max_connections: usize,
    /// Unacknowledged QoS 1 messages in flight to one client (and from it).
    pub max_inflight: u16,
    /// Messages queued for one client beyond the inflight window (also while a
    /// persistent session is offline). When full, the oldest QoS 1 or the newest QoS 0
    /// message is dropped.
    pub max_queued_messages: usize,
    /// How long a persistent session (MQTT 3.1.1 clean_session=0, or an MQTT 5 session
    /// expiry) is kept after its client disconnects; also caps what MQTT 5 clients ask.
    pub session_expiry: Duration,
    /// Time a new TCP connection has to complete CONNECT.
    pub handshake_timeout: Duration,
}

/// Room on top of `max_payload` for the fixed header, topic and MQTT 5 properties.
pub const PACKET_OVERHEAD: usize = 1024;

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_payload: 16 * 1024,
            max_connections: 100_000,
            max_inflight: 8,
            max_queued_messages: 32,
            session_expiry: Duration::from_secs(10 * 60),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of the MQTT front.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// An option is out of range.
    #[error("invalid MQTT option `{name}`: {reason}")]
    InvalidOption {
        /// The option's field name in `MqttOptions`.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The listener could not bind.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The address from `MqttOptions::listen`.
        addr: SocketAddr,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// `MqttFront::publish` was given a topic the broker must not publish to.
    #[error("cannot publish to topic {topic:?}: not a topic name (empty, wildcard, `$` or NUL)")]
    InvalidTopic {
        /// The rejected topic.
        topic: String,
    },
    /// rmqtt failed to route a broker-side publish.
    #[error("publishing to {topic:?} failed: {source}")]
    Publish {
        /// The topic.
        topic: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The front was shut down.
    #[error("the MQTT front is shut down")]
    ShutDown,
}

/// Handle to the running embedded broker. Cheap to clone.
#[derive(Clone)]
pub struct MqttFront {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MqttFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttFront")
            .field("local_addr", &self.inner.local_addr)
            .field("shut_down", &self.inner.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Inner {
    scx: ServerContext,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    /// Identity of the broker's own publishes (`FromType::System`).
    from: From,
    shut_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    server_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// rmqtt keys listener settings by an id; we run a single listener.
const LISTENER_ID: u16 = 1;

impl MqttFront {
    /// Binds and starts serving on the current tokio runtime.
    ///
    /// Uplinks that pass the ACL are sent to `uplink`; when it is full the publishing
    /// client's connection waits for room (TCP backpressure on that client only) and
    /// `MqttStats::uplink_queue_full` counts it.
    pub async fn start(
        opts: MqttOptions,
        uplink: mpsc::Sender<Uplink>,
    ) -> Result<MqttFront, MqttError> {
        let listener = listener_builder(&opts)?
            .bind()
            .and_then(|l| l.tcp())
            .map_err(|e| MqttError::Bind {
                addr: opts.listen,
                source: e.into(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| MqttError::Bind {
            addr: opts.listen,
            source: e.into(),
        })?;

        let scx = ServerContext::new()
            // The busy check samples system CPU load in a forever task and refuses
            // CONNECTs under load; a reconnect storm is exactly when vehicles must get in.
            .busy_check_enable(false)
            .mqtt_max_sessions(isize::try_from(opts.max_connections).unwrap_or(isize::MAX))
            .build()
            .await;

        let counters = Arc::new(Counters::default());
        *scx.extends.retain_mut().await = Box::new(BrokerRetainStore::new(counters.clone()));

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let hooks = ContractHooks {
            uplink,
            counters: counters.clone(),
            max_payload: opts.max_payload,
            shutdown: shutdown_rx,
        };
        hooks
            .register(scx.extends.hook_mgr().register().as_ref())
            .await;
        tracing::warn!(%local_addr, "MQTT client authentication is not implemented yet: any client may connect; the contract's topic rules still apply");

        let server = MqttServer::new(scx.clone())
            .listener_by_id(listener, LISTENER_ID)
            .build();
        let server_task = tokio::spawn(async move {
            // `run` only returns after every listener loop ended, which they never do.
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "MQTT server stopped");
            }
        });
        tracing::info!(%local_addr, "MQTT front listening");

        let from = From::from_system(Id::new(
            scx.node.id(),
            LISTENER_ID,
            None,
            None,
            ByteString::from_static("fleet-broker"),
            None,
        ));
        Ok(MqttFront {
            inner: Arc::new(Inner {
                scx,
                local_addr,
                counters,
                from,
                shut_down: AtomicBool::new(false),
                shutdown_tx,
                server_task: std::sync::Mutex::new(Some(server_task)),
            }),
        })
    }

    /// The bound address (useful when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Publishes from the broker itself, at QoS 1 when `qos1` else QoS 0. With `retain`,
    /// the message is stored for later subscribers (an empty payload clears it).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos1: bool,
        retain: bool,
    ) -> Result<(), MqttError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(MqttError::ShutDown);
        }
        if !acl::is_publishable_topic(topic) {
            return Err(MqttError::InvalidTopic {
                topic: topic.to_owned(),
            });
        }
        let publish = Publish::from(CodecPublish {
            dup: false,
            retain,
            qos: if qos1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            topic: ByteString::from(topic),
            packet_id: None,
            payload,
            properties: None,
        });
        // No message store; no expiry for retained state (it is replaced, not aged out).
        SessionState::forwards(
            &self.inner.scx,
            self.inner.from.clone(),
            publish,
            false,
            None,
        )
        .await
        .map_err(|e| MqttError::Publish {
            topic: topic.to_owned(),
            source: e.into(),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MqttStats {
        let connected = u64::try_from(self.inner.scx.connections.count()).unwrap_or(0);
        self.inner.counters.snapshot(connected)
    }

    /// Stops accepting connections and closes every session (clients see the TCP
    /// connection close; MQTT 5 clients get a DISCONNECT first). Later `publish` calls
    /// on clones of this handle return `MqttError::ShutDown`.
    pub async fn shutdown(self) {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Release publishes waiting for room in a full uplink channel.
        let _ = self.inner.shutdown_tx.send(true);

        let server_task = match self.inner.server_task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = server_task {
            task.abort();
            // Dropping the task drops the listener socket: no new connections.
            let _ = task.await;
        }

        let scx = &self.inner.scx;
        let ids: Vec<Id> = {
            let shared = scx.extends.shared().await;
            let ids = shared.iter().map(|entry| entry.id()).collect();
            ids
        };
        let session_count = ids.len();
        let mut kicks = JoinSet::new();
        for id in ids {
            let scx = scx.clone();
            kicks.spawn(async move {
                let entry = scx.extends.shared().await.entry(id);
                match entry.try_lock().await {
                    // clean_start, clear subscriptions, by admin: end the session for good.
                    Ok(mut entry) => {
                        if let Err(e) = entry.kick(true, true, true).await {
                            tracing::debug!(error = %e, "MQTT session close failed");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "MQTT session busy at shutdown"),
                }
            });
        }
        while kicks.join_next().await.is_some() {}
        tracing::info!(sessions_closed = session_count, "MQTT front shut down");
    }
}

fn listener_builder(opts: &MqttOptions) -> Result<Builder, MqttError> {
    let max_packet_size = opts
        .max_payload
        .checked_add(PACKET_OVERHEAD)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|_| opts.max_payload > 0)
        .ok_or_else(|| MqttError::InvalidOption {
            name: "max_payload",
            reason: format!(
                "{} bytes; use 1 to {} bytes",
                opts.max_payload,
                u32::MAX as usize - PACKET_OVERHEAD
            ),
        })?;
    let max_inflight = NonZeroU16::new(opts.max_inflight).ok_or(MqttError::InvalidOption {
        name: "max_inflight",
        reason: "0; use at least 1".to_owned(),
    })?;
    if opts.max_connections == 0 {
        return Err(MqttError::InvalidOption {
            name: "max_connections",
            reason: "0; use at least 1".to_owned(),
        });
    }
    Ok(Builder::new()
        .name("fleet/tcp")
        .laddr(opts.listen)
        .nodelay(true)
        .max_connections(opts.max_connections)
        .max_packet_size(max_packet_size)
        // Our ClientAuthenticate hook must see every CONNECT (it checks the will topic);
        // rmqtt skips it for anonymous clients when anonymous access is allowed.
        .allow_anonymous(false)
        // MQTT 3.1.1 allows keep-alive 0 (no keep-alive); some cellular firmware uses it.
        .allow_zero_keepalive(true)
        .min_keepalive(0)
        .max_inflight(max_inflight)
        .max_mqueue_len(opts.max_queued_messages)
        .max_qos_allowed(QoS::AtLeastOnce)
        .max_clientid_len(128)
        .max_subscriptions(16)
        .max_topic_levels(8)
        .max_topic_aliases(0)
        .session_expiry_interval(opts.session_expiry)
        // Zero would mean "no cap" to rmqtt.
        .max_session_expiry_interval(opts.session_expiry.max(Duration::from_secs(1)))
        .handshake_timeout(opts.handshake_timeout))
}
