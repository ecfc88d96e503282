//! The engine: one task that owns the rules state, fed by bounded channels, woken at the
//! rules' next deadline. It turns the rules' decisions into MQTT publishes, in order.

mod ops;
pub mod payloads;
mod ratelog;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{Effect, Fleet, Notification, ReasonChange, ServiceState, UnixMs};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::ingest::{self, Message};
use crate::metrics::{inc, Metrics};
use crate::mqtt::Uplink;

pub use ops::{EngineHandle, OpRequest};
use ratelog::RateLimitedLog;

/// Capacity of the uplink queue from the MQTT hooks. Full: the hook waits, which slows the
/// publishing client down through TCP (no uplink is dropped).
pub const UPLINK_QUEUE: usize = 8192;
/// Capacity of the ops request queue. Full: the caller waits.
pub const OPS_QUEUE: usize = 64;
/// Capacity of the outbound publish queue. Full: the engine waits for the publisher.
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
    /// Largest uplink payload.
    pub max_payload: usize,
    /// How often `fleet/sli` is published at the least.
    pub sli_interval: Duration,
}

/// The engine task's state.
pub struct Engine {
    fleet: Fleet,
    clock: Clock,
    opts: EngineOptions,
    metrics: Arc<Metrics>,
    out: mpsc::Sender<Outbound>,
    boot_ms: UnixMs,
    command_seq: u64,
    pending: HashMap<String, (String, UnixMs)>,
    pending_order: VecDeque<String>,
    rejections: RateLimitedLog,
    last_sli: Option<(usize, usize, UnixMs)>,
}

impl Engine {
    /// An engine over `fleet`, publishing through `out`.
    pub fn new(
        fleet: Fleet,
        clock: Clock,
        opts: EngineOptions,
        metrics: Arc<Metrics>,
        out: mpsc::Sender<Outbound>,
    ) -> Engine {
        Engine {
            fleet,
            boot_ms: clock.now(),
            clock,
            opts,
            metrics,
            out,
            command_seq: 0,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            rejections: RateLimitedLog::new(20, 10_000),
            last_sli: None,
        }
    }

    /// Runs until `shutdown` resolves or the uplink queue closes, then handles what is
    /// already queued, publishes the final SLI and returns.
    pub async fn run(
        mut self,
        mut uplinks: mpsc::Receiver<Uplink>,
        mut ops: mpsc::Receiver<OpRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ops_open = true;
        self.publish_sli(true).await;
        loop {
            let wake = self.fleet.poll_timeout().map(|t| self.clock.instant_at(t));
            let sli_due = self.next_sli_instant();
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
                _ = sleep_until_opt(wake) => {}
                _ = tokio::time::sleep_until(sli_due) => {}
            }
            self.settle().await;
        }
        uplinks.close();
        while let Ok(up) = uplinks.try_recv() {
            self.handle_uplink(up);
        }
        self.settle().await;
        self.publish_sli(true).await;
        info!(vehicles = self.fleet.len(), "engine stopped");
    }

    /// Ticks the rules to now, publishes their effects and the SLI when due.
    async fn settle(&mut self) {
        let now = self.clock.now();
        self.fleet.tick(now);
        self.flush_effects().await;
        self.publish_sli(false).await;
    }

    fn handle_uplink(&mut self, up: Uplink) {
        let now = self.clock.now();
        let (vehicle, message) =
            match ingest::decode(&up.client_id, &up.topic, &up.payload, self.opts.max_payload) {
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
                self.fleet.heartbeat(
                    vehicle,
                    hb.model.as_deref(),
                    hb.service.map(ServiceState::from),
                    now,
                )
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

    fn record_ack(&mut self, vehicle: &str, ack: &ingest::Ack, now: UnixMs) {
        match self.pending.remove(&ack.id) {
            Some((for_vehicle, issued_at)) if for_vehicle == vehicle => {
                let latency_ms = now.saturating_sub(issued_at);
                if ack.ok {
                    inc(&self.metrics.commands_acked);
                    debug!(vehicle, command = %ack.id, latency_ms, "command acknowledged");
                } else {
                    inc(&self.metrics.commands_failed);
                    warn!(vehicle, command = %ack.id, latency_ms, error = ack.error.as_deref().unwrap_or(""), "vehicle could not apply command");
                }
            }
            Some(other) => {
                // Another vehicle's command id: keep it pending for its owner.
                self.pending.insert(ack.id.clone(), other);
                inc(&self.metrics.acks_unknown);
            }
            None => inc(&self.metrics.acks_unknown),
        }
    }

    fn handle_op(&mut self, op: OpRequest) {
        let now = self.clock.now();
        ops::handle(&mut self.fleet, op, now);
    }

    async fn flush_effects(&mut self) {
        let effects: Vec<Effect> = self.fleet.drain_effects().collect();
        for effect in effects {
            match effect {
                Effect::Registered { vehicle, at } => {
                    info!(vehicle = %vehicle, "vehicle registered");
                    let payload = payloads::service(ServiceState::InService, &[], at);
                    self.send(service_topic(&vehicle), payload, true).await;
                }
                Effect::Transition(t) => {
                    inc(&self.metrics.transitions);
                    info!(vehicle = %t.vehicle, from = ?t.from, to = ?t.to, change = ?t.change, cause = ?t.cause, "transition");
                    let service = if t.change == ReasonChange::Decommissioned {
                        Vec::new() // an empty retained payload removes the retained state
                    } else {
                        payloads::service(t.to, &t.reasons, t.at)
                    };
                    self.send(service_topic(&t.vehicle), service, true).await;
                    self.send("fleet/events".to_owned(), payloads::event(&t), false)
                        .await;
                }
                Effect::Command(c) => {
                    self.command_seq += 1;
                    let id = format!("{:x}-{:x}", self.boot_ms, self.command_seq);
                    self.remember_command(&id, &c.vehicle, c.issued_at);
                    inc(&self.metrics.commands_sent);
                    info!(vehicle = %c.vehicle, command = ?c.command, id = %id, resend = c.resend, "command");
                    let topic = format!("vehicles/{}/command", c.vehicle);
                    self.send(topic, payloads::command(&id, &c), false).await;
                }
                Effect::Notify(n) => notify(&n),
            }
        }
    }

    fn remember_command(&mut self, id: &str, vehicle: &str, issued_at: UnixMs) {
        if self.pending_order.len() >= PENDING_COMMANDS {
            if let Some(old) = self.pending_order.pop_front() {
                self.pending.remove(&old);
            }
        }
        self.pending
            .insert(id.to_owned(), (vehicle.to_owned(), issued_at));
        self.pending_order.push_back(id.to_owned());
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
        let report = self.fleet.sli(now);
        let due = match self.last_sli {
            None => true,
            Some((in_service, fleet, at)) => {
                let interval = self.opts.sli_interval.as_millis() as UnixMs;
                now >= at + interval
                    || ((in_service, fleet) != (report.in_service, report.fleet)
                        && now >= at + 1000)
            }
        };
        if force || due {
            self.last_sli = Some((report.in_service, report.fleet, now));
            self.send("fleet/sli".to_owned(), payloads::sli(&report), true)
                .await;
        }
    }

    async fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        let message = Outbound {
            topic,
            payload,
            qos1: true,
            retain,
        };
        if self.out.send(message).await.is_err() {
            inc(&self.metrics.publish_errors);
        }
    }
}

fn service_topic(vehicle: &str) -> String {
    format!("vehicles/{vehicle}/service")
}

fn notify(n: &Notification) {
    let json = serde_json::to_string(n).unwrap_or_default();
    match n {
        Notification::SloAlert { .. } | Notification::MassLossStarted { .. } => {
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
