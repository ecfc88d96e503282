//! The CMC SLI: good and valid vehicle-time in per-minute buckets, the SLO's error
//! budget, burn rates and the multi-window multi-burn-rate alert policy.

use serde::Serialize;

use crate::UnixMs;

/// The burn-rate windows, in ms: 5m, 30m, 1h, 6h, 1d, 3d.
pub const BURN_WINDOWS: [(&str, u64); 6] = [
    ("5m", 5 * 60_000),
    ("30m", 30 * 60_000),
    ("1h", 60 * 60_000),
    ("6h", 6 * 60 * 60_000),
    ("1d", 24 * 60 * 60_000),
    ("3d", 3 * 24 * 60 * 60_000),
];

/// Burn rate per window: (1 - SLI over the window) / (1 - target). 1.0 spends the budget
/// exactly over the SLO window. A window with no valid time burns 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct BurnRates {
    /// Over 5 minutes.
    pub m5: f64,
    /// Over 30 minutes.
    pub m30: f64,
    /// Over 1 hour.
    pub h1: f64,
    /// Over 6 hours.
    pub h6: f64,
    /// Over 1 day.
    pub d1: f64,
    /// Over 3 days.
    pub d3: f64,
}

/// Page (fast burn) or ticket (slow burn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// 1h and 5m both above 14.4x, or 6h and 30m both above 6x.
    Page,
    /// 3d and 6h both above 1x.
    Ticket,
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// It held and no longer does.
    Resolved,
}

/// The SLI and SLO figures at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliReport {
    /// When computed.
    pub at: UnixMs,
    /// Vehicles counted good right now.
    pub in_service: usize,
    /// Vehicles counted valid right now (the active fleet, less excluded ones).
    pub fleet: usize,
    /// in_service / fleet right now (1.0 for an empty fleet).
    pub fraction: f64,
    /// good / valid vehicle-time over the SLO window (1.0 with no valid time).
    pub window_sli: f64,
    /// The SLO target.
    pub target: f64,
    /// The SLO window in ms.
    pub window_ms: u64,
    /// Share of the error budget left over the SLO window: 1 - (1 - window_sli) /
    /// (1 - target). Negative when overspent.
    pub error_budget_remaining: f64,
    /// Burn rates.
    pub burn: BurnRates,
    /// Alerts currently firing.
    pub alerts_firing: Vec<AlertSeverity>,
}
