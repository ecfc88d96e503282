//! The pure core of the fleet health broker.
//!
//! [`Fleet`] owns every vehicle's out-of-service reasons, the error-code sliding windows,
//! the mass-loss guard and the CMC SLI. It performs no I/O and never reads a clock: every
//! call that depends on time takes `now` (unix milliseconds, server receive time), and
//! decisions come out as [`Effect`] values drained with [`Fleet::drain_effects`]. The owner
//! asks [`Fleet::poll_timeout`] for the next deadline and calls [`Fleet::tick`] then.
#![deny(missing_docs)]

mod blind;
mod burn;
mod config;
mod deadlines;
mod event_sli;
mod export;
mod faults;
mod flap;
mod fleet;
mod hardware;
mod journey;
mod journeys;
mod ledger;
mod link;
mod manual;
mod mass_loss;
pub mod mds;
mod query;
mod registry;
mod restore;
mod settings;
mod sli;
mod sweep;
#[cfg(test)]
mod testkit;
mod timeouts;
mod types;
mod uplink;
mod vehicle;

pub use blind::Blindness;
pub use config::{
    FaultConfig, FaultRule, FlapConfig, HeartbeatConfig, JourneyConfig, JourneyRule,
    MassLossAction, MassLossConfig, Recovery, RulesConfig, SloConfig,
};
pub use event_sli::EventSli;
pub use export::{ScanCursor, SliMinute};
pub use fleet::{Fleet, VehicleView};
pub use journey::{
    Answered, Journey, JourneyCounts, JourneyEnd, JourneyMinute, JourneyReport, JourneyStatus,
    PrecisionRow, Refused, Standing, LATENCY_BOUNDS_S,
};
pub use query::{Breakdown, Census, PageCursor, VehicleFilter, VehiclePage};
pub use restore::{OpenIncident, Restore, RestoredFleet, SliHistory, Watched};
pub use sli::SliReport;
pub use types::{
    AlertSeverity, AlertState, BurnRates, Cause, Command, CommandKind, Effect, EventSliReport,
    Heartbeat, Notification, Reason, ReasonChange, ReasonKind, RulesError, ServiceInOutcome,
    ServiceState, Transition, UnixMs, VehicleSnapshot, BURN_WINDOWS,
};
