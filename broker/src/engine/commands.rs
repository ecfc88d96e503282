//! Commands awaiting their ack: the ack latency, and the second CMC SLI, the share of
//! commands acknowledged ok within `ack_within` (30 s by default) with its own target.
//!
//! A command to a silent vehicle (`heartbeat_lost` among its reasons) cannot arrive until
//! the vehicle talks again, so it is tracked for latency but not counted in the SLI:
//! otherwise every heartbeat loss would also burn the ack budget.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use fleet_rules::{EventSli, EventSliReport, UnixMs};

use super::metrics::{AckOutcome, EngineMetrics};
use crate::metrics::inc;

/// The command-ack SLI's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSlo {
    /// An ack later than this after the command is bad.
    pub ack_within: Duration,
    /// Share of commands to acknowledge in time.
    pub target: f64,
    /// The rolling SLO window.
    pub window: Duration,
}

impl Default for CommandSlo {
    fn default() -> Self {
        CommandSlo {
            ack_within: Duration::from_secs(30),
            target: 0.99,
            window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What an ack matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMatch {
    /// A pending command of this vehicle; `outcome` is how it counted in the SLI, if it
    /// still had to be judged.
    Known {
        /// Issue to ack.
        latency_ms: u64,
        /// The SLI verdict given now.
        outcome: Option<AckOutcome>,
    },
    /// A pending command of another vehicle: left pending for its owner.
    OtherVehicle,
    /// No pending command has this id (forgotten, already acked, or made up).
    Unknown,
}

#[derive(Debug)]
struct Pending {
    vehicle: String,
    issued_at: UnixMs,
    /// Counted in the SLI and not judged yet.
    to_judge: bool,
}

/// The pending commands and the ack SLI.
pub struct CommandTracker {
    pending: HashMap<String, Pending>,
    /// Ids in issue order, for the memory bound (acked ones are skipped when popped).
    order: VecDeque<String>,
    /// Counted ids in issue order with the time they are judged unacked.
    due: VecDeque<(String, UnixMs)>,
    capacity: usize,
    ack_within_ms: u64,
    sli: EventSli,
}

impl CommandTracker {
    /// Remembers up to `capacity` commands.
    pub fn new(capacity: usize, slo: &CommandSlo, now: UnixMs) -> CommandTracker {
        CommandTracker {
            pending: HashMap::new(),
            order: VecDeque::new(),
            due: VecDeque::new(),
            capacity: capacity.max(1),
            ack_within_ms: u64::try_from(slo.ack_within.as_millis()).unwrap_or(u64::MAX),
            sli: EventSli::new(slo.target, slo.window, now),
        }
    }

    /// A command was published. `counted`: it goes to a vehicle believed reachable.
    pub fn issued(
        &mut self,
        id: &str,
        vehicle: &str,
        issued_at: UnixMs,
        counted: bool,
        now: UnixMs,
        metrics: &EngineMetrics,
    ) {
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                if let Some(p) = self.pending.remove(&old) {
                    // Forgotten before its verdict: it was not acknowledged in time.
                    if p.to_judge {
                        self.judge(false, AckOutcome::Unacked, now, metrics);
                    }
                }
            }
        }
        if !counted {
            inc(&metrics.commands_to_silent);
        } else {
            if self.due.len() >= self.capacity {
                if let Some((old, _)) = self.due.pop_front() {
                    if self.take_verdict(&old) {
                        self.judge(false, AckOutcome::Unacked, now, metrics);
                    }
                }
            }
            self.due
                .push_back((id.to_owned(), issued_at.saturating_add(self.ack_within_ms)));
        }
        self.pending.insert(
            id.to_owned(),
            Pending {
                vehicle: vehicle.to_owned(),
                issued_at,
                to_judge: counted,
            },
        );
        self.order.push_back(id.to_owned());
    }

    /// `vehicle` acknowledged command `id` at `now`.
    pub fn acked(
        &mut self,
        vehicle: &str,
        id: &str,
        ok: bool,
        now: UnixMs,
        metrics: &EngineMetrics,
    ) -> AckMatch {
        match self.pending.get(id) {
            None => return AckMatch::Unknown,
            Some(p) if p.vehicle != vehicle => return AckMatch::OtherVehicle,
            Some(_) => {}
        }
        let Some(p) = self.pending.remove(id) else {
            return AckMatch::Unknown;
        };
        let latency_ms = now.saturating_sub(p.issued_at);
        metrics.command_ack_latency.observe_ms(latency_ms);
        let outcome = p.to_judge.then(|| {
            let outcome = if !ok {
                AckOutcome::Failed
            } else if latency_ms <= self.ack_within_ms {
                AckOutcome::InTime
            } else {
                AckOutcome::Late
            };
            self.judge(outcome == AckOutcome::InTime, outcome, now, metrics);
            outcome
        });
        AckMatch::Known {
            latency_ms,
            outcome,
        }
    }

    /// Judges every counted command whose time is up and that has no ack: bad.
    pub fn judge_overdue(&mut self, now: UnixMs, metrics: &EngineMetrics) {
        while let Some((_, due_at)) = self.due.front() {
            if *due_at > now {
                break;
            }
            let Some((id, due_at)) = self.due.pop_front() else {
                break;
            };
            if self.take_verdict(&id) {
                self.judge(false, AckOutcome::Unacked, due_at, metrics);
            }
        }
    }

    /// Whether the pending command `id` still had to be judged (it no longer has to).
    fn take_verdict(&mut self, id: &str) -> bool {
        self.pending
            .get_mut(id)
            .is_some_and(|p| std::mem::replace(&mut p.to_judge, false))
    }

    fn judge(&mut self, good: bool, outcome: AckOutcome, at: UnixMs, metrics: &EngineMetrics) {
        self.sli.record(good, at);
        metrics.ack_outcome(outcome);
    }

    /// Commands without an ack (judged or not) still remembered.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// The ack SLI at `now`.
    pub fn report(&mut self, now: UnixMs) -> EventSliReport {
        self.sli.report(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMs = 1_700_000_000_000;

    fn tracker(capacity: usize) -> CommandTracker {
        CommandTracker::new(capacity, &CommandSlo::default(), T0)
    }

    #[test]
    fn an_ack_within_thirty_seconds_is_good_and_its_latency_is_observed() {
        let m = EngineMetrics::default();
        let mut t = tracker(16);
        t.issued("c1", "v1", T0, true, T0, &m);
        assert_eq!(t.unacked(), 1);
        assert_eq!(
            t.acked("v1", "c1", true, T0 + 1_500, &m),
            AckMatch::Known {
                latency_ms: 1_500,
                outcome: Some(AckOutcome::InTime)
            }
        );
        assert_eq!(t.unacked(), 0);
        let r = t.report(T0 + 2_000);
        assert_eq!((r.good, r.valid), (1, 1));
        assert_eq!(m.command_ack_latency.snapshot().count, 1);
        assert_eq!(m.ack_outcomes(AckOutcome::InTime), 1);
    }

    #[test]
    fn no_ack_by_the_deadline_is_bad_and_a_late_ack_still_measures_latency() {
        let m = EngineMetrics::default();
        let mut t = tracker(16);
        t.issued("c1", "v1", T0, true, T0, &m);
        t.judge_overdue(T0 + 29_999, &m);
        assert_eq!(t.report(T0 + 29_999).valid, 0);
        t.judge_overdue(T0 + 30_000, &m);
        let r = t.report(T0 + 30_000);
        assert_eq!((r.good, r.valid), (0, 1));
        assert_eq!(m.ack_outcomes(AckOutcome::Unacked), 1);
        // The ack 45 s later is measured, not judged again.
        assert_eq!(
            t.acked("v1", "c1", true, T0 + 45_000, &m),
            AckMatch::Known {
                latency_ms: 45_000,
                outcome: None
            }
        );
        assert_eq!(t.report(T0 + 45_000).valid, 1);
    }

    #[test]
    fn a_failed_ack_is_bad_and_an_ack_judged_late_is_bad() {
        let m = EngineMetrics::default();
        let mut t = tracker(16);
        t.issued("c1", "v1", T0, true, T0, &m);
        t.issued("c2", "v1", T0, true, T0, &m);
        t.acked("v1", "c1", false, T0 + 100, &m);
        // Not judged yet at 31 s (the engine had not settled): late.
        t.acked("v1", "c2", true, T0 + 31_000, &m);
        let r = t.report(T0 + 31_000);
        assert_eq!((r.good, r.valid), (0, 2));
        assert_eq!(m.ack_outcomes(AckOutcome::Failed), 1);
        assert_eq!(m.ack_outcomes(AckOutcome::Late), 1);
    }

    #[test]
    fn commands_to_silent_vehicles_are_not_counted() {
        let m = EngineMetrics::default();
        let mut t = tracker(16);
        t.issued("c1", "v1", T0, false, T0, &m);
        t.judge_overdue(T0 + 60_000, &m);
        assert_eq!(t.report(T0 + 60_000).valid, 0);
        assert_eq!(crate::metrics::get(&m.commands_to_silent), 1);
        assert_eq!(t.unacked(), 1);
    }

    #[test]
    fn another_vehicles_ack_or_a_made_up_id_changes_nothing() {
        let m = EngineMetrics::default();
        let mut t = tracker(16);
        t.issued("c1", "v1", T0, true, T0, &m);
        assert_eq!(t.acked("v2", "c1", true, T0, &m), AckMatch::OtherVehicle);
        assert_eq!(t.acked("v1", "nope", true, T0, &m), AckMatch::Unknown);
        assert_eq!(t.unacked(), 1);
    }

    #[test]
    fn past_capacity_the_oldest_command_is_forgotten_and_counted_unacked() {
        let m = EngineMetrics::default();
        let mut t = tracker(2);
        t.issued("c1", "v1", T0, true, T0, &m);
        t.issued("c2", "v1", T0, true, T0, &m);
        t.issued("c3", "v1", T0, true, T0 + 10, &m);
        assert_eq!(t.unacked(), 2);
        assert_eq!(t.acked("v1", "c1", true, T0 + 20, &m), AckMatch::Unknown);
        assert_eq!(m.ack_outcomes(AckOutcome::Unacked), 1);
    }
}
