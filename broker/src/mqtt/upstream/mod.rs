//! Attach mode: the broker as a client of the fleet's own MQTT broker (Mosquitto, EMQX,
//! HiveMQ, NATS, AWS IoT), through rumqttc.
//!
//! It subscribes to the uplink filters of the configured layout and hands each message to
//! the same bounded uplink channel the embedded front feeds (the vehicle id is the one in
//! the topic: only the upstream's ACL can stop a vehicle speaking for another, see
//! `fleet-broker acl`). It publishes what the engine announces, in order. The link's state
//! goes to the engine through a watch: while it is down the engine is blind (see
//! `fleet_rules::Blindness`).
//!
//! The session upstream is persistent (clean session off, MQTT 5 session expiry), so an
//! upstream that keeps sessions queues the uplinks of a short outage and the broker
//! republishes nothing; a CONNACK without a session says the upstream forgot everything,
//! retained messages included (Mosquitto without persistence), and the engine republishes
//! the retained service state.

mod v4;
mod v5;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Uplink;
use crate::contract::{Topic, Topics};
use crate::metrics::{Kind, TextWriter};

/// Requests (publishes, subscriptions) queued for the connection; full: the publisher waits.
const REQUEST_QUEUE: usize = 1024;
/// The largest packet accepted from the upstream. An uplink over `[mqtt] max_payload` is
/// rejected (and counted) by the ingest, not here: a packet the client refuses would drop
/// the link and come back with the session, again and again.
const MAX_INCOMING_PACKET: usize = 1 << 20;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Which MQTT version to speak upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `mqtts://`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (1883, or 8883 with TLS, when the URL names none).
    pub port: u16,
}

impl UpstreamUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!(
                "{text:?}: use mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{text:?}: the port must be 1 to 65535"))?;
                (host, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(format!("{text:?}: no host name"));
        }
        Ok(UpstreamUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Certificates for `mqtts://` upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA certificates (else the system roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `[mqtt] mode = "attach"`: the upstream and how to use it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachSettings {
    /// Tried in turn; the next after each lost connection or failed attempt.
    pub urls: Vec<UpstreamUrl>,
    /// Client id upstream.
    pub client_id: String,
    /// Username and password upstream.
    pub credentials: Option<(String, String)>,
    /// Certificates for `mqtts://`.
    pub tls: Option<UpstreamTls>,
    /// MQTT version.
    pub protocol: Protocol,
    /// `$share/GROUP/` before each filter.
    pub shared_group: Option<String>,
    /// Subscribe at QoS 1 (else 0).
    pub qos1: bool,
    /// Keep-alive upstream.
    pub keep_alive: Duration,
    /// How long the upstream keeps the session while the link is down; zero: a clean
    /// session, nothing kept.
    pub session_expiry: Duration,
    /// QoS 1 uplinks are acknowledged once what they caused is stored ([`UplinkAck`]),
    /// not on receipt.
    pub ack_when_stored: bool,
    /// How the engine treats the time the link is down.
    pub blindness: fleet_rules::Blindness,
}

/// The link's state, watched by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// Connected (CONNACK received) right now.
    pub up: bool,
    /// Successful connections so far.
    pub connects: u64,
    /// The last CONNACK found the broker's session (and so the upstream's state) kept.
    pub session_present: bool,
}

/// Errors starting attach mode.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A certificate or key file cannot be read.
    #[error("cannot read {path} ([mqtt.attach]): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No URL.
    #[error("[mqtt.attach] url names no upstream broker")]
    NoUrl,
}

/// Counters of the link.
#[derive(Debug, Default)]
pub(crate) struct UpstreamCounters {
    connected: AtomicBool,
    connects: AtomicU64,
    connection_errors: AtomicU64,
    uplinks: AtomicU64,
    uplink_queue_full: AtomicU64,
    dropped_retained: AtomicU64,
    dropped_topic: AtomicU64,
    subscriptions_refused: AtomicU64,
    subacks: AtomicU64,
    published: AtomicU64,
    acks_dropped: AtomicU64,
    /// Milliseconds spent disconnected, up to the last reconnect.
    down_ms: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the link's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Connected right now.
    pub connected: bool,
    /// Successful connections.
    pub connects: u64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: u64,
    /// Uplinks handed to the engine.
    pub uplinks: u64,
    /// Times the uplink queue was full and reading from the upstream paused.
    pub uplink_queue_full: u64,
    /// Retained messages on uplink topics, ignored (an old heartbeat proves nothing).
    pub dropped_retained: u64,
    /// Messages on topics that are not uplinks of the layout, ignored.
    pub dropped_topic: u64,
    /// Subscriptions the upstream refused (its ACL does not let the broker read uplinks).
    pub subscriptions_refused: u64,
    /// SUBACKs received (the uplink subscriptions are in place once one arrived).
    pub subacks: u64,
    /// Messages handed to the client for publishing.
    pub published: u64,
    /// Acknowledgements not sent because the link's request queue was full (the upstream
    /// delivers those uplinks again on the next connection).
    pub acks_dropped: u64,
    /// Time spent disconnected, up to the last reconnect.
    pub down_ms: u64,
}

impl UpstreamStats {
    /// Writes the `fleet_upstream_*` families.
    pub fn render(&self, w: &mut TextWriter) {
        let families: [(&str, Kind, &str, f64); 11] = [
            ("fleet_upstream_connected", Kind::Gauge, "1 while the link to the upstream MQTT broker is up (attach mode); while 0 the broker is blind and takes nobody out for silence.", f64::from(u8::from(self.connected))),
            ("fleet_upstream_connects_total", Kind::Counter, "Successful connections to the upstream broker.", self.connects as f64),
            ("fleet_upstream_connection_errors_total", Kind::Counter, "Failed connection attempts and lost connections to the upstream broker.", self.connection_errors as f64),
            ("fleet_upstream_down_seconds_total", Kind::Counter, "Time the link to the upstream was down, up to the last reconnect.", self.down_ms as f64 / 1000.0),
            ("fleet_upstream_uplinks_total", Kind::Counter, "Uplinks received from the upstream and queued for ingest.", self.uplinks as f64),
            ("fleet_upstream_uplink_queue_full_total", Kind::Counter, "Times the ingest queue was full and reading from the upstream paused (backpressure).", self.uplink_queue_full as f64),
            ("fleet_upstream_retained_ignored_total", Kind::Counter, "Retained messages on uplink topics, ignored (an old heartbeat proves nothing).", self.dropped_retained as f64),
            ("fleet_upstream_other_topics_total", Kind::Counter, "Messages on topics that are not uplinks of the layout, ignored.", self.dropped_topic as f64),
            ("fleet_upstream_subscriptions_refused_total", Kind::Counter, "Uplink subscriptions the upstream refused: its ACL must let the broker read the uplink topics.", self.subscriptions_refused as f64),
            ("fleet_upstream_published_total", Kind::Counter, "Messages the broker published upstream (commands, service state, fleet topics).", self.published as f64),
            ("fleet_upstream_acks_dropped_total", Kind::Counter, "Acknowledgements of stored uplinks not sent (request queue full): the upstream delivers those again on the next connection.", self.acks_dropped as f64),
        ];
        for (name, kind, help, value) in families {
            w.single(name, kind, help, value);
        }
    }
}

impl UpstreamCounters {
    fn snapshot(&self) -> UpstreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UpstreamStats {
            connected: self.connected.load(Ordering::Relaxed),
            connects: get(&self.connects),
            connection_errors: get(&self.connection_errors),
            uplinks: get(&self.uplinks),
            uplink_queue_full: get(&self.uplink_queue_full),
            dropped_retained: get(&self.dropped_retained),
            dropped_topic: get(&self.dropped_topic),
            subscriptions_refused: get(&self.subscriptions_refused),
            subacks: get(&self.subacks),
            published: get(&self.published),
            acks_dropped: get(&self.acks_dropped),
            down_ms: get(&self.down_ms),
        }
    }
}

/// A QoS 1 uplink to acknowledge upstream once what it caused is stored: until then the
/// upstream keeps it in the broker's session, so an engine that dies before storing it
/// leaves it to its successor (or to itself after a restart).
#[derive(Clone)]
pub struct UplinkAck {
    client: AckClient,
    pkid: u16,
    counters: Arc<UpstreamCounters>,
}

/// The link's client, either protocol.
#[derive(Clone)]
pub(crate) enum AckClient {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl UplinkAck {
    /// Sends the acknowledgement without waiting (a full request queue drops it, counted:
    /// the upstream delivers the uplink again on the next connection).
    pub fn send(&self) {
        let sent = match &self.client {
            AckClient::V311(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = self.pkid;
                c.try_ack(&p).is_ok()
            }
            AckClient::V5(c) => {
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Bytes::new(),
                    None,
                );
                p.pkid = self.pkid;
                c.try_ack(&p).is_ok()
            }
        };
        if !sent {
            inc(&self.counters.acks_dropped);
        }
    }
}

impl std::fmt::Debug for UplinkAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkAck")
            .field("pkid", &self.pkid)
            .finish()
    }
}

impl PartialEq for UplinkAck {
    fn eq(&self, other: &UplinkAck) -> bool {
        self.pkid == other.pkid
    }
}

impl Eq for UplinkAck {}

/// What the connection loop shares, whichever the protocol.
pub(crate) struct LoopCtx {
    topics: Topics,
    journeys: crate::journeys::Journeys,
    uplink: mpsc::Sender<Uplink>,
    counters: Arc<UpstreamCounters>,
    link: watch::Sender<Link>,
    filters: Vec<String>,
    settings: AttachSettings,
    /// The URL in use (index into `settings.urls`).
    current: usize,
    down_since: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl LoopCtx {
    /// A message from the upstream: an uplink for the engine, or ignored and counted.
    /// Waits while the uplink queue is full (the connection is not read meanwhile).
    /// `ack` (with manual acknowledgements) goes with the uplink, or is sent at once for a
    /// message the engine does not get.
    pub(crate) async fn deliver(
        &mut self,
        topic: String,
        payload: Bytes,
        retain: bool,
        correlation: Option<&Bytes>,
        ack: Option<UplinkAck>,
    ) -> bool {
        if retain {
            inc(&self.counters.dropped_retained);
            ack.inspect(UplinkAck::send);
            return true;
        }
        let (vehicle, journey) = match self.topics.classify(&topic) {
            Topic::Uplink { vehicle, .. } | Topic::Liveness { vehicle } => {
                (vehicle.to_owned(), None)
            }
            Topic::Other => match self.journey(&topic, correlation) {
                Some(found) => found,
                None => {
                    inc(&self.counters.dropped_topic);
                    ack.inspect(UplinkAck::send);
                    return true;
                }
            },
            _ => {
                inc(&self.counters.dropped_topic);
                ack.inspect(UplinkAck::send);
                return true;
            }
        };
        let up = Uplink {
            client_id: vehicle,
            topic,
            payload,
            ack,
            journey,
        };
        let up = match self.uplink.try_send(up) {
            Ok(()) => {
                inc(&self.counters.uplinks);
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(up)) => up,
        };
        inc(&self.counters.uplink_queue_full);
        if self.uplink.send(up).await.is_err() {
            return false;
        }
        inc(&self.counters.uplinks);
        true
    }

    /// The vehicle and journey of a message on a journey topic (the upstream vouches for
    /// the sender: the vehicle is the one in the topic).
    fn journey(
        &self,
        topic: &str,
        correlation: Option<&Bytes>,
    ) -> Option<(String, Option<crate::journeys::JourneyTap>)> {
        let tap = self.journeys.tap(topic, correlation)?;
        let spec = self.journeys.specs().get(tap.journey)?;
        let template = match tap.direction {
            crate::journeys::Direction::Request => &spec.request,
            crate::journeys::Direction::Response => &spec.response,
        };
        Some((template.vehicle(topic)?.to_owned(), Some(tap)))
    }

    /// A CONNACK: the link is up.
    pub(crate) fn connected(&mut self, session_present: bool) {
        let counters = &self.counters;
        inc(&counters.connects);
        counters.connected.store(true, Ordering::Relaxed);
        if let Some(since) = self.down_since.take() {
            let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
            counters.down_ms.fetch_add(ms, Ordering::Relaxed);
        }
        self.backoff = BACKOFF_MIN;
        let url = &self.settings.urls[self.current];
        self.link.send_modify(|l| {
            l.up = true;
            l.connects += 1;
            l.session_present = session_present;
        });
        tracing::info!(upstream = %url, session_present, "connected to the upstream MQTT broker");
    }

    /// The connection failed or was lost: the link is down; returns how long to wait
    /// before the next attempt, on the next URL.
    pub(crate) fn failed(&mut self, error: &dyn std::fmt::Display) -> Duration {
        inc(&self.counters.connection_errors);
        let url = &self.settings.urls[self.current];
        if self.link.borrow().up {
            tracing::warn!(upstream = %url, "lost the upstream MQTT broker: {error}; the broker is blind until it is back (nobody is taken out for silence meanwhile)");
        } else {
            tracing::warn!(upstream = %url, "cannot connect to the upstream MQTT broker: {error}");
        }
        self.counters.connected.store(false, Ordering::Relaxed);
        self.down_since
            .get_or_insert_with(tokio::time::Instant::now);
        self.link
            .send_if_modified(|l| std::mem::replace(&mut l.up, false));
        self.current = (self.current + 1) % self.settings.urls.len();
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        wait
    }

    /// A SUBACK: counts refused filters.
    pub(crate) fn subscribed(&self, refused: usize) {
        inc(&self.counters.subacks);
        if refused > 0 {
            self.counters
                .subscriptions_refused
                .fetch_add(refused as u64, Ordering::Relaxed);
            tracing::error!(refused, filters = ?self.filters, "the upstream refused uplink subscriptions: its ACL must let the broker's user read the uplink topics (see `fleet-broker acl`)");
        }
    }

    /// The filters to subscribe, with the shared group.
    pub(crate) fn filters(&self) -> Vec<String> {
        match &self.settings.shared_group {
            Some(group) => self
                .filters
                .iter()
                .map(|f| format!("$share/{group}/{f}"))
                .collect(),
            None => self.filters.clone(),
        }
    }

    /// The URL to connect to now.
    pub(crate) fn url(&self) -> &UpstreamUrl {
        &self.settings.urls[self.current]
    }

    pub(crate) fn settings(&self) -> &AttachSettings {
        &self.settings
    }

    /// The acknowledgement of QoS 1 message `pkid`, when it waits for the store (the
    /// link's `client` is only cloned then).
    pub(crate) fn ack(
        &self,
        pkid: u16,
        qos1: bool,
        client: impl FnOnce() -> AckClient,
    ) -> Option<UplinkAck> {
        (qos1 && self.settings.ack_when_stored).then(|| UplinkAck {
            client: client(),
            pkid,
            counters: self.counters.clone(),
        })
    }
}

/// The TLS material, read once at start.
#[derive(Clone)]
pub(crate) struct TlsFiles {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn read(tls: Option<&UpstreamTls>) -> Result<TlsFiles, UpstreamError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| UpstreamError::Read {
                path: path.clone(),
                source,
            })
        };
        let Some(tls) = tls else {
            return Ok(TlsFiles {
                ca: None,
                client: None,
            });
        };
        let ca = tls.ca.as_ref().map(read).transpose()?;
        let client = match &tls.client_cert {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(TlsFiles { ca, client })
    }

    /// The transport for `url`.
    pub(crate) fn transport(&self, url: &UpstreamUrl) -> rumqttc::Transport {
        if !url.tls {
            return rumqttc::Transport::tcp();
        }
        match &self.ca {
            Some(ca) => rumqttc::Transport::tls(ca.clone(), self.client.clone(), None),
            None => rumqttc::Transport::tls_with_default_config(),
        }
    }
}

enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Handle to the link. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    counters: Arc<UpstreamCounters>,
    link: watch::Receiver<Link>,
    describe: String,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("upstream", &self.inner.describe)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts connecting (in the background: until the first CONNACK the link is down and
    /// the engine blind) and hands every uplink to `uplink`.
    pub fn start(
        settings: AttachSettings,
        topics: Topics,
        journeys: crate::journeys::Journeys,
        uplink: mpsc::Sender<Uplink>,
    ) -> Result<Upstream, UpstreamError> {
        if settings.urls.is_empty() {
            return Err(UpstreamError::NoUrl);
        }
        // rustls needs a process-wide provider for mqtts:// (a second install is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = TlsFiles::read(settings.tls.as_ref())?;
        let counters = Arc::new(UpstreamCounters::default());
        let (link_tx, link_rx) = watch::channel(Link::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let describe = settings
            .urls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let protocol = settings.protocol;
        let mut filters = topics.uplink_filters();
        filters.extend(journeys.filters());
        let ctx = LoopCtx {
            filters,
            topics,
            journeys,
            uplink,
            counters: counters.clone(),
            link: link_tx,
            settings,
            current: 0,
            down_since: Some(tokio::time::Instant::now()),
            backoff: BACKOFF_MIN,
        };
        let (client, task) = match protocol {
            Protocol::V311 => {
                let (client, task) = v4::spawn(ctx, tls, stop_rx);
                (Client::V311(client), task)
            }
            Protocol::V5 => {
                let (client, task) = v5::spawn(ctx, tls, stop_rx);
                (Client::V5(client), task)
            }
        };
        tracing::info!(upstream = %describe, ?protocol, "attach mode: connecting to the upstream MQTT broker");
        Ok(Upstream {
            inner: Arc::new(Inner {
                client,
                counters,
                link: link_rx,
                describe,
                stop: stop_tx,
                task: std::sync::Mutex::new(Some(task)),
            }),
        })
    }

    /// The link's state, to watch.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.inner.link.clone()
    }

    /// The upstream URL(s).
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// Publishes upstream. Waits while the client's request queue is full (also while
    /// the link is down and the queue fills).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos1: bool,
        retain: bool,
    ) -> Result<(), String> {
        let result = match &self.inner.client {
            Client::V311(c) => {
                let qos = if qos1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                };
                c.publish_bytes(topic, qos, retain, payload)
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = if qos1 {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                } else {
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce
                };
                c.publish_bytes(topic, qos, retain, payload)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if result.is_ok() {
            inc(&self.inner.counters.published);
        }
        result
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UpstreamStats {
        self.inner.counters.snapshot()
    }

    /// Disconnects (what is queued is sent first, within a second) and stops.
    pub async fn shutdown(self) {
        let _ = match &self.inner.client {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
        let task = match self.inner.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                let _ = self.inner.stop.send(true);
                task.abort();
                let _ = task.await;
            }
        }
        tracing::info!(upstream = %self.inner.describe, "upstream link closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_parse_with_default_ports_and_refuse_other_schemes() {
        let u = UpstreamUrl::parse("mqtt://127.0.0.1:1884").expect("valid");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1884));
        let u = UpstreamUrl::parse("mqtts://broker.example.com").expect("valid");
        assert_eq!((u.tls, u.port), (true, 8883));
        assert_eq!(u.to_string(), "mqtts://broker.example.com:8883");
        let u = UpstreamUrl::parse("mqtt://[::1]:1883").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        for bad in [
            "tcp://x:1",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:99999",
            "x:1883",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
