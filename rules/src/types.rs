//! The values that go in and come out of the rules engine.

use serde::Serialize;

/// Unix time in milliseconds, as received by the server.
pub type UnixMs = u64;

/// The state a vehicle should be in (or reports it applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Rentable.
    InService,
    /// Not rentable: at least one reason holds.
    OutOfService,
}

/// One out-of-service reason. A vehicle is in service exactly when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// No uplink for the vehicle's timeout. Cleared by heartbeats.
    HeartbeatLost {
        /// When the deadline passed.
        since: UnixMs,
    },
    /// An error code crossed its threshold. Cleared only by a person.
    HardwareFault {
        /// The error code.
        code: String,
        /// When the threshold was crossed.
        since: UnixMs,
    },
    /// Requests of a journey (an unlock) failed or timed out `failures` times within the
    /// journey rule's window. Cleared by the next success (`recovery = "auto"`) or only by
    /// a person (`"manual"`).
    JourneyFailures {
        /// The journey's name.
        journey: String,
        /// Failures within the window when it was set.
        failures: u32,
        /// When it was set.
        since: UnixMs,
    },
    /// Taken out by a person. Cleared only by a person.
    Maintenance {
        /// The operator.
        by: String,
        /// Their note.
        note: String,
        /// When.
        since: UnixMs,
    },
}

/// How a reason set changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", content = "reason", rename_all = "snake_case")]
pub enum ReasonChange {
    /// A reason was added.
    Set(Reason),
    /// A reason was removed.
    Cleared(Reason),
    /// The vehicle left the fleet.
    Decommissioned,
}

/// Who or what caused a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// A rule (heartbeat timeout, fault threshold, mass-loss release).
    Rule,
    /// A person through the ops API.
    Operator {
        /// Their name.
        name: String,
        /// Their note.
        note: String,
    },
}

/// One change of a vehicle's reason set. `from` and `to` may be equal (a reason cleared
/// while another still holds the vehicle out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The vehicle.
    pub vehicle: String,
    /// State before.
    pub from: ServiceState,
    /// State after.
    pub to: ServiceState,
    /// What changed.
    pub change: ReasonChange,
    /// All reasons after the change.
    pub reasons: Vec<Reason>,
    /// Who or what.
    pub cause: Cause,
    /// When.
    pub at: UnixMs,
}

/// A command for the vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Stop renting.
    ServiceOut,
    /// Rentable again.
    ServiceIn,
}

/// A command to send to a vehicle (the broker adds the unique id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// The vehicle.
    pub vehicle: String,
    /// What to apply.
    pub command: CommandKind,
    /// The reasons behind it (empty for service-in).
    pub reasons: Vec<Reason>,
    /// When decided.
    pub issued_at: UnixMs,
    /// True when this repeats the desired state because the vehicle reported another.
    pub resend: bool,
}

/// Something a person should hear about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notification {
    /// A vehicle was taken out for a hardware fault.
    HardwareFault {
        /// The vehicle.
        vehicle: String,
        /// The code.
        code: String,
        /// Reports of the code within the window when it crossed.
        reports: u32,
        /// The rule's window in ms.
        window_ms: u64,
        /// The vehicle's model, if known.
        model: Option<String>,
        /// Its last reported battery level in percent, if known.
        battery: Option<u8>,
        /// When.
        at: UnixMs,
    },
    /// A vehicle was taken out because its journey requests kept failing.
    JourneyFailures {
        /// The vehicle.
        vehicle: String,
        /// The journey.
        journey: String,
        /// Failed or timed-out requests within the window.
        failures: u32,
        /// The rule's window in ms.
        window_ms: u64,
        /// Whether only a person brings it back.
        manual: bool,
        /// The vehicle's model, if known.
        model: Option<String>,
        /// Its last reported battery level in percent, if known.
        battery: Option<u8>,
        /// When.
        at: UnixMs,
    },
    /// A journey's burn-rate alert fired or resolved (the same policy as the CMC SLO's).
    JourneyAlert {
        /// The journey.
        journey: String,
        /// Page or ticket.
        severity: AlertSeverity,
        /// Firing or resolved.
        state: AlertState,
        /// The journey's SLI and burn rates when it changed.
        sli: EventSliReport,
        /// When.
        at: UnixMs,
    },
    /// Much of the fleet went silent within the mass-loss window: a platform or network
    /// incident. Reported once.
    MassLossStarted {
        /// Vehicles silent within the window.
        silent: usize,
        /// Active fleet size.
        fleet: usize,
        /// The threshold crossed.
        threshold: usize,
        /// A few of the silent vehicles' ids.
        sample: Vec<String>,
        /// Whether service-outs are held.
        holding: bool,
        /// When.
        at: UnixMs,
    },
    /// The incident ended: no vehicle of the wave is silent any more, or fewer than the
    /// threshold are and none came back for a full mass-loss window.
    MassLossEnded {
        /// Vehicles of the wave that came back during the incident.
        recovered: usize,
        /// Vehicles still silent, now taken out as usual.
        still_silent: usize,
        /// When.
        at: UnixMs,
    },
    /// The broker cannot see the fleet (in attach mode: its link to the upstream broker is
    /// down) for longer than the alert delay. Nobody is taken out for a silence it could
    /// not observe. Reported once per blind stretch.
    BlindStarted {
        /// When the view was lost.
        since: UnixMs,
        /// When.
        at: UnixMs,
    },
    /// The view is back after a reported blind stretch: deadlines resume with the restart
    /// grace counted from `at`.
    BlindEnded {
        /// When the view was lost.
        since: UnixMs,
        /// How long the broker was blind.
        blind_ms: u64,
        /// When.
        at: UnixMs,
    },
    /// A vehicle keeps crossing its timeout. Reported once per flapping episode.
    Flapping {
        /// The vehicle.
        vehicle: String,
        /// `heartbeat_lost` sets within the window.
        flips: u32,
        /// The window in ms.
        window_ms: u64,
        /// When.
        at: UnixMs,
    },
    /// A burn-rate alert fired or resolved.
    SloAlert {
        /// Page or ticket.
        severity: AlertSeverity,
        /// Firing or resolved.
        state: AlertState,
        /// The burn rates when it changed.
        burn: BurnRates,
        /// When.
        at: UnixMs,
    },
}

/// A decision for the owner to carry out, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A vehicle joined the fleet (first message from an unknown id).
    Registered {
        /// The vehicle.
        vehicle: String,
        /// When.
        at: UnixMs,
    },
    /// A reason set changed. Always comes before the command it causes.
    Transition(Transition),
    /// Send this command to the vehicle.
    Command(Command),
    /// Tell a person.
    Notify(Notification),
}

/// What a heartbeat says besides "I am here". The default is a bare heartbeat; each
/// field left `None` keeps what the vehicle said before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heartbeat<'a> {
    /// The vehicle's model: selects its heartbeat timeout. An unknown name past the cap of
    /// learned models is ignored.
    pub model: Option<&'a str>,
    /// The state the vehicle says it applies: when it is not the desired one, the command
    /// is sent again (at most once per resend interval).
    pub reported: Option<ServiceState>,
    /// Its battery level in percent, shown to the people who go and check it.
    pub battery: Option<u8>,
}

/// What a manual service-in did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInOutcome {
    /// The state after.
    pub state: ServiceState,
    /// Reasons that still hold (a person cannot clear `heartbeat_lost`).
    pub remaining: Vec<Reason>,
    /// Reasons the call cleared.
    pub cleared: Vec<Reason>,
}

/// What the owner persisted of a vehicle, for [`crate::Restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VehicleSnapshot {
    /// The vehicle.
    pub id: String,
    /// Its model, if known.
    pub model: Option<String>,
    /// Its reasons.
    pub reasons: Vec<Reason>,
    /// Last uplink.
    pub last_seen: UnixMs,
    /// Its error counters, as [`crate::VehicleView::error_counts`] gave them (empty when
    /// none were stored).
    pub error_counts: Vec<(String, u64)>,
}

/// Why a call was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The vehicle is not in the fleet.
    #[error("vehicle {0:?} is not in the fleet")]
    UnknownVehicle(String),
    /// The vehicle was decommissioned; its messages are ignored.
    #[error("vehicle {0:?} is decommissioned")]
    Decommissioned(String),
    /// Registration refused: the fleet is at `max_vehicles`.
    #[error("fleet is full ({0} vehicles): vehicle {1:?} not registered")]
    FleetFull(usize, String),
}

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
/// exactly over the SLO window. A window with no valid time burns 0. Serialized keyed by
/// window name (`"5m"` ... `"3d"`), as the MQTT payloads and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct BurnRates {
    /// Over 5 minutes.
    #[serde(rename = "5m")]
    pub m5: f64,
    /// Over 30 minutes.
    #[serde(rename = "30m")]
    pub m30: f64,
    /// Over 1 hour.
    #[serde(rename = "1h")]
    pub h1: f64,
    /// Over 6 hours.
    #[serde(rename = "6h")]
    pub h6: f64,
    /// Over 1 day.
    #[serde(rename = "1d")]
    pub d1: f64,
    /// Over 3 days.
    #[serde(rename = "3d")]
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

/// The event SLI and its SLO figures at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSliReport {
    /// When computed.
    pub at: UnixMs,
    /// The SLO target.
    pub target: f64,
    /// The SLO window in ms.
    pub window_ms: u64,
    /// Good events within the SLO window.
    pub good: u64,
    /// Valid events within the SLO window.
    pub valid: u64,
    /// good / valid over the SLO window (1.0 with no valid event).
    pub window_sli: f64,
    /// 1 - (1 - window_sli) / (1 - target); negative when overspent.
    pub error_budget_remaining: f64,
    /// Burn rates over the usual windows.
    pub burn: BurnRates,
}

/// The kinds of out-of-service reason, for filtering and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// `heartbeat_lost`
    HeartbeatLost,
    /// `hardware_fault` (any code)
    HardwareFault,
    /// `journey_failures` (any journey)
    JourneyFailures,
    /// `maintenance`
    Maintenance,
}

impl ReasonKind {
    /// Every kind, in the order reasons are listed.
    pub const ALL: [ReasonKind; 4] = [
        ReasonKind::HeartbeatLost,
        ReasonKind::HardwareFault,
        ReasonKind::JourneyFailures,
        ReasonKind::Maintenance,
    ];

    /// The name the MQTT contract uses (`heartbeat_lost`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::HeartbeatLost => "heartbeat_lost",
            ReasonKind::HardwareFault => "hardware_fault",
            ReasonKind::JourneyFailures => "journey_failures",
            ReasonKind::Maintenance => "maintenance",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<ReasonKind> {
        ReasonKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}
