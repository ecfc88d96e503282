//! The config in the units the engine works in (milliseconds), computed once, so the hot
//! paths never convert a `Duration`.

use crate::config::millis;
use crate::{FaultConfig, FaultRule, RulesConfig};

/// The parts of [`RulesConfig`] the fleet reads on every call.
pub(crate) struct Settings {
    /// Consecutive heartbeats that clear `heartbeat_lost` (at least 1).
    pub(crate) recover_after: u32,
    pub(crate) resend_ms: u64,
    pub(crate) max_vehicles: usize,
    pub(crate) flap_threshold: u32,
    pub(crate) flap_window_ms: u64,
    pub(crate) slo_target: f64,
    pub(crate) slo_window_ms: u64,
    pub(crate) maintenance_bad: bool,
    faults: FaultConfig,
}

impl Settings {
    pub(crate) fn new(config: &RulesConfig) -> Settings {
        Settings {
            recover_after: config.heartbeat.recover_after.max(1),
            resend_ms: millis(config.command_resend_interval),
            max_vehicles: config.max_vehicles,
            flap_threshold: config.flap.threshold.max(1),
            flap_window_ms: millis(config.flap.window),
            slo_target: config.slo.target,
            slo_window_ms: millis(config.slo.window),
            maintenance_bad: config.slo.maintenance_counts_as_bad,
            faults: config.faults.clone(),
        }
    }

    /// The rule for `code`: its own, else the default.
    pub(crate) fn fault_rule(&self, code: &str) -> &FaultRule {
        self.faults.codes.get(code).unwrap_or(&self.faults.default)
    }
}
