//! The engine: one task that owns the rules state, fed by bounded channels, woken at the
//! rules' next deadline. It turns the rules' decisions into store records and, behind
//! them, MQTT publishes, in order: each wake's work goes to the store writer as one batch,
//! and the writer announces it only once it is stored (see `persist` and `crate::store`).

pub mod alerts;
mod commands;
mod link;
mod metrics;
mod ops;
pub mod payloads;
mod persist;
mod ratelog;
mod snapshot;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{
    Effect, Fleet, Notification, Reason, ReasonChange, ServiceState, SliReport, Transition, UnixMs,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::contract::Topics;
use crate::ingest::{self, Message};
use crate::metrics::inc;
use crate::mqtt::Uplink;
use crate::store::{IncidentChange, Record, StoreBatch};

/// What the engine hands the store writer: records, then these publishes.
pub type Batch = StoreBatch<Outbound>;

pub use commands::CommandSlo;
pub use metrics::{AckOutcome, EngineMetrics};
pub use ops::{EngineGone, EngineHandle, OpRequest, PAGE_SCAN_BUDGET};
pub use persist::PersistOptions;
use ratelog::RateLimitedLog;
pub use snapshot::EngineSnapshot;

/// Capacity of the uplink queue from the MQTT hooks. Full: the hook waits, which slows the
/// publishing client down through TCP (no uplink is dropped).
pub const UPLINK_QUEUE: usize = 8192;
/// Capacity of the ops request queue. Full: the caller waits.
pub const OPS_QUEUE: usize = 64;
/// Capacity of the outbound publish queue, from the store writer to the publisher. Full:
/// the writer waits for the publisher (and the engine, once the store queue is full too).
pub const OUTBOUND_QUEUE: usize = 8192;
/// Commands awaiting an ack that are remembered; older ones are forgotten (counted).
pub const PENDING_COMMANDS: usize = 65_536;
/// Uplinks handled per wake before deadlines and effects get their turn.
const BATCH: usize = 512;

/// A message for the MQTT front to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 1 (else 0).
    pub qos1: bool,
    /// Retain.
    pub retain: bool,
}

/// Engine settings that are not rules.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The topic layout uplinks arrive on and announcements go to.
    pub topics: Topics,
    /// Largest uplink payload.
    pub max_payload: usize,
    /// How often `fleet/sli` is published at the least.
    pub sli_interval: Duration,
    /// Checkpoints and history kept in the store.
    pub persist: PersistOptions,
    /// The command-ack SLI.
    pub command_slo: CommandSlo,
    /// Active/standby: the fencing epoch of the term this engine runs in, carried by
    /// every `fleet/events` and retained service state it publishes.
    pub epoch: Option<u64>,
    /// The journeys whose requests and answers arrive as uplinks (`Uplink::journey`).
    pub journeys: crate::journeys::Journeys,
}

/// The engine task's state.
pub struct Engine {
    fleet: Fleet,
    clock: Clock,
    opts: EngineOptions,
    metrics: Arc<EngineMetrics>,
    /// To the store writer, which announces each batch once it is stored.
    store: mpsc::Sender<Batch>,
    /// What this wake decided so far.
    batch: Batch,
    persist: persist::Persist,
    boot_ms: UnixMs,
    command_seq: u64,
    /// Commands awaiting their ack, and the command-ack SLI.
    commands: commands::CommandTracker,
    rejections: RateLimitedLog,
    /// The last fleet/sli published: in service, fleet, when.
    last_sli: Option<(usize, usize, UnixMs)>,
    /// When the SLI report was last computed (published or not).
    sli_computed_at: Option<UnixMs>,
    /// Where notifications go besides the log, when Slack is configured.
    slack: Option<crate::slack::EngineOutbox>,
    /// The latest SLI report, for readers that must not wait on the engine (the digest).
    sli_reports: watch::Sender<Option<SliReport>>,
    /// Alerts firing since before a restart, published again (retained) at the start.
    restated: Vec<(fleet_rules::AlertSeverity, UnixMs)>,
    /// Attach mode: the upstream link, whose loss makes the engine blind.
    link: Option<link::LinkWatch>,
    /// The last census, shared by every reader within a second.
    census: snapshot::CensusCache,
}

impl Engine {
    /// An engine over `fleet`, storing then announcing through the writer behind `store`.
    pub fn new(
        fleet: Fleet,
        clock: Clock,
        opts: EngineOptions,
        metrics: Arc<EngineMetrics>,
        store: mpsc::Sender<Batch>,
    ) -> Engine {
        let commands =
            commands::CommandTracker::new(PENDING_COMMANDS, &opts.command_slo, clock.now());
        Engine {
            fleet,
            boot_ms: clock.now(),
            persist: persist::Persist::new(opts.persist.clone(), clock.now()),
            clock,
            opts,
            metrics,
            store,
            batch: Batch::default(),
            command_seq: 0,
            commands,
            rejections: RateLimitedLog::new(20, 10_000),
            last_sli: None,
            sli_computed_at: None,
            slack: None,
            sli_reports: watch::channel(None).0,
            restated: Vec::new(),
            link: None,
            census: snapshot::CensusCache::default(),
        }
    }

    /// After a restart: the alerts that were firing are published again on the retained
    /// alerts topic (the MQTT front keeps retained messages in memory only).
    pub fn restate_alerts(&mut self, open: &crate::store::OpenIncidents) {
        use fleet_rules::AlertSeverity;
        self.restated = [
            (AlertSeverity::Ticket, open.ticket_since),
            (AlertSeverity::Page, open.page_since),
        ]
        .into_iter()
        .filter_map(|(severity, since)| since.map(|at| (severity, at)))
        .collect();
    }

    /// The latest SLI report the engine computed (at most a second or
    /// `slo.publish_interval` old); `None` before the first.
    pub fn sli_reports(&self) -> watch::Receiver<Option<SliReport>> {
        self.sli_reports.subscribe()
    }

    /// Notifications also go to Slack, through the outbox behind `slack`.
    pub fn with_slack(mut self, slack: crate::slack::EngineOutbox) -> Engine {
        self.slack = Some(slack);
        self
    }

    /// Runs until `shutdown` resolves or the uplink queue closes, then handles what is
    /// already queued, publishes the final SLI, writes a final checkpoint and returns.
    pub async fn run(
        mut self,
        mut uplinks: mpsc::Receiver<Uplink>,
        mut ops: mpsc::Receiver<OpRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ops_open = true;
        let mut link = self.link.take();
        if let Some(l) = &mut link {
            let state = *l.rx.borrow_and_update();
            self.on_link(l, state).await;
        }
        self.publish_sli(true).await;
        for (severity, at) in std::mem::take(&mut self.restated) {
            let report = self.fleet.sli(self.clock.now());
            let state = fleet_rules::AlertState::Firing;
            let payload = alerts::payload(severity, state, &report.burn, at, &report);
            let topic = self.opts.topics.alerts().to_owned();
            self.send(topic, payload, true).await;
        }
        let chunk_done = self.persist.chunk_done();
        loop {
            let wake = self.fleet.poll_timeout().map(|t| self.clock.instant_at(t));
            let sli_due = self.next_sli_instant();
            let persist_due = self
                .persist
                .wake_at(self.clock.now())
                .map(|t| self.clock.instant_at(t));
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                op = ops.recv(), if ops_open => match op {
                    Some(op) => self.handle_op(op),
                    None => ops_open = false,
                },
                up = uplinks.recv() => match up {
                    Some(up) => {
                        self.handle_uplink(up);
                        for _ in 1..BATCH {
                            match uplinks.try_recv() {
                                Ok(up) => self.handle_uplink(up),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                changed = link::changed(&mut link) => match (changed, &mut link) {
                    (true, Some(l)) => {
                        let state = *l.rx.borrow_and_update();
                        self.on_link(l, state).await;
                    }
                    _ => link = None,
                },
                _ = sleep_until_opt(wake) => {}
                _ = tokio::time::sleep_until(sli_due) => {}
                _ = chunk_done.notified(), if self.persist.chunk_in_flight() => {
                    self.persist.chunk_landed();
                }
                _ = sleep_until_opt(persist_due) => {}
            }
            self.settle().await;
        }
        uplinks.close();
        while let Ok(up) = uplinks.try_recv() {
            self.handle_uplink(up);
        }
        self.settle().await;
        self.publish_sli(true).await;
        self.persist_final(self.clock.now()).await;
        info!(vehicles = self.fleet.len(), "engine stopped");
    }

    /// Ticks the rules to now, publishes their effects and the SLI when due.
    async fn settle(&mut self) {
        let now = self.clock.now();
        self.fleet.tick(now);
        self.commands.judge_overdue(now, &self.metrics);
        self.flush_effects().await;
        self.publish_sli(false).await;
        self.persist_step(now);
        self.commit_batch().await;
    }

    fn handle_uplink(&mut self, mut up: Uplink) {
        // Acknowledged upstream once this wake's batch is stored, whatever the uplink was.
        if let Some(ack) = up.ack.take() {
            self.batch.after.push(Box::new(move || ack.send()));
        }
        let now = self.clock.now();
        if let Some(tap) = up.journey.take() {
            self.handle_journey(&up, &tap, now);
            return;
        }
        let (vehicle, message) = match ingest::decode(
            &self.opts.topics,
            &up.client_id,
            &up.topic,
            &up.payload,
            self.opts.max_payload,
        ) {
            Ok(decoded) => decoded,
            Err(rejection) => {
                self.metrics.reject(&rejection);
                if self.rejections.allow(now) {
                    warn!(
                        client = %up.client_id,
                        topic = %up.topic,
                        reason = rejection.label(),
                        suppressed = self.rejections.take_suppressed(),
                        "uplink rejected: {rejection}"
                    );
                }
                return;
            }
        };
        let result = match message {
            Message::Heartbeat(hb) => {
                inc(&self.metrics.heartbeats);
                let heartbeat = fleet_rules::Heartbeat {
                    model: hb.model.as_deref(),
                    reported: hb.service.map(ServiceState::from),
                    battery: hb.battery,
                };
                self.fleet.heartbeat(vehicle, heartbeat, now)
            }
            Message::Error(report) => {
                inc(&self.metrics.error_reports);
                let errors: Vec<(&str, u32)> = report
                    .errors
                    .iter()
                    .map(|e| (e.code.as_str(), e.count))
                    .collect();
                self.fleet.error_report(vehicle, &errors, now)
            }
            Message::Ack(ack) => {
                inc(&self.metrics.acks);
                self.record_ack(vehicle, &ack, now);
                self.fleet.seen(vehicle, now)
            }
            Message::Liveness => {
                inc(&self.metrics.liveness);
                self.fleet.seen(vehicle, now)
            }
        };
        if let Err(refused) = result {
            inc(&self.metrics.refused_by_rules);
            if self.rejections.allow(now) {
                warn!(
                    vehicle,
                    suppressed = self.rejections.take_suppressed(),
                    "uplink refused: {refused}"
                );
            }
        }
    }

    /// A journey's request (tracked) or answer (matched to its request): what the rules
    /// measure the rider's journey by. An answer must come from the vehicle in its topic
    /// (embedded mode; an attached broker's ACL vouches for its sender).
    fn handle_journey(&mut self, up: &Uplink, tap: &crate::journeys::JourneyTap, now: UnixMs) {
        use crate::journeys::Direction;
        let Some(spec) = self.opts.journeys.specs().get(tap.journey) else {
            return;
        };
        let read = spec
            .read(
                tap.direction,
                &up.topic,
                &up.payload,
                tap.correlation.as_deref(),
            )
            .and_then(|m| {
                if tap.direction == Direction::Response && m.vehicle != up.client_id {
                    return Err(ingest::Rejection::NotOwnTopic {
                        client: up.client_id.clone(),
                        vehicle: m.vehicle.to_owned(),
                    });
                }
                Ok(m)
            });
        let m = match read {
            Ok(m) => m,
            Err(rejection) => {
                self.metrics.reject(&rejection);
                if self.rejections.allow(now) {
                    warn!(
                        client = %up.client_id,
                        topic = %up.topic,
                        journey = %spec.name,
                        reason = rejection.label(),
                        suppressed = self.rejections.take_suppressed(),
                        "journey message not counted: {rejection}"
                    );
                }
                return;
            }
        };
        match tap.direction {
            Direction::Request => {
                inc(&self.metrics.journey_requests);
                if let Err(refused) =
                    self.fleet
                        .journey_request(tap.journey, m.vehicle, m.key.as_deref(), now)
                {
                    if self.rejections.allow(now) {
                        warn!(vehicle = m.vehicle, journey = %spec.name, suppressed = self.rejections.take_suppressed(), "journey request not tracked: {refused}");
                    }
                }
            }
            Direction::Response => {
                inc(&self.metrics.journey_answers);
                let answered = self.fleet.journey_answer(
                    tap.journey,
                    m.vehicle,
                    m.key.as_deref(),
                    m.success,
                    now,
                );
                debug!(vehicle = m.vehicle, journey = %spec.name, ?answered, "journey answer");
            }
        }
    }

    fn record_ack(&mut self, vehicle: &str, ack: &ingest::Ack, now: UnixMs) {
        self.record(Record::CommandAck {
            id: ack.id.clone(),
            vehicle: vehicle.to_owned(),
            ok: ack.ok,
            error: ack.error.clone(),
            at: now,
        });
        match self
            .commands
            .acked(vehicle, &ack.id, ack.ok, now, &self.metrics)
        {
            commands::AckMatch::Known { latency_ms, .. } => {
                if ack.ok {
                    inc(&self.metrics.commands_acked);
                    debug!(vehicle, command = %ack.id, latency_ms, "command acknowledged");
                } else {
                    inc(&self.metrics.commands_failed);
                    warn!(vehicle, command = %ack.id, latency_ms, error = ack.error.as_deref().unwrap_or(""), "vehicle could not apply command");
                }
            }
            // Another vehicle's command id stays pending for its owner.
            commands::AckMatch::OtherVehicle | commands::AckMatch::Unknown => {
                inc(&self.metrics.acks_unknown)
            }
        }
    }

    /// The answer goes out with this wake's batch, once it is stored: whatever the
    /// requester learns (a transition it caused, or a state it reads) is durable.
    fn handle_op(&mut self, op: OpRequest) {
        let now = self.clock.now();
        let reply = ops::handle(
            &mut self.fleet,
            &mut self.commands,
            &mut self.census,
            op,
            now,
        );
        self.batch.after.push(reply);
    }

    async fn flush_effects(&mut self) {
        let effects: Vec<Effect> = self.fleet.drain_effects().collect();
        if effects
            .iter()
            .any(|e| matches!(e, Effect::Registered { .. } | Effect::Transition(_)))
        {
            self.census.invalidate();
        }
        for effect in effects {
            match effect {
                Effect::Registered { vehicle, at } => {
                    info!(vehicle = %vehicle, "vehicle registered");
                    let payload =
                        payloads::service(ServiceState::InService, &[], at, self.opts.epoch);
                    let topic = self.opts.topics.service(&vehicle);
                    self.record(Record::Registered { vehicle, at });
                    self.send(topic, payload, true).await;
                }
                Effect::Transition(t) => {
                    self.metrics.transition(&t.change);
                    self.observe_detection(&t);
                    info!(vehicle = %t.vehicle, from = ?t.from, to = ?t.to, change = ?t.change, cause = ?t.cause, "transition");
                    let service = if t.change == ReasonChange::Decommissioned {
                        Vec::new() // an empty retained payload removes the retained state
                    } else {
                        payloads::service(t.to, &t.reasons, t.at, self.opts.epoch)
                    };
                    let event = payloads::event(&t, self.opts.epoch);
                    let topic = self.opts.topics.service(&t.vehicle);
                    let manual = self.slack.as_mut().and_then(|s| s.transition(&t));
                    let stored_event = String::from_utf8_lossy(&event).into_owned();
                    self.record(Record::Transition(t, Some(stored_event)));
                    self.outbox(manual);
                    self.send(topic, service, true).await;
                    let events = self.opts.topics.events().to_owned();
                    self.send(events, event, false).await;
                }
                Effect::Command(c) => {
                    self.command_seq += 1;
                    let id = format!("{:x}-{:x}", self.boot_ms, self.command_seq);
                    // A silent vehicle gets its command when it talks again: not counted
                    // in the ack SLI.
                    let reachable = !c
                        .reasons
                        .iter()
                        .any(|r| matches!(r, Reason::HeartbeatLost { .. }));
                    let now = self.clock.now();
                    self.commands.issued(
                        &id,
                        &c.vehicle,
                        c.issued_at,
                        reachable,
                        now,
                        &self.metrics,
                    );
                    inc(&self.metrics.commands_sent);
                    info!(vehicle = %c.vehicle, command = ?c.command, id = %id, resend = c.resend, "command");
                    let topic = self.opts.topics.command(&c.vehicle);
                    let payload = payloads::command(&id, &c);
                    self.record(Record::CommandSent { id, command: c });
                    self.send(topic, payload, false).await;
                }
                Effect::Notify(n) => {
                    if let Some(change) = incident_change(&n) {
                        self.record(Record::Incident(change));
                    }
                    if let Notification::SloAlert {
                        severity,
                        state,
                        burn,
                        at,
                    } = &n
                    {
                        self.metrics.alert_change(*severity, *state);
                        let report = self.fleet.sli(self.clock.now());
                        let payload = alerts::payload(*severity, *state, burn, *at, &report);
                        let topic = self.opts.topics.alerts().to_owned();
                        self.send(topic, payload, true).await;
                    }
                    let (fleet, clock) = (&mut self.fleet, self.clock);
                    let record = self
                        .slack
                        .as_mut()
                        .and_then(|s| s.notification(&n, || fleet.sli(clock.now())));
                    self.outbox(record);
                    self.batch.after.push(Box::new(move || notify(&n)))
                }
            }
        }
    }

    /// Stores an outbox record with this wake's batch; the sender is woken once stored.
    fn outbox(&mut self, record: Option<Record>) {
        if let (Some(record), Some(slack)) = (record, &self.slack) {
            let wake = slack.waker();
            self.record(record);
            self.batch.after.push(Box::new(wake));
        }
    }

    /// Deadline to emitted transition, for rule-set `heartbeat_lost` (a vehicle held by a
    /// mass-loss incident includes the hold).
    fn observe_detection(&self, t: &Transition) {
        if let ReasonChange::Set(Reason::HeartbeatLost { since }) = &t.change {
            let latency_ms = self.clock.now().saturating_sub(*since);
            self.metrics.detection_latency.observe_ms(latency_ms);
        }
    }

    fn next_sli_instant(&self) -> tokio::time::Instant {
        let last = self.last_sli.map_or(0, |(_, _, at)| at);
        self.clock
            .instant_at(last + self.opts.sli_interval.as_millis() as UnixMs)
    }

    /// Publishes the SLI when forced, when the interval has passed, or when the counts
    /// changed (at most once a second).
    async fn publish_sli(&mut self, force: bool) {
        let now = self.clock.now();
        // The report sums the whole SLO window: compute it at most once a second (a
        // profile at 19k vehicles found it a third of the broker's CPU when done per batch).
        // Counted from the last computation, not the last publish: between publishes of a
        // steady fleet it was once again computed per batch (38 % of an attached broker's
        // CPU at 20,000 heartbeats/s).
        if let Some(at) = self.sli_computed_at {
            if !force && now < at + 1000 {
                return;
            }
        }
        self.sli_computed_at = Some(now);
        inc(&self.metrics.sli_reports);
        let report = self.fleet.sli(now);
        self.sli_reports.send_replace(Some(report.clone()));
        let due = match self.last_sli {
            None => true,
            Some((in_service, fleet, at)) => {
                let interval = self.opts.sli_interval.as_millis() as UnixMs;
                now >= at + interval || (in_service, fleet) != (report.in_service, report.fleet)
            }
        };
        if force || due {
            self.last_sli = Some((report.in_service, report.fleet, now));
            let topic = self.opts.topics.sli().to_owned();
            let journeys = self.fleet.journey_statuses(now);
            self.send(topic, payloads::sli(&report, &journeys), true)
                .await;
        }
    }

    /// Queues a message behind this wake's records: it goes out once they are stored.
    async fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.batch.outbound.push(Outbound {
            topic,
            payload,
            qos1: true,
            retain,
        });
        self.commit_if_large().await;
    }
}

/// What a notification opens or closes, for the store (a restart goes on with it).
fn incident_change(n: &Notification) -> Option<IncidentChange> {
    use fleet_rules::{AlertSeverity, AlertState};
    match n {
        Notification::MassLossStarted { at, threshold, .. } => {
            Some(IncidentChange::MassLossOpened {
                at: *at,
                threshold: *threshold,
            })
        }
        Notification::MassLossEnded { at, .. } => Some(IncidentChange::MassLossClosed { at: *at }),
        Notification::BlindStarted { since, .. } => {
            Some(IncidentChange::BlindOpened { since: *since })
        }
        Notification::BlindEnded { at, .. } => Some(IncidentChange::BlindClosed { at: *at }),
        Notification::SloAlert {
            severity,
            state,
            at,
            ..
        } => {
            let page = *severity == AlertSeverity::Page;
            Some(match state {
                AlertState::Firing => IncidentChange::AlertFiring { page, at: *at },
                AlertState::Resolved => IncidentChange::AlertResolved { page, at: *at },
            })
        }
        _ => None,
    }
}

fn notify(n: &Notification) {
    let json = serde_json::to_string(n).unwrap_or_default();
    match n {
        Notification::SloAlert { .. }
        | Notification::JourneyAlert { .. }
        | Notification::MassLossStarted { .. }
        | Notification::BlindStarted { .. } => {
            warn!(notification = %json, "fleet alert")
        }
        _ => info!(notification = %json, "notification"),
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
