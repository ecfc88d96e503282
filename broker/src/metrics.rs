//! The broker's counters: plain atomics shared by the components and read by the logs,
//! the tests and (later) the Prometheus exporter.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ingest::Rejection;

/// Counters of the ingest and engine path.
#[derive(Debug, Default)]
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
    /// Transitions applied.
    pub transitions: AtomicU64,
    /// Downlink publishes that failed.
    pub publish_errors: AtomicU64,
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
}

/// Adds one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
