//! The mass-loss guard: when much of the fleet goes silent at once, that is a network or
//! platform incident, not thousands of broken scooters, and must not evict the whole fleet.
//!
//! Policy. Heartbeat-deadline expiries are counted in a sliding `window`. The threshold is
//! T = max(min_vehicles, ceil(fraction × active fleet)), the onset O = max(1, T/10).
//! - The first O expiries within a window are taken out as usual.
//! - Past O, and only if the fleet is big enough to reach T, further expiring vehicles are
//!   *pending*: silent, bad in the SLI, no transition yet. A pending vehicle whose expiry
//!   leaves the window without an incident is then taken out (`heartbeat_lost` since its
//!   deadline). So at most O vehicles are evicted before an incident is recognised.
//! - At T expiries within the window the incident starts: one `MassLossStarted`. With
//!   `hold`, pending and later expiring vehicles are *held* (no transition, no command,
//!   still bad in the SLI); with `service_out` they are taken out as usual and only the
//!   notification is grouped. Losses during an incident do not count towards flapping.
//! - Every vehicle of the wave (the first O included) counts as silent until it sends any
//!   uplink. The incident ends when none is silent any more, or when fewer than T are and
//!   none came back for a full `window`: the wave is over and the rest are really gone.
//!   Then one `MassLossEnded`, and the still-silent held vehicles are taken out as usual.
//!   Ending only once returns stop means vehicles coming back one by one after an outage
//!   are never evicted just because the count dipped under T halfway.

use std::collections::VecDeque;

use crate::config::millis;
use crate::{MassLossAction, MassLossConfig, UnixMs};

/// Capacity of the expiry queue kept once a wave has passed.
const WAVE_KEPT: usize = 1024;

/// What to do with one vehicle whose deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Take it out as usual.
    Evict,
    /// Keep it silent without a transition: a wave may be building.
    Pend,
    /// This expiry starts an incident; then handle the vehicle as `Join`.
    Start {
        /// Expiries within the window.
        silent: usize,
        /// T.
        threshold: usize,
    },
    /// An incident is on: hold it or take it out, as configured.
    Join,
}

/// An ongoing incident.
pub(crate) struct Incident {
    /// T when it started.
    pub(crate) threshold: usize,
    /// Wave vehicles still silent.
    pub(crate) silent: usize,
    /// Wave vehicles that came back.
    pub(crate) recovered: usize,
    /// The last time a wave vehicle came back (or the start).
    last_change: UnixMs,
    /// Slots of wave vehicles (a slot may repeat; the vehicle's flag decides).
    pub(crate) members: Vec<u32>,
}

/// The guard's state: recent expiries and the incident, if any.
pub(crate) struct MassLossGuard {
    fraction: f64,
    min_vehicles: usize,
    window_ms: u64,
    holding: bool,
    /// `(deadline, slot)` of expiries within the window, oldest first.
    wave: VecDeque<(UnixMs, u32)>,
    incident: Option<Incident>,
}

impl MassLossGuard {
    pub(crate) fn new(config: &MassLossConfig) -> MassLossGuard {
        MassLossGuard {
            fraction: config.fraction,
            min_vehicles: config.min_vehicles,
            window_ms: millis(config.window),
            holding: config.action == MassLossAction::Hold,
            wave: VecDeque::new(),
            incident: None,
        }
    }

    /// T for an active fleet of `fleet` vehicles.
    pub(crate) fn threshold(&self, fleet: usize) -> usize {
        let by_fraction = (self.fraction * fleet as f64).ceil();
        let by_fraction = if by_fraction.is_finite() && by_fraction > 0.0 {
            by_fraction as usize
        } else {
            0
        };
        self.min_vehicles.max(by_fraction).max(1)
    }

    /// O for threshold `t`.
    pub(crate) fn onset(t: usize) -> usize {
        (t / 10).max(1)
    }

    pub(crate) fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub(crate) fn holding(&self) -> bool {
        self.holding
    }

    pub(crate) fn in_incident(&self) -> bool {
        self.incident.is_some()
    }

    /// Decides for a vehicle whose deadline `at` passed. The caller has already released
    /// the expiries that left the window by `at`.
    pub(crate) fn on_expiry(&mut self, at: UnixMs, slot: u32, fleet: usize) -> Verdict {
        let before = self.wave.len();
        self.wave.push_back((at, slot));
        if self.incident.is_some() {
            return Verdict::Join;
        }
        let threshold = self.threshold(fleet);
        if before + 1 >= threshold {
            Verdict::Start {
                silent: before + 1,
                threshold,
            }
        } else if threshold <= fleet && before >= Self::onset(threshold) {
            Verdict::Pend
        } else {
            Verdict::Evict
        }
    }

    /// The oldest expiry, if it left the window by `now`.
    pub(crate) fn pop_expired(&mut self, now: UnixMs) -> Option<(UnixMs, u32)> {
        let Some(&(at, slot)) = self.wave.front() else {
            // A past wave's memory is given back once it has left the window.
            if self.wave.capacity() > WAVE_KEPT {
                self.wave.shrink_to(WAVE_KEPT);
            }
            return None;
        };
        if at.saturating_add(self.window_ms) > now {
            return None;
        }
        self.wave.pop_front();
        Some((at, slot))
    }

    /// The expiries within the window, oldest first.
    pub(crate) fn wave(&self) -> impl Iterator<Item = (UnixMs, u32)> + '_ {
        self.wave.iter().copied()
    }

    pub(crate) fn start(&mut self, threshold: usize, now: UnixMs) {
        self.incident = Some(Incident {
            threshold,
            silent: 0,
            recovered: 0,
            last_change: now,
            members: Vec::new(),
        });
    }

    /// A vehicle joins the incident as silent.
    pub(crate) fn member_joined(&mut self, slot: u32) {
        if let Some(i) = &mut self.incident {
            i.silent += 1;
            i.members.push(slot);
        }
    }

    /// A silent wave vehicle sent an uplink.
    pub(crate) fn member_recovered(&mut self, now: UnixMs) {
        if let Some(i) = &mut self.incident {
            i.silent = i.silent.saturating_sub(1);
            i.recovered += 1;
            i.last_change = now;
        }
    }

    /// A silent wave vehicle was decommissioned.
    pub(crate) fn member_left(&mut self) {
        if let Some(i) = &mut self.incident {
            i.silent = i.silent.saturating_sub(1);
        }
    }

    /// Whether the incident is over at `now`. The settle rule (fewer than T silent and no
    /// return for a window) is only applied when `settle` (from the tick).
    pub(crate) fn should_end(&self, now: UnixMs, settle: bool) -> bool {
        self.incident.as_ref().is_some_and(|i| {
            i.silent == 0
                || (settle
                    && i.silent < i.threshold
                    && now >= i.last_change.saturating_add(self.window_ms))
        })
    }

    /// Ends the incident; the expiries it counted are forgotten with it.
    pub(crate) fn end(&mut self) -> Option<Incident> {
        self.wave.clear();
        self.wave.shrink_to(WAVE_KEPT);
        self.incident.take()
    }

    /// When the guard next has work: an expiry leaving the window, or the settle rule.
    pub(crate) fn next_check(&self) -> Option<UnixMs> {
        match &self.incident {
            Some(i) if i.silent < i.threshold => Some(i.last_change.saturating_add(self.window_ms)),
            Some(_) => None,
            None => self
                .wave
                .front()
                .map(|&(at, _)| at.saturating_add(self.window_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn guard(min_vehicles: usize) -> MassLossGuard {
        MassLossGuard::new(&MassLossConfig {
            fraction: 0.2,
            min_vehicles,
            window: Duration::from_secs(120),
            action: MassLossAction::Hold,
        })
    }

    #[test]
    fn the_threshold_is_the_larger_of_the_minimum_and_the_fraction() {
        let g = guard(50);
        assert_eq!(g.threshold(100), 50);
        assert_eq!(g.threshold(1000), 200);
        assert_eq!(g.threshold(1001), 201);
        assert_eq!(MassLossGuard::onset(200), 20);
        assert_eq!(MassLossGuard::onset(5), 1);
    }

    #[test]
    fn past_the_onset_expiries_pend_and_at_the_threshold_an_incident_starts() {
        let mut g = guard(50);
        let verdicts: Vec<Verdict> = (0..200).map(|i| g.on_expiry(1_000, i, 1000)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Evict));
        assert!(verdicts[20..199].iter().all(|v| *v == Verdict::Pend));
        assert_eq!(
            verdicts[199],
            Verdict::Start {
                silent: 200,
                threshold: 200
            }
        );
    }

    #[test]
    fn a_fleet_too_small_to_reach_the_threshold_never_pends() {
        let mut g = guard(50);
        for i in 0..10 {
            assert_eq!(g.on_expiry(1_000, i, 10), Verdict::Evict);
        }
    }

    #[test]
    fn expiries_leave_the_window_after_it_passes() {
        let mut g = guard(50);
        g.on_expiry(1_000, 1, 1000);
        assert_eq!(g.next_check(), Some(121_000));
        assert_eq!(g.pop_expired(120_999), None);
        assert_eq!(g.pop_expired(121_000), Some((1_000, 1)));
    }

    #[test]
    fn an_incident_ends_at_once_when_nobody_is_silent_and_otherwise_after_returns_stop() {
        let mut g = guard(50);
        g.start(3, 0);
        for slot in 0..3 {
            g.member_joined(slot);
        }
        g.member_recovered(10_000);
        assert!(!g.should_end(10_000, true));
        assert!(!g.should_end(129_999, true));
        assert!(g.should_end(130_000, true));
        assert!(!g.should_end(130_000, false));
        g.member_recovered(20_000);
        g.member_left();
        assert!(g.should_end(20_000, false));
        assert_eq!(g.end().map(|i| i.recovered), Some(2));
    }
}
