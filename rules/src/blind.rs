//! Blindness is not silence. When the broker loses its view of the fleet (in attach mode,
//! its own link to the upstream broker), no heartbeat can reach it, so no vehicle may be
//! taken out for a silence it could not observe:
//! - while blind, deadlines do not expire, pending vehicles are not released and a
//!   mass-loss incident does not end; the SLO alerts are still evaluated each minute;
//! - the blind time counts as broker downtime in the SLI (valid but not good when
//!   downtime counts as bad, else excluded), as the time a stopped broker was down does;
//! - once the view is back, every deadline gets the restart grace counted from then, and
//!   the vehicles that were pending return to talking (their silence was not seen to end
//!   in a loss);
//! - a blind stretch longer than the alert delay is notified once, and its end too.

use std::time::Duration;

use crate::config::millis;
use crate::UnixMs;

/// How a blind stretch is accounted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blindness {
    /// Blind time is valid but not good vehicle-time (else it is left out of the SLI).
    pub downtime_is_bad: bool,
    /// A stretch longer than this is notified (`BlindStarted`, then `BlindEnded`).
    pub alert_after: Duration,
}

/// The current blind stretch.
pub(crate) struct Blind {
    pub(crate) since: UnixMs,
    alert_at: UnixMs,
    pub(crate) alerted: bool,
}

impl Blind {
    /// A stretch from `since`, notified after `how.alert_after`.
    pub(crate) fn new(since: UnixMs, how: &Blindness) -> Blind {
        Blind {
            since,
            alert_at: since.saturating_add(millis(how.alert_after)),
            alerted: false,
        }
    }

    /// Whether the stretch is to be notified at `now` (once).
    pub(crate) fn alert(&mut self, now: UnixMs) -> bool {
        if self.alerted || now < self.alert_at {
            return false;
        }
        self.alerted = true;
        true
    }

    /// When the stretch is to be notified, unless it was.
    pub(crate) fn alert_due(&self) -> Option<UnixMs> {
        (!self.alerted).then_some(self.alert_at)
    }
}
