//! The engine's counters and histograms, and every family `/metrics` reports from them
//! and from one engine snapshot: the fleet census, both SLOs, commands, ingest. Names
//! follow the Prometheus conventions (`_total` counters, `_seconds`, `_ratio`).

use std::sync::atomic::{AtomicU64, Ordering};

use fleet_rules::{
    AlertSeverity, AlertState, BurnRates, Reason, ReasonChange, ReasonKind, BURN_WINDOWS,
};

use super::alerts::{ACK_SLO, FLEET_SLO};
use super::snapshot::EngineSnapshot;
use crate::ingest::Rejection;
use crate::metrics::{get, inc, Histogram, Kind, TextWriter};

/// Upper bounds (seconds) of the detection latency histogram: from a vehicle's deadline to
/// the moment its `heartbeat_lost` transition is emitted.
pub const DETECTION_BUCKETS: [f64; 11] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Upper bounds (seconds) of the command-ack latency histogram; 30 s is the ack SLI's
/// default threshold, so Prometheus can compute the same share from the buckets.
pub const ACK_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How a command counted in the command-ack SLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged ok within the SLI's threshold: good.
    InTime,
    /// Acknowledged ok, after the threshold: bad.
    Late,
    /// Acknowledged with `ok: false`: bad.
    Failed,
    /// No ack by the threshold: bad.
    Unacked,
}

impl AckOutcome {
    /// Every outcome, in label order.
    pub const ALL: [AckOutcome; 4] = [
        AckOutcome::InTime,
        AckOutcome::Late,
        AckOutcome::Failed,
        AckOutcome::Unacked,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AckOutcome::InTime => "acked_in_time",
            AckOutcome::Late => "acked_late",
            AckOutcome::Failed => "failed",
            AckOutcome::Unacked => "unacked",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `change`/`reason` label pairs of transitions.
pub const TRANSITION_LABELS: [(&str, &str); 9] = [
    ("set", "heartbeat_lost"),
    ("set", "hardware_fault"),
    ("set", "journey_failures"),
    ("set", "maintenance"),
    ("cleared", "heartbeat_lost"),
    ("cleared", "hardware_fault"),
    ("cleared", "journey_failures"),
    ("cleared", "maintenance"),
    ("decommissioned", "none"),
];

fn transition_index(change: &ReasonChange) -> usize {
    let kind = |r: &Reason| match r {
        Reason::HeartbeatLost { .. } => 0,
        Reason::HardwareFault { .. } => 1,
        Reason::JourneyFailures { .. } => 2,
        Reason::Maintenance { .. } => 3,
    };
    match change {
        ReasonChange::Set(r) => kind(r),
        ReasonChange::Cleared(r) => 4 + kind(r),
        ReasonChange::Decommissioned => 8,
    }
}

/// Counters of the ingest and engine path.
#[derive(Debug)]
pub struct EngineMetrics {
    /// Uplinks decoded and applied, by kind.
    pub heartbeats: AtomicU64,
    /// Error reports applied.
    pub error_reports: AtomicU64,
    /// Acks applied.
    pub acks: AtomicU64,
    /// Messages on liveness topics applied.
    pub liveness: AtomicU64,
    /// Journey requests read (tracked or refused for a bound).
    pub journey_requests: AtomicU64,
    /// Journey answers read.
    pub journey_answers: AtomicU64,
    /// Rejected uplinks, by [`Rejection::LABELS`] index.
    rejected: [AtomicU64; Rejection::LABELS.len()],
    /// Uplinks refused by the rules (decommissioned vehicle, fleet full).
    pub refused_by_rules: AtomicU64,
    /// Commands published (first sends and resends).
    pub commands_sent: AtomicU64,
    /// Commands acknowledged ok.
    pub commands_acked: AtomicU64,
    /// Commands acknowledged with ok=false.
    pub commands_failed: AtomicU64,
    /// Acks naming no pending command.
    pub acks_unknown: AtomicU64,
    /// Commands sent to a silent vehicle (`heartbeat_lost`): not counted in the ack SLI.
    pub commands_to_silent: AtomicU64,
    /// Transitions applied.
    pub transitions: AtomicU64,
    /// Transitions by [`TRANSITION_LABELS`] index.
    transitions_by: [AtomicU64; TRANSITION_LABELS.len()],
    /// Downlink publishes that failed.
    pub publish_errors: AtomicU64,
    /// SLI reports computed for fleet/sli (each sums the whole SLO window: at most one a
    /// second).
    pub sli_reports: AtomicU64,
    /// Deadline to `heartbeat_lost` transition, in seconds.
    pub detection_latency: Histogram,
    /// Command issue to ack, in seconds (every ack of a known command, ok or not).
    pub command_ack_latency: Histogram,
    /// Commands judged for the ack SLI, by [`AckOutcome`].
    ack_outcomes: [AtomicU64; AckOutcome::ALL.len()],
    /// SLO alert changes: page firing, page resolved, ticket firing, ticket resolved.
    alert_changes: [AtomicU64; 4],
    /// 1 while the engine cannot see the fleet (attach mode, upstream link down).
    pub blind: AtomicU64,
    /// Milliseconds blind, summed over the stretches that ended.
    pub blind_ms: AtomicU64,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            heartbeats: AtomicU64::new(0),
            error_reports: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            liveness: AtomicU64::new(0),
            journey_requests: AtomicU64::new(0),
            journey_answers: AtomicU64::new(0),
            rejected: Default::default(),
            refused_by_rules: AtomicU64::new(0),
            commands_sent: AtomicU64::new(0),
            commands_acked: AtomicU64::new(0),
            commands_failed: AtomicU64::new(0),
            acks_unknown: AtomicU64::new(0),
            commands_to_silent: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            transitions_by: Default::default(),
            publish_errors: AtomicU64::new(0),
            sli_reports: AtomicU64::new(0),
            detection_latency: Histogram::new(&DETECTION_BUCKETS),
            command_ack_latency: Histogram::new(&ACK_BUCKETS),
            ack_outcomes: Default::default(),
            alert_changes: Default::default(),
            blind: AtomicU64::new(0),
            blind_ms: AtomicU64::new(0),
        }
    }
}

impl EngineMetrics {
    /// Counts a rejection.
    pub fn reject(&self, r: &Rejection) {
        if let Some(i) = Rejection::LABELS.iter().position(|l| *l == r.label()) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rejections with this label so far.
    pub fn rejected(&self, label: &str) -> u64 {
        Rejection::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Every rejection label with its count.
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        Rejection::LABELS
            .iter()
            .zip(&self.rejected)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a transition by its change.
    pub fn transition(&self, change: &ReasonChange) {
        inc(&self.transitions);
        inc(&self.transitions_by[transition_index(change)]);
    }

    /// Transitions per [`TRANSITION_LABELS`] entry.
    pub fn transitions_by_label(&self) -> Vec<((&'static str, &'static str), u64)> {
        TRANSITION_LABELS
            .iter()
            .zip(&self.transitions_by)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a command judged for the ack SLI.
    pub fn ack_outcome(&self, outcome: AckOutcome) {
        inc(&self.ack_outcomes[outcome.index()]);
    }

    /// Commands judged with this outcome so far.
    pub fn ack_outcomes(&self, outcome: AckOutcome) -> u64 {
        self.ack_outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    fn alert_index(severity: AlertSeverity, state: AlertState) -> usize {
        let s = match severity {
            AlertSeverity::Page => 0,
            AlertSeverity::Ticket => 2,
        };
        s + usize::from(state == AlertState::Resolved)
    }

    /// Counts an SLO alert's change of state.
    pub fn alert_change(&self, severity: AlertSeverity, state: AlertState) {
        inc(&self.alert_changes[Self::alert_index(severity, state)]);
    }

    /// SLO alert changes of this severity to this state so far.
    pub fn alert_changes(&self, severity: AlertSeverity, state: AlertState) -> u64 {
        self.alert_changes[Self::alert_index(severity, state)].load(Ordering::Relaxed)
    }
}

impl EngineMetrics {
    /// Writes the engine's families: the census and SLOs from `snapshot` (taken for this
    /// scrape), commands and ingest from the counters. `slo_window` labels the SLO
    /// window's SLI (`"30d"`).
    pub fn render(&self, w: &mut TextWriter, snapshot: &EngineSnapshot, slo_window: &str) {
        fleet(w, snapshot);
        slo(w, self, snapshot, slo_window);
        journeys(w, snapshot);
        commands(w, self, snapshot);
        ingest(w, self);
    }
}

/// Each journey's requests, ends, latency and precision figures.
fn journeys(w: &mut TextWriter, snapshot: &EngineSnapshot) {
    if snapshot.journeys.is_empty() {
        return;
    }
    let all = &snapshot.journeys;
    w.family(
        "fleet_journey_requests_total",
        Kind::Counter,
        "Journey requests tracked (an unlock sent to a vehicle).",
    );
    for j in all {
        let n = j.report.counts.requested as f64;
        w.sample("fleet_journey_requests_total", &[("journey", &j.name)], n);
    }
    w.family(
        "fleet_journey_ends_total",
        Kind::Counter,
        "Journey requests ended: answered with success or failure within the timeout, or timed out.",
    );
    for j in all {
        let c = &j.report.counts;
        for (outcome, n) in [
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("timed_out", c.timed_out),
        ] {
            w.sample(
                "fleet_journey_ends_total",
                &[("journey", &j.name), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    w.family(
        "fleet_journey_uncounted_total",
        Kind::Counter,
        "Journey messages that ended no request: refused requests (pending bounds), late answers (after the timeout), unmatched answers, and requests abandoned while the broker was blind.",
    );
    for j in all {
        let c = &j.report.counts;
        for (what, n) in [
            ("refused", c.refused),
            ("late", c.late),
            ("unmatched", c.unmatched),
            ("abandoned", c.abandoned),
        ] {
            w.sample(
                "fleet_journey_uncounted_total",
                &[("journey", &j.name), ("reason", what)],
                n as f64,
            );
        }
    }
    w.family(
        "fleet_journey_pending",
        Kind::Gauge,
        "Journey requests waiting for their answer.",
    );
    for j in all {
        let n = j.report.pending as f64;
        w.sample("fleet_journey_pending", &[("journey", &j.name)], n);
    }
    w.family(
        "fleet_journey_latency_seconds",
        Kind::Histogram,
        "Request to answer, for answers within the timeout.",
    );
    for j in all {
        let r = &j.report;
        let bounds = fleet_rules::LATENCY_BOUNDS_S
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        let h = crate::metrics::HistogramSnapshot {
            buckets: bounds.zip(r.latency.iter().copied()).collect(),
            sum_seconds: r.latency_sum_ms as f64 / 1000.0,
            count: r.latency.last().copied().unwrap_or(0),
        };
        w.histogram("fleet_journey_latency_seconds", &[("journey", &j.name)], &h);
    }
    w.family(
        "fleet_journey_precision_total",
        Kind::Counter,
        "Ended journey requests by outcome and by how the broker showed the vehicle at the request: failures to in-service vehicles are broken vehicles the rules missed; requests to out-of-service ones are riders let at vehicles taken out.",
    );
    for j in all {
        for row in &j.precision {
            let model = row.model.as_deref().unwrap_or("");
            w.sample(
                "fleet_journey_precision_total",
                &[
                    ("journey", &j.name),
                    ("outcome", row.outcome),
                    ("state", row.state),
                    ("reason", row.reason),
                    ("model", model),
                ],
                row.total as f64,
            );
        }
    }
}

fn rates(b: &BurnRates) -> [f64; 6] {
    [b.m5, b.m30, b.h1, b.h6, b.d1, b.d3]
}

/// SLI over a burn window, from its burn rate: burn = (1 - sli) / (1 - target).
fn sli_from_burn(burn: f64, target: f64) -> f64 {
    1.0 - burn * (1.0 - target).max(f64::EPSILON)
}

fn fleet(w: &mut TextWriter, snapshot: &EngineSnapshot) {
    let c = &snapshot.census;
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

fn slo(w: &mut TextWriter, m: &EngineMetrics, snapshot: &EngineSnapshot, slo_window: &str) {
    let sli = &snapshot.sli;
    let acks = &snapshot.acks;
    // The event SLOs: command acks, then each journey's.
    let journey_slos: Vec<String> = snapshot
        .journeys
        .iter()
        .map(|j| super::alerts::journey_slo(&j.name))
        .collect();
    let events: Vec<(&str, &fleet_rules::EventSliReport)> = std::iter::once((ACK_SLO, acks))
        .chain(
            journey_slos
                .iter()
                .map(String::as_str)
                .zip(snapshot.journeys.iter().map(|j| &j.report.sli)),
        )
        .collect();
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
    let windowed = std::iter::once((FLEET_SLO, &sli.burn, sli.target, sli.window_sli)).chain(
        events
            .iter()
            .map(|(slo, e)| (*slo, &e.burn, e.target, e.window_sli)),
    );
    for (slo, burn, target, window_sli) in windowed {
        for ((name, _), b) in BURN_WINDOWS.iter().zip(rates(burn)) {
            w.sample(
                "fleet_slo_sli_ratio",
                &[("slo", slo), ("window", name)],
                sli_from_burn(b, target),
            );
        }
        if !BURN_WINDOWS.iter().any(|(n, _)| *n == slo_window) {
            w.sample(
                "fleet_slo_sli_ratio",
                &[("slo", slo), ("window", slo_window)],
                window_sli,
            );
        }
    }

    w.family("fleet_slo_target_ratio", Kind::Gauge, "The SLO's target.");
    w.sample("fleet_slo_target_ratio", &[("slo", FLEET_SLO)], sli.target);
    for (slo, e) in &events {
        w.sample("fleet_slo_target_ratio", &[("slo", slo)], e.target);
    }
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
    for (slo, e) in &events {
        w.sample(
            "fleet_slo_window_seconds",
            &[("slo", slo)],
            (e.window_ms / 1000) as f64,
        );
    }
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
    for (slo, e) in &events {
        w.sample(
            "fleet_slo_error_budget_remaining_ratio",
            &[("slo", slo)],
            e.error_budget_remaining,
        );
    }
    w.family(
        "fleet_slo_burn_rate",
        Kind::Gauge,
        "Error budget burn rate over the window: (1 - SLI) / (1 - target); 1 spends the budget exactly over the SLO window.",
    );
    let burns = std::iter::once((FLEET_SLO, &sli.burn))
        .chain(events.iter().map(|(slo, e)| (*slo, &e.burn)));
    for (slo, burn) in burns {
        for ((name, _), b) in BURN_WINDOWS.iter().zip(rates(burn)) {
            w.sample("fleet_slo_burn_rate", &[("slo", slo), ("window", name)], b);
        }
    }
    w.family(
        "fleet_slo_alert_firing",
        Kind::Gauge,
        "1 while the built-in multi-window burn-rate alert fires (page: 1h&5m > 14.4 or 6h&30m > 6; ticket: 3d&6h > 1).",
    );
    let firing = std::iter::once((FLEET_SLO, &sli.alerts_firing)).chain(
        journey_slos
            .iter()
            .map(String::as_str)
            .zip(snapshot.journeys.iter().map(|j| &j.alerts_firing)),
    );
    for (slo, alerts) in firing {
        for (severity, label) in [
            (AlertSeverity::Page, "page"),
            (AlertSeverity::Ticket, "ticket"),
        ] {
            w.sample(
                "fleet_slo_alert_firing",
                &[("slo", slo), ("severity", label)],
                f64::from(u8::from(alerts.contains(&severity))),
            );
        }
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
                m.alert_changes(severity, state) as f64,
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

fn commands(w: &mut TextWriter, m: &EngineMetrics, snapshot: &EngineSnapshot) {
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
        snapshot.unacked_commands as f64,
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

fn ingest(w: &mut TextWriter, m: &EngineMetrics) {
    w.single(
        "fleet_blind",
        Kind::Gauge,
        "1 while the broker cannot see the fleet (attach mode: the upstream link is down); deadlines pause and the time counts as broker downtime.",
        get(&m.blind) as f64,
    );
    w.single(
        "fleet_blind_seconds_total",
        Kind::Counter,
        "Time the broker could not see the fleet, summed over the blind stretches that ended.",
        get(&m.blind_ms) as f64 / 1000.0,
    );
    w.by_label(
        "fleet_messages_ingested_total",
        Kind::Counter,
        "Uplink messages decoded and applied, by kind.",
        "kind",
        [
            ("heartbeat", get(&m.heartbeats) as f64),
            ("error", get(&m.error_reports) as f64),
            ("ack", get(&m.acks) as f64),
            ("liveness", get(&m.liveness) as f64),
            ("journey_request", get(&m.journey_requests) as f64),
            ("journey_answer", get(&m.journey_answers) as f64),
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
    w.single(
        "fleet_sli_reports_total",
        Kind::Counter,
        "SLI reports computed for fleet/sli (each sums the SLO window; at most one a second).",
        get(&m.sli_reports) as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_counted_by_change_and_reason_kind() {
        let m = EngineMetrics::default();
        m.transition(&ReasonChange::Set(Reason::HeartbeatLost { since: 1 }));
        m.transition(&ReasonChange::Cleared(Reason::HardwareFault {
            code: "X".into(),
            since: 1,
        }));
        m.transition(&ReasonChange::Decommissioned);
        let by = m.transitions_by_label();
        let count = |c: &str, r: &str| by.iter().find(|(l, _)| *l == (c, r)).map(|(_, n)| *n);
        assert_eq!(count("set", "heartbeat_lost"), Some(1));
        assert_eq!(count("cleared", "hardware_fault"), Some(1));
        assert_eq!(count("decommissioned", "none"), Some(1));
        assert_eq!(count("set", "maintenance"), Some(0));
        assert_eq!(get(&m.transitions), 3);
    }

    #[test]
    fn alert_changes_are_counted_per_severity_and_state() {
        let m = EngineMetrics::default();
        m.alert_change(AlertSeverity::Page, AlertState::Firing);
        m.alert_change(AlertSeverity::Ticket, AlertState::Resolved);
        assert_eq!(m.alert_changes(AlertSeverity::Page, AlertState::Firing), 1);
        assert_eq!(
            m.alert_changes(AlertSeverity::Page, AlertState::Resolved),
            0
        );
        assert_eq!(
            m.alert_changes(AlertSeverity::Ticket, AlertState::Resolved),
            1
        );
    }
}

#[cfg(test)]
mod exposition_tests {
    use super::*;

    #[test]
    fn an_sli_comes_back_from_its_burn_rate() {
        assert!((sli_from_burn(2.0, 0.995) - 0.99).abs() < 1e-12);
        assert_eq!(sli_from_burn(0.0, 0.995), 1.0);
    }
}
