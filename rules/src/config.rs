//! The rules' settings: plain values, already validated by the broker's config loader.

use std::collections::HashMap;
use std::time::Duration;

/// Everything the rules engine needs to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesConfig {
    /// Heartbeat-loss detection.
    pub heartbeat: HeartbeatConfig,
    /// Hardware-fault thresholds.
    pub faults: FaultConfig,
    /// The guard against mass eviction when much of the fleet goes silent at once.
    pub mass_loss: MassLossConfig,
    /// Flap detection: a vehicle crossing its timeout again and again is reported once.
    pub flap: FlapConfig,
    /// The CMC SLO.
    pub slo: SloConfig,
    /// A command is sent again when a heartbeat reports a state other than the desired
    /// one, at most once per this interval per vehicle.
    pub command_resend_interval: Duration,
    /// Registration of new vehicles stops at this many tracked vehicles (memory bound).
    pub max_vehicles: usize,
    /// Rider journeys measured on the fleet's own traffic (an unlock), in config order.
    pub journeys: Vec<JourneyConfig>,
}

/// Heartbeat-loss detection.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// Silence longer than this sets `heartbeat_lost` (for models without their own).
    pub timeout: Duration,
    /// Per-model timeouts, keyed by the `model` field of the heartbeat.
    pub models: HashMap<String, Duration>,
    /// Consecutive heartbeats needed to clear `heartbeat_lost`.
    pub recover_after: u32,
    /// After a restart every in-service vehicle gets this long (from startup) before it
    /// can be found silent. `None` means "its own timeout".
    pub restart_grace: Option<Duration>,
}

/// Hardware-fault thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// The rule for codes without their own.
    pub default: FaultRule,
    /// Per-code rules, keyed by error code.
    pub codes: HashMap<String, FaultRule>,
}

/// When reports of one error code take a vehicle out of service.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultRule {
    /// `threshold` reports within `window` set `hardware_fault{code}`.
    Threshold {
        /// Reports needed (at least 1).
        threshold: u32,
        /// The sliding window the reports must fall in.
        window: Duration,
    },
    /// Counted and shown, never takes the vehicle out.
    Informational,
}

/// What to do with heartbeat service-outs during a mass-loss incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MassLossAction {
    /// Hold them until the incident ends (held vehicles still count as bad in the SLI).
    Hold,
    /// Take vehicles out as usual; only the notification is grouped.
    ServiceOut,
}

/// The mass-loss guard. Heartbeat expiries are counted in `window`; with T = max(
/// `min_vehicles`, ceil(`fraction` × fleet)), the first T/10 are taken out as usual, later
/// ones wait silently, and at T one incident is announced and `action` applies to the wave.
/// The incident ends when the wave has come back, or when fewer than T are still silent
/// and none came back for a window; the rest are then taken out.
#[derive(Debug, Clone, PartialEq)]
pub struct MassLossConfig {
    /// Fraction of the active fleet that must go silent within `window`.
    pub fraction: f64,
    /// ... and at least this many vehicles.
    pub min_vehicles: usize,
    /// The window silences are counted in.
    pub window: Duration,
    /// Hold or proceed with the service-outs.
    pub action: MassLossAction,
}

/// Flap detection.
#[derive(Debug, Clone, PartialEq)]
pub struct FlapConfig {
    /// This many `heartbeat_lost` sets within `window` make a vehicle flapping.
    pub threshold: u32,
    /// The window.
    pub window: Duration,
}

/// The CMC SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct SloConfig {
    /// Target fraction of fleet-time in service, e.g. 0.995.
    pub target: f64,
    /// Rolling window, e.g. 30 days.
    pub window: Duration,
    /// Whether vehicles out for `maintenance` only count as bad (default: excluded from
    /// both good and valid).
    pub maintenance_counts_as_bad: bool,
}

/// One journey's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyConfig {
    /// Its name ("unlock"): in the `journey_failures` reason, metrics and the API.
    pub name: String,
    /// An answer later than this after its request is late; the request timed out.
    pub timeout: Duration,
    /// Requests pending for one vehicle at most.
    pub max_pending_per_vehicle: usize,
    /// Requests pending in all at most.
    pub max_pending: usize,
    /// SLO target of the share answered with success in time.
    pub target: f64,
    /// SLO window.
    pub window: Duration,
    /// Failures that take a vehicle out, if any.
    pub rule: Option<JourneyRule>,
}

/// `failures` failed or timed-out requests of one vehicle within `window` set
/// `journey_failures{name}` on it.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyRule {
    /// Failures needed (at least 1).
    pub failures: u32,
    /// The sliding window they must fall in.
    pub window: Duration,
    /// How the reason is cleared.
    pub recovery: Recovery,
}

/// How `journey_failures` is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// By the vehicle's next successful answer (or a person).
    Auto,
    /// Only by a person, like a hardware fault.
    Manual,
}

/// Milliseconds in `d`, saturating: a validated config never comes near `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            heartbeat: HeartbeatConfig {
                timeout: Duration::from_secs(300),
                models: HashMap::new(),
                recover_after: 1,
                restart_grace: None,
            },
            faults: FaultConfig {
                default: FaultRule::Threshold {
                    threshold: 3,
                    window: Duration::from_secs(600),
                },
                codes: HashMap::new(),
            },
            mass_loss: MassLossConfig {
                fraction: 0.2,
                min_vehicles: 50,
                window: Duration::from_secs(120),
                action: MassLossAction::Hold,
            },
            flap: FlapConfig {
                threshold: 3,
                window: Duration::from_secs(3600),
            },
            slo: SloConfig {
                target: 0.995,
                window: Duration::from_secs(30 * 24 * 3600),
                maintenance_counts_as_bad: false,
            },
            command_resend_interval: Duration::from_secs(30),
            max_vehicles: 1_000_000,
            journeys: Vec::new(),
        }
    }
}
