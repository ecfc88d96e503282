//! A simulated rider backend: one MQTT client that sends lock requests ([`crate::journey`])
//! at a steady rate to vehicles picked pseudo-randomly, matches the answers by
//! `request_id`, and counts how each request ended and how long the answer took.
//!
//! [`Tracker`] is the matching, sans IO (every call takes `now`); [`Backend`] drives it
//! from one task that owns the connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fleet::Rng;
use crate::journey::{JourneyTopics, LockRequest, LockResult};
use crate::stats::{get, inc, Percentiles, Samples};

/// A request with no answer after this long is counted timed out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests pending at most; a request beyond it is refused and counted.
pub const MAX_PENDING: usize = 100_000;
/// Publishes queued in the MQTT client; beyond it a request is dropped and counted.
const CLIENT_QUEUE: usize = 1024;
/// Shortest gap between two sending rounds (the timer's resolution).
const MIN_TICK: Duration = Duration::from_millis(1);
/// Most of a rate's backlog sent in one round after a stall; the rest is dropped, so a
/// stall never turns into a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(20);
/// Delay before reconnecting after a connection error.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Why a request was not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `max_pending` requests are pending.
    #[error("too many requests pending")]
    Full,
    /// A pending request has the same id.
    #[error("a request with this id is pending")]
    Duplicate,
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered its request with `ok = true` after this long.
    Succeeded(Duration),
    /// It answered its request with `ok = false` after this long.
    Failed(Duration),
    /// Its request had timed out already.
    Late,
    /// It matches no request sent to the vehicle whose topic it came on.
    Unmatched,
}

struct Pending {
    vehicle: String,
    sent: Instant,
    deadline: (Instant, u64),
}

/// Pending requests by id, with their deadlines: matches answers and times requests out.
#[derive(Default)]
pub struct Tracker {
    timeout: Duration,
    max_pending: usize,
    seq: u64,
    pending: HashMap<String, Pending>,
    deadlines: BTreeMap<(Instant, u64), String>,
    /// Timed-out ids, kept one more timeout so their answers count late, not unmatched.
    expired: HashMap<String, Instant>,
    expired_order: VecDeque<(Instant, String)>,
}

impl Tracker {
    /// A tracker timing requests out after `timeout`, with at most `max_pending` pending.
    pub fn new(timeout: Duration, max_pending: usize) -> Tracker {
        Tracker {
            timeout,
            max_pending,
            ..Tracker::default()
        }
    }

    /// Requests pending now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Tracks request `id`, sent to `vehicle` at `now`.
    pub fn request(&mut self, id: String, vehicle: &str, now: Instant) -> Result<(), Refused> {
        if self.pending.len() >= self.max_pending {
            return Err(Refused::Full);
        }
        if self.pending.contains_key(&id) {
            return Err(Refused::Duplicate);
        }
        self.seq += 1;
        let deadline = (now + self.timeout, self.seq);
        self.deadlines.insert(deadline, id.clone());
        self.pending.insert(
            id,
            Pending {
                vehicle: vehicle.to_owned(),
                sent: now,
                deadline,
            },
        );
        Ok(())
    }

    /// Forgets request `id` (it could not be sent after all).
    pub fn cancel(&mut self, id: &str) {
        if let Some(p) = self.pending.remove(id) {
            self.deadlines.remove(&p.deadline);
        }
    }

    /// Matches an answer to request `id` that came on `vehicle`'s answer topic at `now`.
    pub fn answer(&mut self, vehicle: &str, id: &str, ok: bool, now: Instant) -> Outcome {
        match self.pending.get(id) {
            Some(p) if p.vehicle == vehicle => {}
            // Another vehicle answering for it does not end the request.
            Some(_) => return Outcome::Unmatched,
            None => {
                return match self.expired.remove(id) {
                    Some(_) => Outcome::Late,
                    None => Outcome::Unmatched,
                }
            }
        }
        let Some(p) = self.pending.remove(id) else {
            return Outcome::Unmatched;
        };
        self.deadlines.remove(&p.deadline);
        let latency = now.saturating_duration_since(p.sent);
        if ok {
            Outcome::Succeeded(latency)
        } else {
            Outcome::Failed(latency)
        }
    }

    /// Ends every request whose deadline is past; returns how many timed out.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut timed_out = 0;
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((deadline, _), id) = entry.remove_entry();
            if self.pending.remove(&id).is_some() {
                timed_out += 1;
                self.expired.insert(id.clone(), deadline + self.timeout);
                self.expired_order.push_back((deadline + self.timeout, id));
            }
        }
        // Forget timed-out ids after one more timeout, or the oldest beyond the bound.
        while let Some((forget_at, id)) = self.expired_order.front() {
            if *forget_at > now && self.expired_order.len() <= self.max_pending {
                break;
            }
            if self.expired.get(id) == Some(forget_at) {
                self.expired.remove(id);
            }
            self.expired_order.pop_front();
        }
        timed_out
    }

    /// When the next pending request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|k| k.0)
    }
}

/// Spreads `rate` requests per second evenly: how many are due at each round.
#[derive(Debug, Clone)]
pub struct Pace {
    rate: f64,
    start: Instant,
    issued: u64,
}

impl Pace {
    /// `per_sec` requests per second from `start` (0: none).
    pub fn new(per_sec: f64, start: Instant) -> Pace {
        Pace {
            rate: per_sec.max(0.0),
            start,
            issued: 0,
        }
    }

    /// The gap between two rounds (`None` at rate 0).
    pub fn period(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate).max(MIN_TICK))
    }

    /// (due now, skipped): requests due at `now` since the last call, and how many of a
    /// backlog beyond [`MAX_CATCH_UP`] are given up instead of sent in a burst.
    pub fn due(&mut self, now: Instant) -> (u64, u64) {
        let owed_total =
            (now.saturating_duration_since(self.start).as_secs_f64() * self.rate).floor() as u64;
        let owed = owed_total.saturating_sub(self.issued);
        let cap = ((self.rate * MAX_CATCH_UP.as_secs_f64()).ceil() as u64).max(1);
        self.issued = owed_total;
        (owed.min(cap), owed.saturating_sub(cap))
    }
}

/// The backend's counters.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests handed to the MQTT client.
    pub sent: AtomicU64,
    /// Answered `ok = true` within the timeout.
    pub ok: AtomicU64,
    /// Answered `ok = false` within the timeout.
    pub failed: AtomicU64,
    /// Not answered within the timeout.
    pub timed_out: AtomicU64,
    /// Answered after their timeout.
    pub late: AtomicU64,
    /// Answers matching no request of the vehicle they came from.
    pub unmatched: AtomicU64,
    /// Answers that are not a lock result (bad JSON, wrong topic shape).
    pub malformed: AtomicU64,
    /// Requests not sent because `max_pending` were pending.
    pub refused: AtomicU64,
    /// Requests due but not sent: not connected, client queue full, or a stall's backlog.
    pub dropped: AtomicU64,
    /// Requests pending now.
    pub pending: AtomicU64,
    /// Connection errors.
    pub errors: AtomicU64,
    /// Answer latencies (request handed to the client -> answer received), microseconds.
    pub latency: Samples,
}

/// The backend's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendFigures {
    /// See [`BackendStats::sent`].
    pub sent: u64,
    /// See [`BackendStats::ok`].
    pub ok: u64,
    /// See [`BackendStats::failed`].
    pub failed: u64,
    /// See [`BackendStats::timed_out`].
    pub timed_out: u64,
    /// See [`BackendStats::late`].
    pub late: u64,
    /// See [`BackendStats::unmatched`].
    pub unmatched: u64,
    /// See [`BackendStats::malformed`].
    pub malformed: u64,
    /// See [`BackendStats::refused`].
    pub refused: u64,
    /// See [`BackendStats::dropped`].
    pub dropped: u64,
    /// See [`BackendStats::pending`].
    pub pending: u64,
}

impl BackendStats {
    /// The counters now.
    pub fn figures(&self) -> BackendFigures {
        BackendFigures {
            sent: get(&self.sent),
            ok: get(&self.ok),
            failed: get(&self.failed),
            timed_out: get(&self.timed_out),
            late: get(&self.late),
            unmatched: get(&self.unmatched),
            malformed: get(&self.malformed),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
            pending: get(&self.pending),
        }
    }

    /// Percentiles of the latencies recorded since the last call (which it takes).
    pub fn take_latency(&self) -> Percentiles {
        Percentiles::of_micros(self.latency.take())
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded(d) => {
                inc(&self.ok);
                self.latency.record(d);
            }
            Outcome::Failed(d) => {
                inc(&self.failed);
                self.latency.record(d);
            }
            Outcome::Late => inc(&self.late),
            Outcome::Unmatched => inc(&self.unmatched),
        }
    }
}

impl BackendFigures {
    /// The counts since `earlier` (`pending` stays as it is now).
    pub fn since(&self, earlier: &BackendFigures) -> BackendFigures {
        BackendFigures {
            sent: self.sent.saturating_sub(earlier.sent),
            ok: self.ok.saturating_sub(earlier.ok),
            failed: self.failed.saturating_sub(earlier.failed),
            timed_out: self.timed_out.saturating_sub(earlier.timed_out),
            late: self.late.saturating_sub(earlier.late),
            unmatched: self.unmatched.saturating_sub(earlier.unmatched),
            malformed: self.malformed.saturating_sub(earlier.malformed),
            refused: self.refused.saturating_sub(earlier.refused),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            pending: self.pending,
        }
    }
}

/// How the backend connects and what it sends.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Broker address.
    pub broker: SocketAddr,
    /// MQTT client id.
    pub client_id: String,
    /// MQTT username and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// Request and answer topics.
    pub topics: JourneyTopics,
    /// Requests per second at start (0: none until [`Backend::set_rate`]).
    pub rate: f64,
    /// A request with no answer after this long is timed out.
    pub timeout: Duration,
    /// Requests pending at most.
    pub max_pending: usize,
    /// The vehicles requests go to, each picked uniformly.
    pub vehicles: Vec<String>,
    /// Seed of the vehicle choice.
    pub seed: u64,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            broker: SocketAddr::from(([127, 0, 0, 1], 1883)),
            client_id: "sim-backend".into(),
            credentials: None,
            topics: JourneyTopics::default(),
            rate: 0.0,
            timeout: DEFAULT_TIMEOUT,
            max_pending: MAX_PENDING,
            vehicles: Vec::new(),
            seed: 0x10C4,
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// Why the backend cannot start or take a setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// No vehicle to send requests to.
    #[error("the backend has no vehicles to send requests to")]
    NoVehicles,
    /// A rate that is negative or not a number.
    #[error("request rate {0}: use a number of requests per second, 0 or more")]
    Rate(f64),
    /// A zero timeout.
    #[error("request timeout must be above zero")]
    Timeout,
    /// A zero pending bound.
    #[error("the pending request bound must be above zero")]
    MaxPending,
}

fn check_rate(per_sec: f64) -> Result<f64, BackendError> {
    if per_sec.is_finite() && per_sec >= 0.0 {
        Ok(per_sec)
    } else {
        Err(BackendError::Rate(per_sec))
    }
}

struct Shared {
    stats: BackendStats,
    ready: AtomicBool,
}

/// A running backend. Dropping it stops it.
pub struct Backend {
    shared: Arc<Shared>,
    client: AsyncClient,
    rate: watch::Sender<f64>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Checks `opts` and starts connecting on the current runtime; returns at once.
    pub fn start(opts: BackendOptions) -> Result<Backend, BackendError> {
        if opts.vehicles.is_empty() {
            return Err(BackendError::NoVehicles);
        }
        let rate = check_rate(opts.rate)?;
        if opts.timeout.is_zero() {
            return Err(BackendError::Timeout);
        }
        if opts.max_pending == 0 {
            return Err(BackendError::MaxPending);
        }
        let mut mqtt = MqttOptions::new(
            opts.client_id.as_str(),
            opts.broker.ip().to_string(),
            opts.broker.port(),
        );
        mqtt.set_keep_alive(opts.keep_alive);
        mqtt.set_clean_session(true);
        mqtt.set_inflight(CLIENT_QUEUE as u16);
        if let Some((user, password)) = &opts.credentials {
            mqtt.set_credentials(user.clone(), password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, CLIENT_QUEUE);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(10);
        eventloop.set_network_options(net);
        let shared = Arc::new(Shared {
            stats: BackendStats::default(),
            ready: AtomicBool::new(false),
        });
        let (rate_tx, rate_rx) = watch::channel(rate);
        let task = tokio::spawn(drive(
            shared.clone(),
            client.clone(),
            eventloop,
            opts,
            rate_rx,
        ));
        Ok(Backend {
            shared,
            client,
            rate: rate_tx,
            task,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &BackendStats {
        &self.shared.stats
    }

    /// Connected and subscribed to the answers.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// Changes the request rate (0 stops sending; pending requests still end).
    pub fn set_rate(&self, per_sec: f64) -> Result<(), BackendError> {
        self.rate.send_replace(check_rate(per_sec)?);
        Ok(())
    }

    /// Disconnects (waiting briefly for the DISCONNECT to go out) and stops.
    pub async fn shutdown(mut self) {
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.task).await;
        }
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A timer for the sending rounds of a `Pace` (none at rate 0).
fn rounds(pace: &Pace) -> Option<tokio::time::Interval> {
    pace.period().map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(MissedTickBehavior::Skip);
        i
    })
}

async fn next_round(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The backend's one task: sends on the pace, matches answers, times requests out.
async fn drive(
    shared: Arc<Shared>,
    client: AsyncClient,
    mut el: EventLoop,
    opts: BackendOptions,
    mut rate: watch::Receiver<f64>,
) {
    let stats = &shared.stats;
    let mut tracker = Tracker::new(opts.timeout, opts.max_pending);
    let mut rng = Rng::new(opts.seed);
    // Ids unique across runs too: a late answer from an earlier run matches nothing.
    let run = format!("{}-{:x}", opts.client_id, crate::unix_ms());
    let mut seq: u64 = 0;
    let mut pace = Pace::new(*rate.borrow_and_update(), Instant::now());
    let mut timer = rounds(&pace);
    let filter = opts.topics.response_filter();
    loop {
        tokio::select! {
            _ = next_round(&mut timer) => {
                let (due, skipped) = pace.due(Instant::now());
                stats.dropped.fetch_add(skipped, Ordering::Relaxed);
                for _ in 0..due {
                    if !shared.ready.load(Ordering::Relaxed) {
                        inc(&stats.dropped);
                        continue;
                    }
                    seq += 1;
                    let vehicle = &opts.vehicles[rng.below(opts.vehicles.len() as u64) as usize];
                    let id = format!("{run}-{seq}");
                    let payload = LockRequest { request_id: id.clone(), action: "unlock".into() };
                    let Ok(payload) = serde_json::to_vec(&payload) else {
                        continue;
                    };
                    if tracker.request(id.clone(), vehicle, Instant::now()).is_err() {
                        inc(&stats.refused);
                        continue;
                    }
                    match client.try_publish(opts.topics.request(vehicle), QoS::AtLeastOnce, false, payload) {
                        Ok(()) => inc(&stats.sent),
                        Err(_) => {
                            tracker.cancel(&id);
                            inc(&stats.dropped);
                        }
                    }
                }
            }
            changed = rate.changed() => {
                if changed.is_err() {
                    return;
                }
                pace = Pace::new(*rate.borrow_and_update(), Instant::now());
                timer = rounds(&pace);
            }
            _ = until(tracker.next_deadline()) => {
                let n = tracker.expire(Instant::now());
                stats.timed_out.fetch_add(n, Ordering::Relaxed);
            }
            event = el.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if client.try_subscribe(filter.as_str(), QoS::AtLeastOnce).is_err() {
                        inc(&stats.errors);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let ok = matches!(ack.return_codes.first(), Some(rumqttc::SubscribeReasonCode::Success(_)));
                    if !ok {
                        inc(&stats.errors);
                        tracing::warn!(filter = %filter, codes = ?ack.return_codes, "backend: answer subscription refused");
                    }
                    shared.ready.store(ok, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    let answer = serde_json::from_slice::<LockResult>(&p.payload);
                    match (opts.topics.vehicle_of_response(&p.topic), answer) {
                        (Some(vehicle), Ok(r)) => {
                            stats.record(tracker.answer(vehicle, &r.request_id, r.ok, now));
                        }
                        _ => inc(&stats.malformed),
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    if shared.ready.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "backend: connection lost; reconnecting");
                    }
                    inc(&stats.errors);
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            },
        }
        stats
            .pending
            .store(tracker.pending() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tracker() -> (Tracker, Instant) {
        (Tracker::new(100 * MS, 3), Instant::now())
    }

    #[test]
    fn an_answer_ends_its_request_with_its_latency() {
        let (mut t, t0) = tracker();
        t.request("a".into(), "v1", t0).unwrap();
        t.request("b".into(), "v2", t0).unwrap();
        assert_eq!(
            t.answer("v1", "a", true, t0 + 7 * MS),
            Outcome::Succeeded(7 * MS)
        );
        assert_eq!(
            t.answer("v2", "b", false, t0 + 9 * MS),
            Outcome::Failed(9 * MS)
        );
        assert_eq!(t.pending(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_request_ends_once() {
        let (mut t, t0) = tracker();
        t.request("a".into(), "v1", t0).unwrap();
        assert!(matches!(
            t.answer("v1", "a", true, t0),
            Outcome::Succeeded(_)
        ));
        assert_eq!(t.answer("v1", "a", true, t0), Outcome::Unmatched);
        assert_eq!(t.expire(t0 + 200 * MS), 0);
    }

    #[test]
    fn an_answer_from_another_vehicle_is_unmatched_and_ends_nothing() {
        let (mut t, t0) = tracker();
        t.request("a".into(), "v1", t0).unwrap();
        assert_eq!(t.answer("v2", "a", true, t0), Outcome::Unmatched);
        assert_eq!(t.answer("v1", "zzz", true, t0), Outcome::Unmatched);
        assert_eq!(t.pending(), 1);
        assert!(matches!(
            t.answer("v1", "a", true, t0),
            Outcome::Succeeded(_)
        ));
    }

    #[test]
    fn a_request_without_an_answer_times_out_at_its_deadline_and_its_answer_is_late() {
        let (mut t, t0) = tracker();
        t.request("a".into(), "v1", t0).unwrap();
        t.request("b".into(), "v1", t0 + 50 * MS).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + 100 * MS));
        assert_eq!(t.expire(t0 + 99 * MS), 0);
        assert_eq!(t.expire(t0 + 100 * MS), 1);
        assert_eq!(t.next_deadline(), Some(t0 + 150 * MS));
        assert_eq!(t.answer("v1", "a", true, t0 + 120 * MS), Outcome::Late);
        // Late once; then it is forgotten.
        assert_eq!(t.answer("v1", "a", true, t0 + 121 * MS), Outcome::Unmatched);
        assert_eq!(t.expire(t0 + 150 * MS), 1);
        assert_eq!(t.expire(t0 + 260 * MS), 0);
        assert_eq!(t.answer("v1", "b", true, t0 + 260 * MS), Outcome::Unmatched);
    }

    #[test]
    fn pending_requests_are_bounded_and_an_ended_one_frees_its_place() {
        let (mut t, t0) = tracker();
        for id in ["a", "b", "c"] {
            t.request(id.into(), "v1", t0).unwrap();
        }
        assert_eq!(t.request("d".into(), "v1", t0), Err(Refused::Full));
        t.cancel("b");
        assert_eq!(t.request("a".into(), "v1", t0), Err(Refused::Duplicate));
        t.request("d".into(), "v1", t0).unwrap();
        assert_eq!(t.pending(), 3);
    }

    #[test]
    fn the_figures_count_each_outcome_and_give_the_latency_percentiles() {
        let stats = BackendStats::default();
        for ms in 1..=98 {
            stats.record(Outcome::Succeeded(ms * MS));
        }
        stats.record(Outcome::Failed(99 * MS));
        stats.record(Outcome::Failed(100 * MS));
        stats.record(Outcome::Late);
        stats.record(Outcome::Unmatched);
        let f = stats.figures();
        assert_eq!((f.ok, f.failed, f.late, f.unmatched), (98, 2, 1, 1));
        let p = stats.take_latency();
        assert_eq!((p.n, p.p50_ms, p.p99_ms), (100, 50.0, 99.0));
        assert_eq!(stats.take_latency().n, 0, "taken");
        let later = BackendFigures { ok: 105, ..f };
        assert_eq!(later.since(&f).ok, 7);
    }

    #[test]
    fn the_pace_spreads_a_rate_evenly_and_never_bursts_after_a_stall() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000.0, t0);
        assert_eq!(p.period(), Some(MS));
        let sent: u64 = (1..=1000).map(|ms| p.due(t0 + ms * MS).0).sum();
        assert_eq!(sent, 1000);
        // Two seconds without a round: 20 ms worth go out, the rest is given up.
        assert_eq!(p.due(t0 + 3000 * MS), (20, 1980));
        assert_eq!(Pace::new(0.0, t0).period(), None);
        assert_eq!(Pace::new(0.0, t0).due(t0 + 1000 * MS), (0, 0));
        // Rates above the timer's resolution send several per round.
        let mut fast = Pace::new(10_000.0, t0);
        assert_eq!(fast.period(), Some(MS));
        assert_eq!(fast.due(t0 + MS), (10, 0));
    }

    #[test]
    fn a_backend_refuses_settings_it_cannot_run() {
        let start = |o: BackendOptions| Backend::start(o).err();
        let some = || BackendOptions {
            vehicles: vec!["v1".into()],
            ..BackendOptions::default()
        };
        assert_eq!(
            start(BackendOptions::default()),
            Some(BackendError::NoVehicles)
        );
        let nan = start(BackendOptions {
            rate: f64::NAN,
            ..some()
        });
        assert!(matches!(nan, Some(BackendError::Rate(_))));
        assert_eq!(
            start(BackendOptions {
                rate: -1.0,
                ..some()
            })
            .map(|e| e.to_string()),
            Some("request rate -1: use a number of requests per second, 0 or more".into())
        );
        assert_eq!(
            start(BackendOptions {
                timeout: Duration::ZERO,
                ..some()
            }),
            Some(BackendError::Timeout)
        );
    }
}
