//! Counters of the MQTT front: what came in, what was refused and why, where it pushed back.
//!
//! Plain atomics written by the rmqtt hooks; `MqttStats` is a snapshot for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use super::acl::{PublishDenied, SubscribeDenied};
use super::auth::AuthRefused;
use crate::metrics::{Kind, TextWriter};

/// Live counters shared by the hooks and the front.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub uplinks: AtomicU64,
    pub uplink_queue_full: AtomicU64,
    pub uplinks_dropped_closed: AtomicU64,
    publishes_denied: [AtomicU64; PublishDenied::ALL.len()],
    subscribes_denied: [AtomicU64; SubscribeDenied::ALL.len()],
    pub connects_refused_will: AtomicU64,
    connects_refused_auth: [AtomicU64; AuthRefused::ALL.len()],
    pub connects_refused_rate: AtomicU64,
    pub clone_takeovers: AtomicU64,
    pub publishes_rate_limited: AtomicU64,
    pub flooders_disconnected: AtomicU64,
    pub retained_messages: AtomicU64,
    pub retained_ignored: AtomicU64,
    /// Pass-through publishes per `[[acl]]` entry, with the entries' names.
    passthrough: Box<[AtomicU64]>,
    passthrough_names: Vec<String>,
}

impl Counters {
    /// Counters with one pass-through counter per `[[acl]]` entry name.
    pub fn for_rules(names: Vec<String>) -> Counters {
        Counters {
            passthrough: names.iter().map(|_| AtomicU64::new(0)).collect(),
            passthrough_names: names,
            ..Counters::default()
        }
    }

    /// Counts a publish routed through `[[acl]]` entry number `rule`.
    pub fn passed_through(&self, rule: usize) {
        if let Some(c) = self.passthrough.get(rule) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one denied publish; returns the new count for this reason.
    pub fn publish_denied(&self, reason: PublishDenied) -> u64 {
        self.publishes_denied[reason.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one refused subscription; returns the new count for this reason.
    pub fn subscribe_denied(&self, reason: SubscribeDenied) -> u64 {
        self.subscribes_denied[reason.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one CONNECT refused by authentication; returns the new count for this reason.
    pub fn auth_refused(&self, reason: AuthRefused) -> u64 {
        self.connects_refused_auth[reason.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self, connected_clients: u64) -> MqttStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let publishes_denied_by_reason: Vec<(PublishDenied, u64)> = PublishDenied::ALL
            .iter()
            .map(|r| (*r, load(&self.publishes_denied[r.index()])))
            .collect();
        let subscribes_denied_by_reason: Vec<(SubscribeDenied, u64)> = SubscribeDenied::ALL
            .iter()
            .map(|r| (*r, load(&self.subscribes_denied[r.index()])))
            .collect();
        let connects_refused_auth_by_reason: Vec<(AuthRefused, u64)> = AuthRefused::ALL
            .iter()
            .map(|r| (*r, load(&self.connects_refused_auth[r.index()])))
            .collect();
        MqttStats {
            connected_clients,
            uplinks: load(&self.uplinks),
            uplink_queue_full: load(&self.uplink_queue_full),
            uplinks_dropped_closed: load(&self.uplinks_dropped_closed),
            publishes_denied: publishes_denied_by_reason.iter().map(|(_, n)| n).sum(),
            publishes_denied_by_reason,
            subscribes_denied: subscribes_denied_by_reason.iter().map(|(_, n)| n).sum(),
            subscribes_denied_by_reason,
            connects_refused_will: load(&self.connects_refused_will),
            connects_refused_auth: connects_refused_auth_by_reason.iter().map(|(_, n)| n).sum(),
            connects_refused_auth_by_reason,
            connects_refused_rate: load(&self.connects_refused_rate),
            clone_takeovers: load(&self.clone_takeovers),
            publishes_rate_limited: load(&self.publishes_rate_limited),
            flooders_disconnected: load(&self.flooders_disconnected),
            retained_messages: load(&self.retained_messages),
            retained_ignored: load(&self.retained_ignored),
            passthrough_by_rule: self
                .passthrough_names
                .iter()
                .zip(self.passthrough.iter())
                .map(|(name, n)| (name.clone(), load(n)))
                .collect(),
        }
    }
}

/// A snapshot of the MQTT front's counters. All counts are since start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MqttStats {
    /// Clients with an open MQTT connection now.
    pub connected_clients: u64,
    /// Uplink messages that passed the ACL and were handed to the uplink channel.
    pub uplinks: u64,
    /// How often the uplink channel was full, so a client's publish waited for room
    /// (TCP backpressure on that client).
    pub uplink_queue_full: u64,
    /// Uplinks dropped because the uplink channel's receiver is gone.
    pub uplinks_dropped_closed: u64,
    /// Client publishes refused by the ACL, all reasons.
    pub publishes_denied: u64,
    /// Client publishes refused by the ACL, per reason (every reason listed, in
    /// `PublishDenied::ALL` order).
    pub publishes_denied_by_reason: Vec<(PublishDenied, u64)>,
    /// Topic filters refused in SUBSCRIBE packets, all reasons.
    pub subscribes_denied: u64,
    /// Topic filters refused in SUBSCRIBE packets, per reason.
    pub subscribes_denied_by_reason: Vec<(SubscribeDenied, u64)>,
    /// CONNECTs refused because the will message's topic is not one the client may publish.
    pub connects_refused_will: u64,
    /// CONNECTs refused by authentication, all reasons.
    pub connects_refused_auth: u64,
    /// CONNECTs refused by authentication, per reason (in `AuthRefused::ALL` order).
    pub connects_refused_auth_by_reason: Vec<(AuthRefused, u64)>,
    /// CONNECTs refused because the listener's connect rate was exceeded.
    pub connects_refused_rate: u64,
    /// CONNECTs with the client id of a connected client (a reconnect, or a clone): the
    /// newer connection takes over and the older one is closed.
    pub clone_takeovers: u64,
    /// Client publishes dropped because the client exceeded its publish rate.
    pub publishes_rate_limited: u64,
    /// Clients disconnected for flooding (`limits.disconnect_after`).
    pub flooders_disconnected: u64,
    /// Retained messages stored now.
    pub retained_messages: u64,
    /// Retain requests not stored (a client's on a contract topic, or past the limit of
    /// clients' retained messages).
    pub retained_ignored: u64,
    /// Publishes on the fleet's own topics, per `[[acl]]` entry (by name).
    pub passthrough_by_rule: Vec<(String, u64)>,
}

impl MqttStats {
    /// Denied publishes for one reason.
    pub fn publishes_denied_for(&self, reason: PublishDenied) -> u64 {
        self.publishes_denied_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// CONNECTs refused by authentication for one reason.
    pub fn connects_refused_auth_for(&self, reason: AuthRefused) -> u64 {
        self.connects_refused_auth_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Refused subscriptions for one reason.
    pub fn subscribes_denied_for(&self, reason: SubscribeDenied) -> u64 {
        self.subscribes_denied_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Whether the `n`-th occurrence of something should be logged loudly: the 1st, 2nd,
/// 4th, 8th, ... so a flood of the same refusal costs a logarithmic number of lines
/// without reading a clock.
pub(crate) fn log_loudly(n: u64) -> bool {
    n.is_power_of_two()
}

impl MqttStats {
    /// Writes the MQTT front's families.
    pub fn render(&self, w: &mut TextWriter) {
        let q = self;
        w.by_label(
            "fleet_mqtt_passthrough_messages_total",
            Kind::Counter,
            "Client publishes on the fleet's own topics, by the [[acl]] entry that allowed them.",
            "rule",
            q.passthrough_by_rule
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64)),
        );
        w.single(
            "fleet_mqtt_connected_clients",
            Kind::Gauge,
            "Clients with an open MQTT connection.",
            q.connected_clients as f64,
        );
        w.single(
            "fleet_mqtt_uplinks_total",
            Kind::Counter,
            "Vehicle publishes that passed the topic ACL and were queued for ingest.",
            q.uplinks as f64,
        );
        w.single(
            "fleet_mqtt_uplink_queue_full_total",
            Kind::Counter,
            "Times the ingest queue was full and a client's publish waited (backpressure).",
            q.uplink_queue_full as f64,
        );
        w.single(
            "fleet_mqtt_uplinks_dropped_total",
            Kind::Counter,
            "Uplinks dropped because ingest had stopped (shutdown).",
            q.uplinks_dropped_closed as f64,
        );
        w.by_label(
            "fleet_mqtt_publishes_denied_total",
            Kind::Counter,
            "Client publishes refused by the topic ACL or size limit, by reason.",
            "reason",
            q.publishes_denied_by_reason
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64)),
        );
        w.by_label(
            "fleet_mqtt_subscribes_denied_total",
            Kind::Counter,
            "Topic filters refused in SUBSCRIBE packets, by reason.",
            "reason",
            q.subscribes_denied_by_reason
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64)),
        );
        w.family(
            "fleet_mqtt_connects_refused_total",
            Kind::Counter,
            "CONNECTs refused, by reason (authentication reasons, will topic, connect rate).",
        );
        for (r, n) in &q.connects_refused_auth_by_reason {
            w.sample(
                "fleet_mqtt_connects_refused_total",
                &[("reason", r.as_str())],
                *n as f64,
            );
        }
        w.sample(
            "fleet_mqtt_connects_refused_total",
            &[("reason", "will_topic")],
            q.connects_refused_will as f64,
        );
        w.sample(
            "fleet_mqtt_connects_refused_total",
            &[("reason", "connect_rate")],
            q.connects_refused_rate as f64,
        );
        w.single(
            "fleet_mqtt_publishes_rate_limited_total",
            Kind::Counter,
            "Client publishes dropped for exceeding the client's publish rate.",
            q.publishes_rate_limited as f64,
        );
        w.single(
            "fleet_mqtt_flooders_disconnected_total",
            Kind::Counter,
            "Clients disconnected for flooding.",
            q.flooders_disconnected as f64,
        );
        w.single(
            "fleet_mqtt_clone_takeovers_total",
            Kind::Counter,
            "CONNECTs with the client id of a connected client (the newer connection wins).",
            q.clone_takeovers as f64,
        );
        w.single(
            "fleet_mqtt_retained_messages",
            Kind::Gauge,
            "Retained messages stored (one service state per vehicle, fleet/sli, fleet/alerts).",
            q.retained_messages as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_lists_every_reason_and_sums_them() {
        let c = Counters::default();
        c.publish_denied(PublishDenied::OtherVehicle);
        c.publish_denied(PublishDenied::OtherVehicle);
        c.publish_denied(PublishDenied::BrokerOnly);
        c.subscribe_denied(SubscribeDenied::TooBroad);
        let s = c.snapshot(3);
        assert_eq!(s.connected_clients, 3);
        assert_eq!(s.publishes_denied, 3);
        assert_eq!(s.publishes_denied_for(PublishDenied::OtherVehicle), 2);
        assert_eq!(s.publishes_denied_for(PublishDenied::Oversize), 0);
        assert_eq!(s.publishes_denied_by_reason.len(), PublishDenied::ALL.len());
        assert_eq!(s.subscribes_denied, 1);
        assert_eq!(s.subscribes_denied_for(SubscribeDenied::TooBroad), 1);
    }

    #[test]
    fn repeated_refusals_are_logged_loudly_at_powers_of_two_only() {
        let loud: Vec<u64> = (1..=20).filter(|n| log_loudly(*n)).collect();
        assert_eq!(loud, vec![1, 2, 4, 8, 16]);
    }
}
