//! The broker's counters and histograms: plain atomics shared by the components and read
//! by the logs, the tests and the Prometheus exposition ([`exposition::render`]).
//!
//! Why hand-written rather than a client crate: almost every figure already exists as an
//! atomic here, in the MQTT front, or as state the engine owns and reports per scrape
//! (vehicles by state, SLI, burn rates). A client registry would mirror each into a second
//! set of objects; writing the text format directly from those values is ~200 lines with
//! tests, and the names, units and labels stay in one readable place.

pub mod exposition;
mod histogram;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};

use fleet_rules::{AlertSeverity, AlertState, Reason, ReasonChange};

use crate::ingest::Rejection;

pub use histogram::Histogram;
pub use text::TextWriter;

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
pub const TRANSITION_LABELS: [(&str, &str); 7] = [
    ("set", "heartbeat_lost"),
    ("set", "hardware_fault"),
    ("set", "maintenance"),
    ("cleared", "heartbeat_lost"),
    ("cleared", "hardware_fault"),
    ("cleared", "maintenance"),
    ("decommissioned", "none"),
];

fn transition_index(change: &ReasonChange) -> usize {
    let kind = |r: &Reason| match r {
        Reason::HeartbeatLost { .. } => 0,
        Reason::HardwareFault { .. } => 1,
        Reason::Maintenance { .. } => 2,
    };
    match change {
        ReasonChange::Set(r) => kind(r),
        ReasonChange::Cleared(r) => 3 + kind(r),
        ReasonChange::Decommissioned => 6,
    }
}

/// Counters of the ingest and engine path.
#[derive(Debug)]
pub struct Metrics {
    /// Uplinks decoded and applied, by kind.
    pub heartbeats: AtomicU64,
    /// Error reports applied.
    pub error_reports: AtomicU64,
    /// Acks applied.
    pub acks: AtomicU64,
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
    /// Deadline to `heartbeat_lost` transition, in seconds.
    pub detection_latency: Histogram,
    /// Command issue to ack, in seconds (every ack of a known command, ok or not).
    pub command_ack_latency: Histogram,
    /// Commands judged for the ack SLI, by [`AckOutcome`].
    ack_outcomes: [AtomicU64; AckOutcome::ALL.len()],
    /// SLO alert changes: page firing, page resolved, ticket firing, ticket resolved.
    alert_changes: [AtomicU64; 4],
    /// The Slack notifier.
    pub slack: crate::slack::SlackMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            heartbeats: AtomicU64::new(0),
            error_reports: AtomicU64::new(0),
            acks: AtomicU64::new(0),
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
            detection_latency: Histogram::new(&DETECTION_BUCKETS),
            command_ack_latency: Histogram::new(&ACK_BUCKETS),
            slack: Default::default(),
            ack_outcomes: Default::default(),
            alert_changes: Default::default(),
        }
    }
}

impl Metrics {
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

/// Adds one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_counted_by_change_and_reason_kind() {
        let m = Metrics::default();
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
        let m = Metrics::default();
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
