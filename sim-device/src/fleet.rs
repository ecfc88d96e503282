//! A simulated fleet: N vehicles, each a real MQTT connection (client id = vehicle id) that
//! subscribes to its command topic, applies and acknowledges commands, and heartbeats on a
//! jittered period reporting the state it applies.
//!
//! One task per vehicle drives its connection (reconnecting with jittered backoff); a few
//! scheduler tasks send every vehicle's heartbeats from one timer each, which costs far
//! less CPU than a timer per vehicle. A *probe* is a heartbeat that reports
//! `out_of_service` while the vehicle applies `in_service`: the broker answers it with a
//! `service_in` command (at most once per `commands.resend_interval`), so the time from
//! the probe to that command is a measured heartbeat -> rules -> command round trip.
//!
//! With journeys on, each vehicle also subscribes to its lock request topic and answers
//! each request after a short delay, as its [`UnlockPolicy`] says.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_contract::{Topics, UplinkKind};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeFilter,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::journey::{self, JourneyOptions, UnlockPolicy};
use crate::stats::{inc, FleetStats};
use crate::ReceivedCommand;

/// A probe with no answer after this long is counted lost and may be sent again.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay; doubles per failure up to `BACKOFF_MAX`, each one jittered.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Requests (publishes, acks) queued per vehicle; beyond it a heartbeat is dropped and
/// counted instead of waiting, so a slow broker shows up as backpressure, not as a stall.
const REQUEST_QUEUE: usize = 16;
/// Longest a scheduler sleeps, so changed settings take effect quickly.
const SCHEDULER_TICK: Duration = Duration::from_millis(20);
/// Lock answers waiting for their delay, fleet-wide; beyond it a request goes unanswered
/// and is counted in `unlock_answers_dropped`.
const ANSWER_QUEUE: usize = 16_384;

/// How a fleet connects and behaves.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Broker addresses; vehicle `i` uses `brokers[i % len]` (spreads the 4-tuples).
    pub brokers: Vec<SocketAddr>,
    /// Number of vehicles.
    pub vehicles: usize,
    /// Index of the first vehicle (several processes share one id space this way).
    pub id_offset: usize,
    /// Vehicle id prefix: ids are `{prefix}-{index:06}`.
    pub prefix: String,
    /// Mean heartbeat period.
    pub heartbeat: Duration,
    /// Each period is drawn uniformly from `heartbeat * (1 ± jitter)`.
    pub jitter: f64,
    /// New connections per second while ramping up.
    pub ramp_per_sec: u32,
    /// Heartbeats at QoS 1 (else QoS 0).
    pub qos1: bool,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Share of heartbeats sent as probes (0 = none).
    pub probe_fraction: f64,
    /// Scheduler tasks sending heartbeats.
    pub schedulers: usize,
    /// The broker's topic layout (contract v1 by default).
    pub topics: Topics,
    /// Answer lock requests (off: no subscription beyond the command topic).
    pub journeys: Option<JourneyOptions>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            brokers: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            vehicles: 100,
            id_offset: 0,
            prefix: "sim".into(),
            heartbeat: Duration::from_secs(30),
            jitter: 0.1,
            ramp_per_sec: 2000,
            qos1: false,
            keep_alive: Duration::from_secs(60),
            probe_fraction: 0.0,
            schedulers: 4,
            topics: Topics::default(),
            journeys: None,
        }
    }
}

/// What a vehicle does with the commands it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckPolicy {
    /// Apply and acknowledge at once.
    Prompt = 0,
    /// Apply at once, acknowledge after the fleet's slow-ack delay.
    Slow = 1,
    /// Apply, never acknowledge.
    Missing = 2,
}

impl AckPolicy {
    fn from_u8(x: u8) -> AckPolicy {
        match x {
            1 => AckPolicy::Slow,
            2 => AckPolicy::Missing,
            _ => AckPolicy::Prompt,
        }
    }
}

/// One simulated vehicle's state, shared by its connection task and the schedulers.
#[derive(Debug)]
pub struct VehicleState {
    /// Vehicle id (= MQTT client id).
    pub id: String,
    heartbeat_topic: String,
    error_topic: String,
    command_topic: String,
    ack_topic: String,
    /// (request, result) topics with journeys on.
    lock_topics: Option<(String, String)>,
    ready: AtomicBool,
    ever_ready: AtomicBool,
    out_of_service: AtomicBool,
    silent: AtomicBool,
    flapping: AtomicBool,
    ack_policy: AtomicU8,
    unlock_policy: AtomicU8,
    seq: AtomicU64,
    probe_sent_us: AtomicU64,
    last_heartbeat_us: AtomicU64,
    ready_at_us: AtomicU64,
    service_out_at_us: AtomicU64,
    service_in_at_us: AtomicU64,
    kick: Notify,
}

/// Microseconds since the fleet started (0 means "never").
pub type Micros = u64;

impl VehicleState {
    /// Where this vehicle's heartbeats go.
    pub fn heartbeat_topic(&self) -> &str {
        &self.heartbeat_topic
    }

    fn new(id: String, topics: &Topics, journeys: Option<&JourneyOptions>) -> VehicleState {
        VehicleState {
            heartbeat_topic: topics.uplink(&id, UplinkKind::Heartbeat),
            error_topic: topics.uplink(&id, UplinkKind::Error),
            command_topic: topics.command(&id),
            ack_topic: topics.uplink(&id, UplinkKind::Ack),
            lock_topics: journeys.map(|j| (j.topics.request(&id), j.topics.response(&id))),
            unlock_policy: AtomicU8::new(journeys.map_or(0, |j| j.policy as u8)),
            id,
            ready: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            out_of_service: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            flapping: AtomicBool::new(false),
            ack_policy: AtomicU8::new(AckPolicy::Prompt as u8),
            seq: AtomicU64::new(0),
            probe_sent_us: AtomicU64::new(0),
            last_heartbeat_us: AtomicU64::new(0),
            ready_at_us: AtomicU64::new(0),
            service_out_at_us: AtomicU64::new(0),
            service_in_at_us: AtomicU64::new(0),
            kick: Notify::new(),
        }
    }

    /// Connected and subscribed to its command topic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// When it last became ready.
    pub fn ready_at(&self) -> Micros {
        self.ready_at_us.load(Ordering::Relaxed)
    }

    /// Applies `out_of_service` (from the last command).
    pub fn is_out_of_service(&self) -> bool {
        self.out_of_service.load(Ordering::Relaxed)
    }

    /// When its last heartbeat was handed to the client.
    pub fn last_heartbeat(&self) -> Micros {
        self.last_heartbeat_us.load(Ordering::Relaxed)
    }

    /// When the last `service_out` command arrived.
    pub fn service_out_at(&self) -> Micros {
        self.service_out_at_us.load(Ordering::Relaxed)
    }

    /// When the last `service_in` command arrived.
    pub fn service_in_at(&self) -> Micros {
        self.service_in_at_us.load(Ordering::Relaxed)
    }

    /// When the probe waiting for its answer was sent (0: none waiting).
    pub fn probe_sent_at(&self) -> Micros {
        self.probe_sent_us.load(Ordering::Relaxed)
    }

    /// A probe is waiting for its answer.
    pub fn probe_outstanding(&self) -> bool {
        self.probe_sent_us.load(Ordering::Relaxed) != 0
    }
}

/// Fleet-wide settings that can change while it runs.
#[derive(Debug)]
struct Control {
    period_us: AtomicU64,
    generation: AtomicU64,
    heartbeats_on: AtomicBool,
    probe_ppm: AtomicU64,
    qos1: AtomicBool,
    probe_on_ready: AtomicBool,
    slow_ack_us: AtomicU64,
    flap_low_us: AtomicU64,
    flap_high_us: AtomicU64,
    jitter_ppm: u64,
}

struct Shared {
    epoch: Instant,
    vehicles: Vec<VehicleState>,
    clients: Vec<AsyncClient>,
    control: Control,
    stats: FleetStats,
    /// Lock answers (due, vehicle, payload) waiting for their delay, with journeys on.
    answers: Option<(Duration, journey::DueQueue<(u32, String)>)>,
}

impl Shared {
    fn now_us(&self) -> Micros {
        self.epoch.elapsed().as_micros() as u64 + 1
    }
}

/// A running simulated fleet. Dropping it stops every vehicle.
pub struct Fleet {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// A small deterministic PRNG (SplitMix64): jitter needs spread, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// `d` scaled by a uniform factor in `[1 - spread, 1 + spread]` (spread in ppm).
    fn jittered_us(&mut self, d_us: u64, spread_ppm: u64) -> u64 {
        let spread = d_us.saturating_mul(spread_ppm) / 1_000_000;
        d_us.saturating_sub(spread) + self.below(2 * spread + 1)
    }
}

fn ppm(fraction: f64) -> u64 {
    (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64
}

impl Fleet {
    /// Starts connecting the fleet at `ramp_per_sec` on the current runtime and returns at
    /// once; see [`Fleet::ready`] for progress.
    pub fn start(opts: &FleetOptions) -> Fleet {
        let mut vehicles = Vec::with_capacity(opts.vehicles);
        let mut clients = Vec::with_capacity(opts.vehicles);
        let mut loops = Vec::with_capacity(opts.vehicles);
        for i in 0..opts.vehicles {
            let id = format!("{}-{:06}", opts.prefix, opts.id_offset + i);
            let broker = opts.brokers[i % opts.brokers.len().max(1)];
            let mut mqtt = MqttOptions::new(id.as_str(), broker.ip().to_string(), broker.port());
            mqtt.set_keep_alive(opts.keep_alive);
            mqtt.set_clean_session(true);
            mqtt.set_inflight(REQUEST_QUEUE as u16);
            mqtt.set_max_packet_size(16 * 1024, 16 * 1024);
            let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_QUEUE);
            let mut net = NetworkOptions::new();
            net.set_tcp_nodelay(true);
            net.set_connection_timeout(10);
            eventloop.set_network_options(net);
            vehicles.push(VehicleState::new(id, &opts.topics, opts.journeys.as_ref()));
            clients.push(client);
            loops.push(eventloop);
        }
        let period_us = opts.heartbeat.as_micros().max(1) as u64;
        let (answers, answer_queue) = match &opts.journeys {
            Some(j) => {
                let (tx, rx) = mpsc::channel(ANSWER_QUEUE);
                (Some((j.answer_delay, tx)), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            vehicles,
            clients,
            control: Control {
                period_us: AtomicU64::new(period_us),
                generation: AtomicU64::new(0),
                heartbeats_on: AtomicBool::new(true),
                probe_ppm: AtomicU64::new(ppm(opts.probe_fraction)),
                qos1: AtomicBool::new(opts.qos1),
                probe_on_ready: AtomicBool::new(false),
                slow_ack_us: AtomicU64::new(5_000_000),
                flap_low_us: AtomicU64::new(period_us),
                flap_high_us: AtomicU64::new(period_us),
                jitter_ppm: ppm(opts.jitter),
            },
            stats: FleetStats::default(),
            answers,
        });
        let mut tasks = Vec::new();
        if let Some(rx) = answer_queue {
            let s = shared.clone();
            tasks.push(tokio::spawn(journey::deliver_when_due(
                rx,
                move |(i, answer): (u32, String)| send_lock_answer(&s, i as usize, answer),
            )));
        }
        let schedulers = opts.schedulers.clamp(1, 64);
        for shard in 0..schedulers {
            tasks.push(tokio::spawn(schedule(shared.clone(), shard, schedulers)));
        }
        tasks.push(tokio::spawn(ramp(shared.clone(), loops, opts.ramp_per_sec)));
        Fleet { shared, tasks }
    }

    /// The counters.
    pub fn stats(&self) -> &FleetStats {
        &self.shared.stats
    }

    /// Number of vehicles.
    pub fn len(&self) -> usize {
        self.shared.vehicles.len()
    }

    /// No vehicles at all.
    pub fn is_empty(&self) -> bool {
        self.shared.vehicles.is_empty()
    }

    /// Vehicle `i`.
    pub fn vehicle(&self, i: usize) -> Option<&VehicleState> {
        self.shared.vehicles.get(i)
    }

    /// Vehicles connected and subscribed now.
    pub fn ready(&self) -> usize {
        self.shared.stats.connected.load(Ordering::Relaxed).max(0) as usize
    }

    /// Microseconds since the fleet started.
    pub fn now_us(&self) -> Micros {
        self.shared.now_us()
    }

    /// The instant `us` microseconds after the fleet started.
    pub fn instant_at(&self, us: Micros) -> Instant {
        self.shared.epoch + Duration::from_micros(us)
    }

    /// Changes the mean heartbeat period; every vehicle is rescheduled, spread evenly.
    pub fn set_heartbeat(&self, period: Duration) {
        let c = &self.shared.control;
        c.period_us
            .store(period.as_micros().max(1) as u64, Ordering::Relaxed);
        c.generation.fetch_add(1, Ordering::Release);
    }

    /// Pauses (false) or resumes (true) every heartbeat.
    pub fn set_heartbeats_on(&self, on: bool) {
        self.shared
            .control
            .heartbeats_on
            .store(on, Ordering::Relaxed);
        self.shared
            .control
            .generation
            .fetch_add(1, Ordering::Release);
    }

    /// Share of heartbeats sent as probes.
    pub fn set_probe_fraction(&self, fraction: f64) {
        self.shared
            .control
            .probe_ppm
            .store(ppm(fraction), Ordering::Relaxed);
    }

    /// Heartbeat QoS.
    pub fn set_qos1(&self, qos1: bool) {
        self.shared.control.qos1.store(qos1, Ordering::Relaxed);
    }

    /// With `on`, each vehicle sends a probe as soon as it is (re)subscribed.
    pub fn set_probe_on_ready(&self, on: bool) {
        self.shared
            .control
            .probe_on_ready
            .store(on, Ordering::Relaxed);
    }

    /// Delay of acks from vehicles with [`AckPolicy::Slow`].
    pub fn set_slow_ack_delay(&self, d: Duration) {
        self.shared
            .control
            .slow_ack_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Flapping vehicles alternate between these two periods (one below and one above
    /// the broker's timeout).
    pub fn set_flap_periods(&self, low: Duration, high: Duration) {
        let c = &self.shared.control;
        c.flap_low_us
            .store(low.as_micros() as u64, Ordering::Relaxed);
        c.flap_high_us
            .store(high.as_micros() as u64, Ordering::Relaxed);
    }

    /// Silences (stops the heartbeats of) vehicle `i`, keeping its connection.
    pub fn set_silent(&self, i: usize, silent: bool) {
        if let Some(v) = self.shared.vehicles.get(i) {
            v.silent.store(silent, Ordering::Relaxed);
        }
    }

    /// Makes vehicle `i` flap around the timeout.
    pub fn set_flapping(&self, i: usize, flapping: bool) {
        if let Some(v) = self.shared.vehicles.get(i) {
            v.flapping.store(flapping, Ordering::Relaxed);
        }
    }

    /// How vehicle `i` acknowledges commands.
    pub fn set_ack_policy(&self, i: usize, policy: AckPolicy) {
        if let Some(v) = self.shared.vehicles.get(i) {
            v.ack_policy.store(policy as u8, Ordering::Relaxed);
        }
    }

    /// How vehicle `i` answers lock requests (with journeys on).
    pub fn set_unlock_policy(&self, i: usize, policy: UnlockPolicy) {
        if let Some(v) = self.shared.vehicles.get(i) {
            v.unlock_policy.store(policy as u8, Ordering::Relaxed);
        }
    }

    /// Every vehicle's id, in index order.
    pub fn ids(&self) -> Vec<String> {
        self.shared.vehicles.iter().map(|v| v.id.clone()).collect()
    }

    /// Drops vehicle `i`'s connection; it reconnects after a jittered backoff.
    pub fn kick(&self, i: usize) {
        if let Some(v) = self.shared.vehicles.get(i) {
            v.kick.notify_one();
        }
    }

    /// Sends one heartbeat from vehicle `i` now, outside its schedule; returns when it was
    /// handed to the client, or `None` when it could not be.
    pub fn heartbeat_now(&self, i: usize) -> Option<Micros> {
        send_heartbeat(&self.shared, i, false)
    }

    /// Sends one probe from vehicle `i` now; returns when, or `None` when it could not.
    pub fn probe_now(&self, i: usize) -> Option<Micros> {
        send_heartbeat(&self.shared, i, true)
    }

    /// Sends an error report from vehicle `i`.
    pub fn error_report(&self, i: usize, code: &str, count: u32) -> bool {
        let Some(v) = self.shared.vehicles.get(i) else {
            return false;
        };
        let payload = format!(r#"{{"errors":[{{"code":"{code}","count":{count}}}]}}"#);
        let ok = self.shared.clients[i]
            .try_publish(v.error_topic.as_str(), QoS::AtLeastOnce, false, payload)
            .is_ok();
        if ok {
            inc(&self.shared.stats.error_reports);
        }
        ok
    }

    /// Publishes raw bytes from vehicle `i` on any topic (malformed or spoofed messages).
    pub fn publish_raw(&self, i: usize, topic: String, payload: Vec<u8>) -> bool {
        let Some(client) = self.shared.clients.get(i) else {
            return false;
        };
        let ok = client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_ok();
        if ok {
            inc(&self.shared.stats.bad_messages);
        }
        ok
    }

    /// Disconnects every vehicle and stops the fleet's tasks.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in &self.shared.clients {
            let _ = c.try_disconnect();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the vehicles' connection tasks at `per_sec`, then keeps them until aborted.
async fn ramp(shared: Arc<Shared>, loops: Vec<EventLoop>, per_sec: u32) {
    let start = Instant::now();
    let per_sec = f64::from(per_sec.max(1));
    let mut drivers = Vec::with_capacity(loops.len());
    for (i, el) in loops.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / per_sec);
        if due > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due).await;
        }
        drivers.push(AbortOnDrop(tokio::spawn(drive(shared.clone(), i, el))));
    }
    // Keep the handles: aborting this task aborts every connection task.
    std::future::pending::<()>().await;
    drop(drivers);
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn mark_down(shared: &Shared, v: &VehicleState) {
    if v.ready.swap(false, Ordering::AcqRel) {
        shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives one vehicle's connection: subscribe on every CONNACK, apply commands, reconnect
/// with jittered exponential backoff.
async fn drive(shared: Arc<Shared>, i: usize, mut el: EventLoop) {
    let v = &shared.vehicles[i];
    let client = &shared.clients[i];
    let mut backoff = BACKOFF_MIN;
    let mut rng = Rng::new(i as u64);
    loop {
        let event = tokio::select! {
            e = el.poll() => e,
            _ = v.kick.notified() => {
                // A reconnect storm: drop the connection as a network failure would.
                el.clean();
                mark_down(&shared, v);
                inc(&shared.stats.errors);
                let wait = rng.jittered_us(BACKOFF_MIN.as_micros() as u64, 500_000);
                tokio::time::sleep(Duration::from_micros(wait)).await;
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                let subscribed = match &v.lock_topics {
                    None => client.try_subscribe(v.command_topic.as_str(), QoS::AtLeastOnce),
                    Some((request, _)) => client.try_subscribe_many([
                        SubscribeFilter::new(v.command_topic.clone(), QoS::AtLeastOnce),
                        SubscribeFilter::new(request.clone(), QoS::AtLeastOnce),
                    ]),
                };
                if subscribed.is_err() {
                    inc(&shared.stats.errors);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = !ack.return_codes.is_empty()
                    && ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                if granted && !v.ready.swap(true, Ordering::AcqRel) {
                    v.ready_at_us.store(shared.now_us(), Ordering::Relaxed);
                    shared.stats.connected.fetch_add(1, Ordering::Relaxed);
                    if v.ever_ready.swap(true, Ordering::AcqRel) {
                        inc(&shared.stats.reconnects);
                    }
                    if shared.control.probe_on_ready.load(Ordering::Relaxed) {
                        send_heartbeat(&shared, i, true);
                    }
                } else if !v.is_ready() {
                    inc(&shared.stats.errors);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == v.command_topic => {
                on_command(&shared, i, &p.payload);
            }
            Ok(Event::Incoming(Packet::Publish(p)))
                if v.lock_topics.as_ref().is_some_and(|t| p.topic == t.0) =>
            {
                on_lock_request(&shared, i, &p.payload);
            }
            Ok(_) => {}
            Err(_) => {
                mark_down(&shared, v);
                inc(&shared.stats.errors);
                let wait = rng.jittered_us(backoff.as_micros() as u64, 500_000);
                tokio::time::sleep(Duration::from_micros(wait)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn on_command(shared: &Arc<Shared>, i: usize, payload: &[u8]) {
    let v = &shared.vehicles[i];
    let Ok(cmd) = serde_json::from_slice::<ReceivedCommand>(payload) else {
        return;
    };
    let now = shared.now_us();
    let stats = &shared.stats;
    inc(&stats.commands);
    match cmd.command.as_str() {
        "service_out" => {
            inc(&stats.service_out);
            v.out_of_service.store(true, Ordering::Relaxed);
            v.service_out_at_us.store(now, Ordering::Relaxed);
        }
        "service_in" => {
            inc(&stats.service_in);
            v.out_of_service.store(false, Ordering::Relaxed);
            v.service_in_at_us.store(now, Ordering::Relaxed);
            let sent = v.probe_sent_us.swap(0, Ordering::AcqRel);
            if sent != 0 && now >= sent {
                stats.probe_rtt.record(Duration::from_micros(now - sent));
            }
        }
        _ => return,
    }
    let ack = format!(r#"{{"id":{},"ok":true}}"#, serde_json::json!(cmd.id));
    match AckPolicy::from_u8(v.ack_policy.load(Ordering::Relaxed)) {
        AckPolicy::Prompt => {
            if shared.clients[i]
                .try_publish(v.ack_topic.as_str(), QoS::AtLeastOnce, false, ack)
                .is_ok()
            {
                inc(&stats.acks);
            }
        }
        AckPolicy::Slow => {
            let delay = Duration::from_micros(shared.control.slow_ack_us.load(Ordering::Relaxed));
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let v = &shared.vehicles[i];
                if shared.clients[i]
                    .try_publish(v.ack_topic.as_str(), QoS::AtLeastOnce, false, ack)
                    .is_ok()
                {
                    inc(&shared.stats.acks);
                }
            });
        }
        AckPolicy::Missing => {}
    }
}

fn on_lock_request(shared: &Shared, i: usize, payload: &[u8]) {
    let Some((delay, queue)) = &shared.answers else {
        return;
    };
    let stats = &shared.stats;
    let policy = UnlockPolicy::from_u8(shared.vehicles[i].unlock_policy.load(Ordering::Relaxed));
    match journey::answer_to(payload, policy) {
        Err(_) => inc(&stats.unlock_requests_malformed),
        Ok(None) => inc(&stats.unlock_requests),
        Ok(Some(answer)) => {
            inc(&stats.unlock_requests);
            if queue
                .try_send((Instant::now() + *delay, (i as u32, answer)))
                .is_err()
            {
                inc(&stats.unlock_answers_dropped);
            }
        }
    }
}

fn send_lock_answer(shared: &Shared, i: usize, answer: String) {
    let Some((_, topic)) = shared.vehicles.get(i).and_then(|v| v.lock_topics.as_ref()) else {
        return;
    };
    let sent = shared.clients[i]
        .try_publish(topic.as_str(), QoS::AtLeastOnce, false, answer)
        .is_ok();
    inc(if sent {
        &shared.stats.unlock_answers
    } else {
        &shared.stats.unlock_answers_dropped
    });
}

/// Hands one heartbeat (a probe when `probe`) of vehicle `i` to its client.
fn send_heartbeat(shared: &Shared, i: usize, probe: bool) -> Option<Micros> {
    let v = shared.vehicles.get(i)?;
    if !v.is_ready() {
        return None;
    }
    let now = shared.now_us();
    let out = v.is_out_of_service();
    // A probe only means something while the vehicle applies in_service.
    let probe = probe && !out;
    let reported = if probe || out {
        "out_of_service"
    } else {
        "in_service"
    };
    let seq = v.seq.fetch_add(1, Ordering::Relaxed);
    let payload = format!(
        r#"{{"seq":{seq},"battery":{},"service":"{reported}"}}"#,
        20 + i % 80
    );
    if probe {
        v.probe_sent_us.store(now, Ordering::Release);
    }
    let qos = if shared.control.qos1.load(Ordering::Relaxed) {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    match shared.clients[i].try_publish(v.heartbeat_topic.as_str(), qos, false, payload) {
        Ok(()) => {
            inc(&shared.stats.heartbeats);
            v.last_heartbeat_us.store(now, Ordering::Relaxed);
            if probe {
                inc(&shared.stats.probes);
            }
            Some(now)
        }
        Err(_) => {
            inc(&shared.stats.heartbeats_dropped);
            if probe {
                v.probe_sent_us.store(0, Ordering::Release);
            }
            None
        }
    }
}

/// Sends the heartbeats of vehicles `shard, shard + shards, ...` from one timer.
async fn schedule(shared: Arc<Shared>, shard: usize, shards: usize) {
    let n = shared.vehicles.len();
    let mine: Vec<usize> = (shard..n).step_by(shards).collect();
    let mut rng = Rng::new(0xF1EE7 + shard as u64);
    let mut heap: BinaryHeap<Reverse<(Micros, u32)>> = BinaryHeap::with_capacity(mine.len());
    let mut generation = u64::MAX;
    let c = &shared.control;
    loop {
        let now = shared.now_us();
        let period = c.period_us.load(Ordering::Relaxed).max(1);
        let g = c.generation.load(Ordering::Acquire);
        if g != generation {
            // Spread the vehicles evenly over one period from now.
            generation = g;
            heap.clear();
            for &i in &mine {
                heap.push(Reverse((now + rng.below(period), i as u32)));
            }
        }
        let on = c.heartbeats_on.load(Ordering::Relaxed);
        let probe_ppm = c.probe_ppm.load(Ordering::Relaxed);
        while let Some(&Reverse((due, i))) = heap.peek() {
            if due > now {
                break;
            }
            heap.pop();
            let i = i as usize;
            let v = &shared.vehicles[i];
            let flapping = v.flapping.load(Ordering::Relaxed);
            if on && !v.silent.load(Ordering::Relaxed) {
                let sent = v.probe_sent_us.load(Ordering::Acquire);
                if sent != 0
                    && now.saturating_sub(sent) > PROBE_TIMEOUT.as_micros() as u64
                    && v.probe_sent_us
                        .compare_exchange(sent, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    inc(&shared.stats.probes_lost);
                }
                let probe =
                    probe_ppm > 0 && !v.probe_outstanding() && rng.below(1_000_000) < probe_ppm;
                send_heartbeat(&shared, i, probe);
            }
            let next = if flapping {
                if v.seq.load(Ordering::Relaxed).is_multiple_of(2) {
                    c.flap_low_us.load(Ordering::Relaxed)
                } else {
                    c.flap_high_us.load(Ordering::Relaxed)
                }
            } else {
                rng.jittered_us(period, c.jitter_ppm)
            };
            // Keep the mean rate when late, but never fire a backlog as a burst.
            heap.push(Reverse((
                due.max(now.saturating_sub(period / 2)) + next.max(1),
                i as u32,
            )));
        }
        let wake = heap
            .peek()
            .map_or(now + SCHEDULER_TICK.as_micros() as u64, |r| r.0 .0)
            .min(now + SCHEDULER_TICK.as_micros() as u64);
        tokio::time::sleep_until(shared.epoch + Duration::from_micros(wake)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_spread() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let d = rng.jittered_us(1_000_000, 100_000);
            assert!((900_000..=1_100_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn the_rng_covers_its_range() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[rng.below(10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
