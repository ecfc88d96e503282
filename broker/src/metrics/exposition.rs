//! Everything `/metrics` says, in one place: names with units in the Prometheus
//! conventions (`_total` counters, `_seconds`, `_ratio`), one family per concept, labels
//! for the dimensions. Values come from the counters here, the MQTT front, the store and
//! one engine snapshot per scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use fleet_rules::{AlertSeverity, AlertState, BurnRates, ReasonKind, BURN_WINDOWS};

use super::text::{Kind, TextWriter};
use super::{get, AckOutcome, Metrics};
use crate::engine::alerts::FLEET_SLO;
use crate::engine::EngineSnapshot;
use crate::mqtt::MqttStats;
use crate::store::StoreMetrics;

/// The OpenSLO/metrics name of the command-ack SLO.
pub const ACK_SLO: &str = "command-acks";

/// What one scrape reads.
#[derive(Debug)]
pub struct Scrape<'a> {
    /// Ingest and engine counters.
    pub metrics: &'a Metrics,
    /// The MQTT front's counters.
    pub mqtt: &'a MqttStats,
    /// The engine's state now.
    pub engine: &'a EngineSnapshot,
    /// The store's counters.
    pub store: &'a StoreMetrics,
    /// `(queue, queued, capacity)`.
    pub queues: &'a [(&'a str, usize, usize)],
    /// The SLO window as a label value (`"30d"`).
    pub slo_window: &'a str,
}

fn rates(b: &BurnRates) -> [f64; 6] {
    [b.m5, b.m30, b.h1, b.h6, b.d1, b.d3]
}

/// SLI over a burn window, from its burn rate: burn = (1 - sli) / (1 - target).
fn sli_from_burn(burn: f64, target: f64) -> f64 {
    1.0 - burn * (1.0 - target).max(f64::EPSILON)
}

/// The exposition text.
pub fn render(s: &Scrape<'_>) -> String {
    let mut w = TextWriter::new();
    fleet(&mut w, s);
    slo(&mut w, s);
    commands(&mut w, s);
    ingest(&mut w, s);
    mqtt(&mut w, s.mqtt);
    engine(&mut w, s);
    store(&mut w, s.store);
    slack(&mut w, &s.metrics.slack);
    w.family(
        "fleet_build_info",
        Kind::Gauge,
        "Always 1; the version label says which build runs.",
    );
    w.sample(
        "fleet_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    w.finish()
}

fn fleet(w: &mut TextWriter, s: &Scrape<'_>) {
    let c = &s.engine.census;
    w.by_label(
        "fleet_vehicles",
        Kind::Gauge,
        "Vehicles in the fleet by desired state (decommissioned excluded).",
        "state",
        [
            ("in_service", c.in_service as f64),
            ("out_of_service", c.out_of_service as f64),
        ],
    );
    w.by_label(
        "fleet_vehicles_with_reason",
        Kind::Gauge,
        "Vehicles that have this out-of-service reason (a vehicle may have several).",
        "reason",
        ReasonKind::ALL.map(|k| (k.as_str(), c.with_reason(k) as f64)),
    );
    w.single(
        "fleet_vehicles_held",
        Kind::Gauge,
        "Silent vehicles whose service-out is held by a mass-loss incident.",
        c.held as f64,
    );
}

fn slo(w: &mut TextWriter, s: &Scrape<'_>) {
    let sli = &s.engine.sli;
    let acks = &s.engine.acks;
    w.single(
        "fleet_slo_good_vehicles",
        Kind::Gauge,
        "Vehicles counted good by the fleet-in-service SLI now (in service, not silent).",
        sli.in_service as f64,
    );
    w.single(
        "fleet_slo_valid_vehicles",
        Kind::Gauge,
        "Vehicles counted valid by the fleet-in-service SLI now (the active fleet).",
        sli.fleet as f64,
    );

    w.family(
        "fleet_slo_sli_ratio",
        Kind::Gauge,
        "SLI over the window: good/valid vehicle-time (fleet-in-service) or acked-in-time/commands (command-acks); window=now is the instant fleet share.",
    );
    w.sample(
        "fleet_slo_sli_ratio",
        &[("slo", FLEET_SLO), ("window", "now")],
        sli.fraction,
    );
    for (slo, burn, target, window_sli) in [
        (FLEET_SLO, &sli.burn, sli.target, sli.window_sli),
        (ACK_SLO, &acks.burn, acks.target, acks.window_sli),
    ] {
        for ((name, _), b) in BURN_WINDOWS.iter().zip(rates(burn)) {
            w.sample(
                "fleet_slo_sli_ratio",
                &[("slo", slo), ("window", name)],
                sli_from_burn(b, target),
            );
        }
        if !BURN_WINDOWS.iter().any(|(n, _)| *n == s.slo_window) {
            w.sample(
                "fleet_slo_sli_ratio",
                &[("slo", slo), ("window", s.slo_window)],
                window_sli,
            );
        }
    }

    w.family("fleet_slo_target_ratio", Kind::Gauge, "The SLO's target.");
    w.sample("fleet_slo_target_ratio", &[("slo", FLEET_SLO)], sli.target);
    w.sample("fleet_slo_target_ratio", &[("slo", ACK_SLO)], acks.target);
    w.family(
        "fleet_slo_window_seconds",
        Kind::Gauge,
        "The SLO's rolling window.",
    );
    w.sample(
        "fleet_slo_window_seconds",
        &[("slo", FLEET_SLO)],
        (sli.window_ms / 1000) as f64,
    );
    w.sample(
        "fleet_slo_window_seconds",
        &[("slo", ACK_SLO)],
        (acks.window_ms / 1000) as f64,
    );
    w.family(
        "fleet_slo_error_budget_remaining_ratio",
        Kind::Gauge,
        "Share of the error budget left over the SLO window (negative when overspent).",
    );
    w.sample(
        "fleet_slo_error_budget_remaining_ratio",
        &[("slo", FLEET_SLO)],
        sli.error_budget_remaining,
    );
    w.sample(
        "fleet_slo_error_budget_remaining_ratio",
        &[("slo", ACK_SLO)],
        acks.error_budget_remaining,
    );
    w.family(
        "fleet_slo_burn_rate",
        Kind::Gauge,
        "Error budget burn rate over the window: (1 - SLI) / (1 - target); 1 spends the budget exactly over the SLO window.",
    );
    for (slo, burn) in [(FLEET_SLO, &sli.burn), (ACK_SLO, &acks.burn)] {
        for ((name, _), b) in BURN_WINDOWS.iter().zip(rates(burn)) {
            w.sample("fleet_slo_burn_rate", &[("slo", slo), ("window", name)], b);
        }
    }
    w.family(
        "fleet_slo_alert_firing",
        Kind::Gauge,
        "1 while the built-in multi-window burn-rate alert fires (page: 1h&5m > 14.4 or 6h&30m > 6; ticket: 3d&6h > 1).",
    );
    for (severity, label) in [
        (AlertSeverity::Page, "page"),
        (AlertSeverity::Ticket, "ticket"),
    ] {
        let firing = sli.alerts_firing.contains(&severity);
        w.sample(
            "fleet_slo_alert_firing",
            &[("slo", FLEET_SLO), ("severity", label)],
            f64::from(u8::from(firing)),
        );
    }
    w.family(
        "fleet_slo_alert_changes_total",
        Kind::Counter,
        "Built-in burn-rate alerts that fired or resolved (each also published on fleet/alerts).",
    );
    for (severity, sev) in [
        (AlertSeverity::Page, "page"),
        (AlertSeverity::Ticket, "ticket"),
    ] {
        for (state, st) in [
            (AlertState::Firing, "firing"),
            (AlertState::Resolved, "resolved"),
        ] {
            w.sample(
                "fleet_slo_alert_changes_total",
                &[("slo", FLEET_SLO), ("severity", sev), ("state", st)],
                s.metrics.alert_changes(severity, state) as f64,
            );
        }
    }
    w.family(
        "fleet_slo_broker_downtime_seconds",
        Kind::Gauge,
        "Time the broker itself was down within the SLO window (found at restarts).",
    );
    w.sample(
        "fleet_slo_broker_downtime_seconds",
        &[("slo", FLEET_SLO)],
        sli.downtime_ms as f64 / 1000.0,
    );
}

fn commands(w: &mut TextWriter, s: &Scrape<'_>) {
    let m = s.metrics;
    w.single(
        "fleet_commands_sent_total",
        Kind::Counter,
        "Commands published to vehicles (first sends and resends).",
        get(&m.commands_sent) as f64,
    );
    w.by_label(
        "fleet_commands_acked_total",
        Kind::Counter,
        "Acks of pending commands, by the ack's result.",
        "result",
        [
            ("ok", get(&m.commands_acked) as f64),
            ("failed", get(&m.commands_failed) as f64),
        ],
    );
    w.single(
        "fleet_acks_unknown_total",
        Kind::Counter,
        "Acks naming no pending command of that vehicle.",
        get(&m.acks_unknown) as f64,
    );
    w.single(
        "fleet_commands_to_silent_total",
        Kind::Counter,
        "Commands sent to a silent vehicle (heartbeat_lost): not counted in the command-ack SLO.",
        get(&m.commands_to_silent) as f64,
    );
    w.single(
        "fleet_commands_unacked",
        Kind::Gauge,
        "Commands awaiting their ack now.",
        s.engine.unacked_commands as f64,
    );
    w.by_label(
        "fleet_command_ack_slo_events_total",
        Kind::Counter,
        "Commands to reachable vehicles judged by the command-ack SLO, by outcome (acked_in_time is good).",
        "outcome",
        AckOutcome::ALL.map(|o| (o.as_str(), m.ack_outcomes(o) as f64)),
    );
    w.family(
        "fleet_command_ack_latency_seconds",
        Kind::Histogram,
        "Time from a command's issue to its ack.",
    );
    w.histogram(
        "fleet_command_ack_latency_seconds",
        &[],
        &m.command_ack_latency.snapshot(),
    );
}

fn ingest(w: &mut TextWriter, s: &Scrape<'_>) {
    let m = s.metrics;
    w.by_label(
        "fleet_messages_ingested_total",
        Kind::Counter,
        "Uplink messages decoded and applied, by kind.",
        "kind",
        [
            ("heartbeat", get(&m.heartbeats) as f64),
            ("error", get(&m.error_reports) as f64),
            ("ack", get(&m.acks) as f64),
        ],
    );
    w.family(
        "fleet_messages_rejected_total",
        Kind::Counter,
        "Uplink messages rejected by ingest (bad topic, id, payload) or refused by the rules (decommissioned vehicle, fleet full), by reason.",
    );
    for (reason, n) in m.rejections() {
        w.sample(
            "fleet_messages_rejected_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    w.sample(
        "fleet_messages_rejected_total",
        &[("reason", "refused_by_rules")],
        get(&m.refused_by_rules) as f64,
    );
    w.family(
        "fleet_transitions_total",
        Kind::Counter,
        "Changes of vehicles' out-of-service reasons, by change and reason kind.",
    );
    for ((change, reason), n) in m.transitions_by_label() {
        w.sample(
            "fleet_transitions_total",
            &[("change", change), ("reason", reason)],
            n as f64,
        );
    }
    w.family(
        "fleet_detection_latency_seconds",
        Kind::Histogram,
        "Time from a vehicle's heartbeat deadline to its heartbeat_lost transition (includes a mass-loss hold).",
    );
    w.histogram(
        "fleet_detection_latency_seconds",
        &[],
        &m.detection_latency.snapshot(),
    );
    w.single(
        "fleet_publish_errors_total",
        Kind::Counter,
        "Broker publishes (commands, state, events) that failed.",
        get(&m.publish_errors) as f64,
    );
}

fn mqtt(w: &mut TextWriter, q: &MqttStats) {
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

fn engine(w: &mut TextWriter, s: &Scrape<'_>) {
    w.family(
        "fleet_engine_queue_depth",
        Kind::Gauge,
        "Items waiting in a bounded queue: uplink (MQTT to engine), ops (API to engine), store (engine to store writer), outbound (store writer to MQTT).",
    );
    for (queue, depth, _) in s.queues {
        w.sample(
            "fleet_engine_queue_depth",
            &[("queue", queue)],
            *depth as f64,
        );
    }
    w.family(
        "fleet_engine_queue_capacity",
        Kind::Gauge,
        "Capacity of each bounded queue.",
    );
    for (queue, _, capacity) in s.queues {
        w.sample(
            "fleet_engine_queue_capacity",
            &[("queue", queue)],
            *capacity as f64,
        );
    }
}

fn store(w: &mut TextWriter, st: &StoreMetrics) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    w.single(
        "fleet_store_commits_total",
        Kind::Counter,
        "Store transactions committed.",
        load(&st.commits),
    );
    w.single(
        "fleet_store_records_total",
        Kind::Counter,
        "Records (transitions, commands, checkpoints) stored.",
        load(&st.records),
    );
    w.single(
        "fleet_store_write_errors_total",
        Kind::Counter,
        "Failed commit attempts.",
        load(&st.write_errors),
    );
    w.single(
        "fleet_store_failing",
        Kind::Gauge,
        "1 while the latest commit failed: announcements are held until the store can write.",
        load(&st.failing),
    );
    w.single(
        "fleet_store_held_announcements",
        Kind::Gauge,
        "Announcements (publishes, notifications, replies) held by a failing commit.",
        load(&st.held),
    );
    w.single(
        "fleet_store_dropped_batches_total",
        Kind::Counter,
        "Batches given up at shutdown because they could not be stored.",
        load(&st.dropped_batches),
    );
    w.single(
        "fleet_store_last_commit_seconds",
        Kind::Gauge,
        "Duration of the last commit.",
        load(&st.last_commit_us) / 1e6,
    );
}

fn slack(w: &mut TextWriter, sl: &crate::slack::SlackMetrics) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    w.single(
        "fleet_slack_configured",
        Kind::Gauge,
        "1 when notifications go to Slack (else to the log only).",
        load(&sl.configured),
    );
    w.single(
        "fleet_slack_outbox_depth",
        Kind::Gauge,
        "Notifications in the outbox waiting for delivery.",
        load(&sl.depth),
    );
    w.single(
        "fleet_slack_messages_pending",
        Kind::Gauge,
        "Messages composed and not yet accepted by Slack.",
        load(&sl.messages_pending),
    );
    w.single(
        "fleet_slack_sent_total",
        Kind::Counter,
        "Messages Slack accepted.",
        load(&sl.sent),
    );
    w.single(
        "fleet_slack_retried_total",
        Kind::Counter,
        "Failed attempts that are retried (429, 5xx, timeouts, refused credentials).",
        load(&sl.retried),
    );
    w.single(
        "fleet_slack_rate_limited_total",
        Kind::Counter,
        "Attempts answered with 429 (Retry-After obeyed).",
        load(&sl.rate_limited),
    );
    w.by_label(
        "fleet_slack_dropped_total",
        Kind::Counter,
        "Notifications dropped because the outbox was full, and messages given up.",
        "reason",
        [
            ("outbox_full", load(&sl.dropped_full)),
            ("gave_up", load(&sl.gave_up)),
        ],
    );
    w.single(
        "fleet_slack_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last message Slack accepted (0: none since start).",
        load(&sl.last_success_ms) / 1e3,
    );
    w.single(
        "fleet_slack_failing",
        Kind::Gauge,
        "1 while the latest attempt failed.",
        load(&sl.failing),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sli_comes_back_from_its_burn_rate() {
        assert!((sli_from_burn(2.0, 0.995) - 0.99).abs() < 1e-12);
        assert_eq!(sli_from_burn(0.0, 0.995), 1.0);
    }
}
