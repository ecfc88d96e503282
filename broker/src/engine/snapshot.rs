//! The engine's state in one value, taken per request: what the ops API and the metrics
//! exposition read.

use fleet_rules::{Census, EventSliReport, SliReport};

/// What the ops API and the metrics exporter read in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSnapshot {
    /// The CMC SLI (fleet in service).
    pub sli: SliReport,
    /// The command-ack SLI.
    pub acks: EventSliReport,
    /// Vehicles by state and reason.
    pub census: Census,
    /// Commands awaiting an ack.
    pub unacked_commands: usize,
}
