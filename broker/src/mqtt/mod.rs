//! The embedded MQTT broker (rmqtt) and the link to it.
//!
//! `MqttFront` is the only door to rmqtt: it starts the listeners (plain TCP and/or TLS)
//! on the caller's tokio runtime, authenticates clients (`auth`), enforces the contract's
//! topic rules with our own hooks (`acl`) and the rate limits (`limits`), hands allowed
//! uplinks to a bounded channel, and publishes the broker's own messages (commands,
//! retained service state, fleet topics). rmqtt's API changes often; keep it in here.

pub mod acl;
pub mod auth;
mod front;
mod hooks;
pub mod limits;
mod retain;
pub mod secret;
mod shared;
mod stats;
pub mod upstream;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
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

use self::auth::{AuthLoadError, AuthOptions, Authenticator};
pub use self::front::Front;
use self::hooks::ContractHooks;
use self::limits::{ConnectLimiter, Limits, PublishLimiter};
use self::retain::BrokerRetainStore;
use self::stats::Counters;
pub use self::stats::MqttStats;

/// A message a client published on one of its own uplink topics, after the ACL.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// The publishing client's MQTT client id (a valid vehicle id, the one in the topic).
    pub client_id: String,
    /// `vehicles/{client_id}/heartbeat|error|ack`.
    pub topic: String,
    /// The payload as received (at most `MqttOptions::max_payload` bytes).
    pub payload: Bytes,
    /// Attach mode: the acknowledgement to send upstream once what the uplink caused is
    /// stored (none when acknowledged on receipt).
    pub ack: Option<upstream::UplinkAck>,
    /// A journey's request or answer (on the fleet's own topics), not a contract uplink.
    pub journey: Option<crate::journeys::JourneyTap>,
}

/// Settings of the MQTT listeners, authentication and per-session limits.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttOptions {
    /// Plain TCP address to listen on; port 0 picks a free port (see
    /// `MqttFront::local_addr`). Not bound when `tls.plain_tcp` is false.
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
    /// Time a new connection has to complete the TLS handshake, and then CONNECT.
    pub handshake_timeout: Duration,
    /// The longest keep-alive a client may ask, in seconds: a longer one is cut to this and
    /// MQTT 5 clients are told (Server Keep Alive).
    pub max_keepalive: u16,
    /// Who may connect.
    pub auth: AuthOptions,
    /// A TLS listener beside (or instead of) plain TCP.
    pub tls: Option<TlsOptions>,
    /// Publish and connect rates.
    pub limits: Limits,
    /// The topic layout and the `[[acl]]` entries.
    pub acl: acl::Acl,
    /// The journeys whose requests and answers (routed as the `[[acl]]` entries allow)
    /// are also handed to the engine.
    pub journeys: crate::journeys::Journeys,
}

/// The TLS listener (rustls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Address to listen on; port 0 picks a free port (see `MqttFront::tls_addr`).
    pub listen: SocketAddr,
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificates that sign vehicle client certificates.
    pub client_ca: Option<PathBuf>,
    /// Every TLS client must present a certificate signed by `client_ca`; a vehicle whose
    /// certificate's common name is its client id then needs no password.
    pub require_client_cert: bool,
    /// Keep the plain TCP listener (`MqttOptions::listen`) too.
    pub plain_tcp: bool,
}

/// MQTT 5 topic aliases per connection and direction.
const MAX_TOPIC_ALIASES: u16 = 16;

/// Room on top of `max_payload` for the fixed header, topic and MQTT 5 properties.
pub const PACKET_OVERHEAD: usize = 1024;

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_payload: 16 * 1024,
            max_connections: 100_000,
            max_inflight: 8,
            max_queued_messages: 100_000,
            session_expiry: Duration::from_secs(10 * 60),
            handshake_timeout: Duration::from_secs(10),
            max_keepalive: u16::MAX,
            auth: AuthOptions::default(),
            tls: None,
            limits: Limits::default(),
            acl: acl::Acl::default(),
            journeys: crate::journeys::Journeys::default(),
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
    /// The credentials could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthLoadError),
    /// The TLS listener's certificate or key could not be loaded.
    #[error("cannot set up TLS on {addr}: {reason}")]
    Tls {
        /// The TLS listen address.
        addr: SocketAddr,
        /// rmqtt's (rustls') message, naming the file.
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
    tls_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
    /// Identity of the broker's own publishes (`FromType::System`).
    from: From,
    shut_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    server_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// rmqtt keys listener settings by an id: one for plain TCP, one for TLS.
const LISTENER_ID: u16 = 1;
const TLS_LISTENER_ID: u16 = 2;

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
        let auth = Authenticator::load(
            &opts.auth,
            opts.tls.as_ref().is_some_and(|t| t.require_client_cert),
        )?;
        let tcp = match &opts.tls {
            Some(tls) if !tls.plain_tcp => None,
            _ => {
                let listener = listener_builder(&opts)?
                    .bind()
                    .and_then(|l| l.tcp())
                    .map_err(|e| MqttError::Bind {
                        addr: opts.listen,
                        source: e.into(),
                    })?;
                let addr = listener.local_addr().map_err(|e| MqttError::Bind {
                    addr: opts.listen,
                    source: e.into(),
                })?;
                Some((listener, addr))
            }
        };
        let tls = match &opts.tls {
            Some(tls) => Some(tls_listener(&opts, tls)?),
            None => None,
        };
        let tls_addr = tls.as_ref().map(|(_, addr)| *addr);
        let local_addr = tcp
            .as_ref()
            .map(|(_, addr)| *addr)
            .or(tls_addr)
            .unwrap_or(opts.listen);

        let scx = ServerContext::new()
            // The busy check samples system CPU load in a forever task and refuses
            // CONNECTs under load; a reconnect storm is exactly when vehicles must get in.
            .busy_check_enable(false)
            .mqtt_max_sessions(isize::try_from(opts.max_connections).unwrap_or(isize::MAX))
            .build()
            .await;

        let names = opts.acl.rules().iter().map(|r| r.name.clone()).collect();
        let counters = Arc::new(Counters::for_rules(names));
        *scx.extends.shared_subscription_mut().await = Box::new(shared::RoundRobin::default());
        *scx.extends.retain_mut().await = Box::new(BrokerRetainStore::new(
            counters.clone(),
            opts.acl.topics().clone(),
        ));

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        log_auth_mode(&auth, &opts);
        let hooks = ContractHooks {
            uplink,
            counters: counters.clone(),
            max_payload: opts.max_payload,
            acl: Arc::new(opts.acl.clone()),
            journeys: opts.journeys.clone(),
            shutdown: shutdown_rx,
            auth: Arc::new(auth),
            publish_limits: Arc::new(PublishLimiter::new(opts.limits.clone())),
            connect_limits: Arc::new(ConnectLimiter::new(
                &opts.limits,
                tokio::time::Instant::now(),
            )),
            scx: scx.clone(),
        };
        hooks
            .register(scx.extends.hook_mgr().register().as_ref())
            .await;

        let mut server = MqttServer::new(scx.clone());
        if let Some((listener, _)) = tcp {
            server = server.listener_by_id(listener, LISTENER_ID);
        }
        if let Some((listener, _)) = tls {
            server = server.listener_by_id(listener, TLS_LISTENER_ID);
        }
        let server = server.build();
        let server_task = tokio::spawn(async move {
            // `run` only returns after every listener loop ended, which they never do.
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "MQTT server stopped");
            }
        });
        match tls_addr {
            Some(tls_addr) => tracing::info!(%local_addr, %tls_addr, "MQTT front listening"),
            None => tracing::info!(%local_addr, "MQTT front listening"),
        }

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
                tls_addr,
                counters,
                from,
                shut_down: AtomicBool::new(false),
                shutdown_tx,
                server_task: std::sync::Mutex::new(Some(server_task)),
            }),
        })
    }

    /// The bound plain TCP address (useful when `listen` had port 0); the TLS address
    /// when only TLS is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The bound TLS address, when TLS is served.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_addr
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

fn log_auth_mode(auth: &Authenticator, opts: &MqttOptions) {
    if auth.is_open() {
        tracing::warn!("MQTT AUTHENTICATION IS OFF (auth.mode = \"none\"): any client may connect and claim any vehicle id; the contract's topic rules still apply. Set [auth] mode = \"hmac\" or \"file\" before connecting real vehicles");
        if !opts.auth.users.is_empty() {
            tracing::warn!(
                users = opts.auth.users.len(),
                "[auth] users are ignored while auth.mode = \"none\""
            );
        }
    } else {
        tracing::info!(auth = ?auth, "MQTT authentication on");
    }
}

fn path_str(path: &Path, addr: SocketAddr) -> Result<String, MqttError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| MqttError::Tls {
            addr,
            reason: format!("{} is not a UTF-8 path", path.display()),
        })
}

fn tls_listener(
    opts: &MqttOptions,
    tls: &TlsOptions,
) -> Result<(rmqtt::net::Listener, SocketAddr), MqttError> {
    let addr = tls.listen;
    let client_ca = match &tls.client_ca {
        Some(path) => Some(path_str(path, addr)?),
        None => None,
    };
    let builder = listener_builder(opts)?
        .name("fleet/tls")
        .laddr(addr)
        .tls_cert(Some(path_str(&tls.cert, addr)?))
        .tls_key(Some(path_str(&tls.key, addr)?))
        .tls_client_ca_certs(client_ca)
        .tls_cross_certificate(tls.require_client_cert)
        // Hands the verified certificate's subject to our ClientAuthenticate hook; the
        // username stays what the client sent (we check it against the certificate).
        .collect_cert_info(tls.require_client_cert);
    let listener = builder.bind().map_err(|e| MqttError::Bind {
        addr,
        source: e.into(),
    })?;
    let listener = listener.tls().map_err(|e| MqttError::Tls {
        addr,
        reason: format!("{e:#}"),
    })?;
    let local = listener.local_addr().map_err(|e| MqttError::Bind {
        addr,
        source: e.into(),
    })?;
    Ok((listener, local))
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
        // A restarted broker must rebind while its old connections sit in TIME_WAIT
        // (found by the reconnect-storm benchmark: without it, bind fails for a minute).
        .reuseaddr(Some(true))
        .nodelay(true)
        .max_connections(opts.max_connections)
        .max_packet_size(max_packet_size)
        // Our ClientAuthenticate hook must see every CONNECT (it authenticates, checks the
        // will topic and the connect rate); rmqtt skips it for anonymous clients when
        // anonymous access is allowed.
        .allow_anonymous(false)
        // MQTT 3.1.1 allows keep-alive 0 (no keep-alive); some cellular firmware uses it.
        .allow_zero_keepalive(true)
        .min_keepalive(0)
        .max_inflight(max_inflight)
        .max_mqueue_len(opts.max_queued_messages)
        // QoS 2 for the fleet's own topics; contract subscriptions are granted at most 1.
        .max_qos_allowed(QoS::ExactlyOnce)
        .max_clientid_len(128)
        .max_subscriptions(16)
        .max_topic_levels(8)
        // MQTT 5 topic aliases, both ways (a few per connection are enough for a vehicle).
        .max_topic_aliases(MAX_TOPIC_ALIASES)
        .max_keepalive(opts.max_keepalive)
        .session_expiry_interval(opts.session_expiry)
        // Zero would mean "no cap" to rmqtt.
        .max_session_expiry_interval(opts.session_expiry.max(Duration::from_secs(1)))
        .handshake_timeout(opts.handshake_timeout))
}
