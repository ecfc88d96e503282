//! A standby's watch on the uplinks (attach mode): its own link to the leader's upstream,
//! a clean session with a plain (not shared) QoS 0 subscription to the same uplink
//! filters, so it hears every uplink the leader hears and keeps when each vehicle last
//! spoke. It publishes nothing and sends no commands. At a takeover its record becomes the
//! restored fleet's last-seen times ([`fleet_rules::Watched`]): a vehicle it heard keeps
//! its own deadline, one it did not hear for a whole timeout is silent, and the restart
//! grace counts from when the watch began instead of from the takeover.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_rules::UnixMs;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::contract::Topics;
use crate::mqtt::upstream::{AttachSettings, Link, Upstream, UpstreamError};
use crate::mqtt::Uplink;

/// Uplinks queued between the link and the record.
const WATCH_QUEUE: usize = 4096;

/// What the watch needs besides the leader's upstream settings.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The leader's `[mqtt.attach]`: the watch uses its URLs, TLS and protocol.
    pub attach: AttachSettings,
    /// Username and password of the watch (default: the leader's). An upstream that
    /// takes the username as the client id needs a user of its own here, or the watch
    /// would take over the leader's session.
    pub credentials: Option<(String, String)>,
    /// This engine's node name: the watch's client id is `{client_id}-watch-{node}`.
    pub node: String,
    /// The uplink topics.
    pub topics: Topics,
    /// Largest uplink payload (as the engine checks it).
    pub max_payload: usize,
    /// Most vehicles recorded (the engine's `max_vehicles`).
    pub max_vehicles: usize,
}

/// The running watch.
pub struct Watch {
    upstream: Upstream,
    heard: Arc<Mutex<Heard>>,
    counters: Arc<WatchCounters>,
    task: JoinHandle<()>,
}

/// The watch's counters, for a standby's /metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Valid uplinks heard (past the vehicle cap too).
    pub heard: AtomicU64,
    /// Vehicles with a last-seen time.
    pub vehicles: AtomicU64,
    /// 1 while the watch has been listening without a break.
    pub watching: AtomicU64,
}

#[derive(Default)]
struct Heard {
    /// Since when the link has been up without a break (none while it is down).
    since: Option<UnixMs>,
    last_seen: HashMap<Box<str>, UnixMs>,
}

impl Watch {
    /// Connects (in the background) and starts recording.
    pub fn start(settings: WatchSettings, clock: Clock) -> Result<Watch, UpstreamError> {
        let WatchSettings {
            attach,
            credentials,
            node,
            topics,
            max_payload,
            max_vehicles,
        } = settings;
        let link = AttachSettings {
            client_id: format!("{}-watch-{node}", attach.client_id),
            credentials: credentials.or(attach.credentials.clone()),
            shared_group: None,
            qos1: false,
            session_expiry: Duration::ZERO,
            ack_when_stored: false,
            ..attach
        };
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let upstream = Upstream::start(link, topics.clone(), Default::default(), tx)?;
        let heard = Arc::new(Mutex::new(Heard::default()));
        let counters = Arc::new(WatchCounters::default());
        let record = Record {
            heard: heard.clone(),
            counters: counters.clone(),
            topics,
            max_payload,
            max_vehicles,
            clock,
        };
        let task = tokio::spawn(record.run(rx, upstream.link()));
        tracing::info!(
            upstream = upstream.describe(),
            "standby: watching the uplinks (publishing nothing)"
        );
        Ok(Watch {
            upstream,
            heard,
            counters,
            task,
        })
    }

    /// What was heard so far, for the restore at `now`.
    pub fn watched(&self, now: UnixMs) -> fleet_rules::Watched {
        let heard = lock(&self.heard);
        fleet_rules::Watched {
            since: heard.since.unwrap_or(now).min(now),
            last_seen: heard
                .last_seen
                .iter()
                .map(|(id, &at)| (id.to_string(), at))
                .collect(),
        }
    }

    /// Its link's state.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.upstream.link()
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<WatchCounters> {
        &self.counters
    }

    /// Disconnects and stops recording.
    pub async fn stop(self) {
        self.upstream.shutdown().await;
        self.task.abort();
        let _ = self.task.await;
    }
}

fn lock(heard: &Mutex<Heard>) -> std::sync::MutexGuard<'_, Heard> {
    heard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Record {
    heard: Arc<Mutex<Heard>>,
    counters: Arc<WatchCounters>,
    topics: Topics,
    max_payload: usize,
    max_vehicles: usize,
    clock: Clock,
}

impl Record {
    async fn run(self, mut rx: mpsc::Receiver<Uplink>, mut link: watch::Receiver<Link>) {
        let mut link_open = true;
        loop {
            tokio::select! {
                up = rx.recv() => match up {
                    Some(up) => self.uplink(&up),
                    None => return,
                },
                changed = link.changed(), if link_open => match changed {
                    Ok(()) => {
                        let up = link.borrow_and_update().up;
                        self.link(up);
                    }
                    Err(_) => link_open = false,
                },
            }
        }
    }

    fn uplink(&self, up: &Uplink) {
        let Ok((vehicle, _)) = crate::ingest::decode(
            &self.topics,
            &up.client_id,
            &up.topic,
            &up.payload,
            self.max_payload,
        ) else {
            return; // the leader counts rejections; the watch only records who spoke
        };
        let now = self.clock.now();
        let mut heard = lock(&self.heard);
        if let Some(at) = heard.last_seen.get_mut(vehicle) {
            *at = now;
        } else if heard.last_seen.len() < self.max_vehicles {
            heard.last_seen.insert(vehicle.into(), now);
            self.counters
                .vehicles
                .store(heard.last_seen.len() as u64, Ordering::Relaxed);
        }
        self.counters.heard.fetch_add(1, Ordering::Relaxed);
    }

    fn link(&self, up: bool) {
        let mut heard = lock(&self.heard);
        heard.since = match (up, heard.since) {
            (true, None) => Some(self.clock.now()),
            (true, since) => since,
            (false, _) => None,
        };
        self.counters
            .watching
            .store(u64::from(heard.since.is_some()), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(max_vehicles: usize) -> Record {
        Record {
            heard: Arc::new(Mutex::new(Heard::default())),
            counters: Arc::new(WatchCounters::default()),
            topics: Topics::default(),
            max_payload: 1024,
            max_vehicles,
            clock: Clock::starting_at(1_000_000),
        }
    }

    fn uplink(vehicle: &str, kind: &str, payload: &[u8]) -> Uplink {
        Uplink {
            client_id: vehicle.into(),
            topic: format!("vehicles/{vehicle}/{kind}"),
            payload: bytes::Bytes::copy_from_slice(payload),
            ack: None,
            journey: None,
        }
    }

    fn watched(r: &Record) -> fleet_rules::Watched {
        let heard = lock(&r.heard);
        let mut last_seen: Vec<_> = heard
            .last_seen
            .iter()
            .map(|(id, &at)| (id.to_string(), at))
            .collect();
        last_seen.sort();
        fleet_rules::Watched {
            since: heard.since.unwrap_or(u64::MAX),
            last_seen,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_who_spoke_and_when_and_restarts_the_watch_after_a_break() {
        let r = record(2);
        r.link(true);
        let from = r.clock.now();
        r.uplink(&uplink("sc-1", "heartbeat", b"{}"));
        tokio::time::advance(Duration::from_secs(5)).await;
        r.uplink(&uplink("sc-1", "heartbeat", b"{\"battery\":50}"));
        r.uplink(&uplink("sc-2", "error", b"not json"));
        r.uplink(&uplink("sc-3", "heartbeat", b"{}"));
        r.uplink(&uplink("sc-4", "heartbeat", b"{}"));
        let w = watched(&r);
        assert_eq!(w.since, from);
        assert_eq!(
            w.last_seen,
            [("sc-1".into(), from + 5_000), ("sc-3".into(), from + 5_000)],
            "a rejected uplink is not a sign of life; past the cap nobody new is recorded"
        );
        assert_eq!(r.counters.heard.load(Ordering::Relaxed), 4);
        assert_eq!(r.counters.vehicles.load(Ordering::Relaxed), 2);
        r.link(false);
        assert_eq!(r.counters.watching.load(Ordering::Relaxed), 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        r.link(true);
        r.link(true);
        assert_eq!(
            watched(&r).since,
            from + 10_000,
            "what was missed during the break is unknown: the watch begins again"
        );
    }
}
