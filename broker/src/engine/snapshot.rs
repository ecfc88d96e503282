//! The engine's state in one value, taken per request: what the ops API, the SLO page and
//! the metrics exposition read. The census and the breakdown need a pass over the fleet:
//! it is made at most once a second (and again after any transition), whoever asks.

use std::sync::Arc;

use fleet_rules::{Breakdown, Census, EventSliReport, Fleet, SliReport, UnixMs};

/// What the ops API and the metrics exporter read in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSnapshot {
    /// The CMC SLI (fleet in service).
    pub sli: SliReport,
    /// The command-ack SLI.
    pub acks: EventSliReport,
    /// Vehicles by state and reason.
    pub census: Census,
    /// Vehicles by fault code and model.
    pub breakdown: Arc<Breakdown>,
    /// Commands awaiting an ack.
    pub unacked_commands: usize,
    /// Each journey's SLI, counters, latency and precision figures, in config order.
    pub journeys: Vec<fleet_rules::JourneyStatus>,
}

/// The last pass over the fleet.
#[derive(Debug, Default)]
pub(super) struct CensusCache {
    taken: Option<(UnixMs, Census, Arc<Breakdown>)>,
}

/// How old a census may be when nothing changed.
const CENSUS_MAX_AGE_MS: UnixMs = 1000;

impl CensusCache {
    /// The census and breakdown, counted afresh when older than a second or invalidated.
    pub(super) fn get(&mut self, fleet: &Fleet, now: UnixMs) -> (Census, Arc<Breakdown>) {
        match &self.taken {
            Some((at, census, breakdown)) if now < at + CENSUS_MAX_AGE_MS => {
                (*census, breakdown.clone())
            }
            _ => {
                let (census, breakdown) = fleet.census_and_breakdown();
                let breakdown = Arc::new(breakdown);
                self.taken = Some((now, census, breakdown.clone()));
                (census, breakdown)
            }
        }
    }

    /// A vehicle changed state or joined: the next reader counts again.
    pub(super) fn invalidate(&mut self) {
        self.taken = None;
    }
}
