//! Rider journeys (an unlock, a lock): a backend's request to a vehicle and the vehicle's
//! answer, matched by a key the caller takes from the messages (a JSON field such as
//! `request_id`, or MQTT 5 correlation data) or, without one, the vehicle's next answer.
//! Each request ends once: answered with success or failure within the timeout, or timed
//! out. An answer after its request timed out is late; one that matches no request is
//! unmatched; both are counted and end nothing. Pending requests are bounded per vehicle
//! and in total (a request past a bound is refused and counted). The ends feed an event SLI
//! (share of requests answered with success in time, with the CMC SLO's error budget and
//! burn rates) and a latency histogram. Pure: every call takes `now`.
//!
//! The fleet keeps one per configured journey, with the journey rule's strikes, its alerts
//! and its precision figures: it tells each request how the broker showed the vehicle when
//! it was made ([`Standing`]), which the ends carry back for those figures.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::burn::Alerts;
use crate::config::millis;
use crate::ledger::MINUTE;
use crate::timeouts::ModelId;
use crate::{
    AlertSeverity, EventSli, EventSliReport, JourneyConfig, JourneyRule, ReasonKind, UnixMs,
};

/// Upper bounds (seconds) of the answer latency histogram's buckets.
pub const LATENCY_BOUNDS_S: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0];

/// How the broker showed a vehicle when a request was made to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// In service.
    InService,
    /// Out of service, with its first reason's kind.
    OutOfService(ReasonKind),
    /// Not in the fleet (never heard, or decommissioned).
    Unknown,
}

impl Standing {
    /// `in_service`, `out_of_service` or `unknown`.
    pub fn state(self) -> &'static str {
        match self {
            Standing::InService => "in_service",
            Standing::OutOfService(_) => "out_of_service",
            Standing::Unknown => "unknown",
        }
    }

    /// The reason kind when out of service, else "".
    pub fn reason(self) -> &'static str {
        match self {
            Standing::OutOfService(kind) => kind.as_str(),
            _ => "",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JourneyEnd {
    /// Answered with success within the timeout.
    Succeeded {
        /// The vehicle.
        vehicle: String,
        /// From request to answer.
        latency_ms: u64,
        /// How the broker showed it at the request.
        standing: Standing,
    },
    /// Answered with failure within the timeout.
    Failed {
        /// The vehicle.
        vehicle: String,
        /// From request to answer.
        latency_ms: u64,
        /// How the broker showed it at the request.
        standing: Standing,
    },
    /// Not answered within the timeout.
    TimedOut {
        /// The vehicle.
        vehicle: String,
        /// How the broker showed it at the request.
        standing: Standing,
    },
}

impl JourneyEnd {
    /// The vehicle.
    pub fn vehicle(&self) -> &str {
        match self {
            JourneyEnd::Succeeded { vehicle, .. }
            | JourneyEnd::Failed { vehicle, .. }
            | JourneyEnd::TimedOut { vehicle, .. } => vehicle,
        }
    }

    /// How the broker showed the vehicle at the request.
    pub fn standing(&self) -> Standing {
        match self {
            JourneyEnd::Succeeded { standing, .. }
            | JourneyEnd::Failed { standing, .. }
            | JourneyEnd::TimedOut { standing, .. } => *standing,
        }
    }

    /// `succeeded`, `failed` or `timed_out`.
    pub fn outcome(&self) -> &'static str {
        match self {
            JourneyEnd::Succeeded { .. } => "succeeded",
            JourneyEnd::Failed { .. } => "failed",
            JourneyEnd::TimedOut { .. } => "timed_out",
        }
    }
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// It ended its request.
    Ended(JourneyEnd),
    /// Its request had already timed out.
    Late,
    /// It matches no request of this vehicle.
    Unmatched,
}

/// Why a request was not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The vehicle has `max_pending_per_vehicle` requests pending.
    #[error("the vehicle has too many requests pending")]
    VehicleFull,
    /// `max_pending` requests are pending.
    #[error("too many requests pending")]
    Full,
    /// No journey has this index.
    #[error("no such journey")]
    NoJourney,
}

/// Counters since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JourneyCounts {
    /// Requests tracked.
    pub requested: u64,
    /// Requests refused for a bound.
    pub refused: u64,
    /// Ended with success in time.
    pub succeeded: u64,
    /// Ended with failure in time.
    pub failed: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Answers after their request timed out.
    pub late: u64,
    /// Answers that matched no request.
    pub unmatched: u64,
    /// Requests dropped unjudged: due while the broker could not see the fleet.
    pub abandoned: u64,
}

/// The journey's figures at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyReport {
    /// The SLI (good: answered with success in time; valid: every request ended).
    pub sli: EventSliReport,
    /// The counters.
    pub counts: JourneyCounts,
    /// Requests pending now.
    pub pending: usize,
    /// Answers in time per latency bucket (cumulative, as Prometheus has them), with the
    /// upper bounds of [`LATENCY_BOUNDS_S`] and then all answers.
    pub latency: Vec<u64>,
    /// Sum of the latencies counted, in ms.
    pub latency_sum_ms: u64,
}

/// A request that timed out: its key and when.
type Expired = (Option<Box<str>>, UnixMs);

struct Pending {
    id: u64,
    key: Option<Box<str>>,
    at: UnixMs,
    standing: Standing,
}

/// One journey's requests in flight and its figures.
pub struct Journey {
    timeout_ms: u64,
    max_per_vehicle: usize,
    max_pending: usize,
    /// Per vehicle, in request order.
    pending: HashMap<Box<str>, VecDeque<Pending>>,
    total: usize,
    /// Every request's deadline, in order (one timeout and a clock that never goes back
    /// keep it sorted); answered ones are skipped when they come up.
    deadlines: VecDeque<(UnixMs, u64, Box<str>)>,
    /// Per vehicle, requests timed out within the last timeout: their answers are late.
    expired: HashMap<Box<str>, VecDeque<Expired>>,
    /// Every entry of `expired` by when it timed out, to forget them in order.
    expired_order: VecDeque<(UnixMs, Box<str>)>,
    next_id: u64,
    clock: UnixMs,
    sli: EventSli,
    counts: JourneyCounts,
    latency: [u64; LATENCY_BOUNDS_S.len() + 1],
    latency_sum_ms: u64,
}

impl Journey {
    /// A journey with nothing pending.
    pub fn new(config: &JourneyConfig, now: UnixMs) -> Journey {
        Journey {
            timeout_ms: millis(config.timeout),
            max_per_vehicle: config.max_pending_per_vehicle.max(1),
            max_pending: config.max_pending.max(1),
            pending: HashMap::new(),
            total: 0,
            deadlines: VecDeque::new(),
            expired: HashMap::new(),
            expired_order: VecDeque::new(),
            next_id: 0,
            clock: now,
            sli: EventSli::new(config.target, config.window, now),
            counts: JourneyCounts::default(),
            latency: [0; LATENCY_BOUNDS_S.len() + 1],
            latency_sum_ms: 0,
        }
    }

    fn observe(&mut self, now: UnixMs) -> UnixMs {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// A request to `vehicle` at `now` (with the key its answer will carry, if any), which
    /// the broker showed as `standing`.
    pub fn request(
        &mut self,
        vehicle: &str,
        key: Option<&str>,
        standing: Standing,
        now: UnixMs,
    ) -> Result<(), Refused> {
        let now = self.observe(now);
        let queued = self.pending.get(vehicle).map_or(0, VecDeque::len);
        let refused = if queued >= self.max_per_vehicle {
            Some(Refused::VehicleFull)
        } else if self.total >= self.max_pending {
            Some(Refused::Full)
        } else {
            None
        };
        if let Some(why) = refused {
            self.counts.refused += 1;
            return Err(why);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending
            .entry(vehicle.into())
            .or_default()
            .push_back(Pending {
                id,
                key: key.map(Into::into),
                at: now,
                standing,
            });
        self.deadlines
            .push_back((now.saturating_add(self.timeout_ms), id, vehicle.into()));
        self.total += 1;
        self.counts.requested += 1;
        Ok(())
    }

    /// `vehicle`'s answer at `now`: with `key`, to the request with that key; without, to
    /// its oldest pending request. Requests overdue at `now` time out first.
    pub fn answer(
        &mut self,
        vehicle: &str,
        key: Option<&str>,
        success: bool,
        now: UnixMs,
    ) -> (Answered, Vec<JourneyEnd>) {
        let now = self.observe(now);
        let timed_out = self.tick(now);
        let found = self.pending.get_mut(vehicle).and_then(|queue| {
            let i = match key {
                Some(k) => queue.iter().position(|p| p.key.as_deref() == Some(k))?,
                None => 0,
            };
            queue.remove(i)
        });
        let Some(p) = found else {
            let answered = if self.take_expired(vehicle, key) {
                self.counts.late += 1;
                Answered::Late
            } else {
                self.counts.unmatched += 1;
                Answered::Unmatched
            };
            return (answered, timed_out);
        };
        self.forget_if_empty(vehicle);
        self.total -= 1;
        let latency_ms = now - p.at;
        self.latency_sum_ms += latency_ms;
        let bucket = LATENCY_BOUNDS_S
            .iter()
            .position(|&b| latency_ms as f64 <= b * 1000.0)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        self.latency[bucket] += 1;
        self.sli.record(success, now);
        let vehicle = vehicle.to_owned();
        let standing = p.standing;
        let end = if success {
            self.counts.succeeded += 1;
            JourneyEnd::Succeeded {
                vehicle,
                latency_ms,
                standing,
            }
        } else {
            self.counts.failed += 1;
            JourneyEnd::Failed {
                vehicle,
                latency_ms,
                standing,
            }
        };
        (Answered::Ended(end), timed_out)
    }

    fn forget_if_empty(&mut self, vehicle: &str) {
        if self.pending.get(vehicle).is_some_and(VecDeque::is_empty) {
            self.pending.remove(vehicle);
        }
    }

    /// Takes a request of `vehicle` that timed out recently and matches `key`.
    fn take_expired(&mut self, vehicle: &str, key: Option<&str>) -> bool {
        let Some(queue) = self.expired.get_mut(vehicle) else {
            return false;
        };
        let i = match key {
            Some(k) => queue.iter().position(|(kk, _)| kk.as_deref() == Some(k)),
            None => (!queue.is_empty()).then_some(0),
        };
        let taken = i.and_then(|i| queue.remove(i)).is_some();
        if queue.is_empty() {
            self.expired.remove(vehicle);
        }
        taken
    }

    /// Times out every request not answered within the timeout by `now`.
    pub fn tick(&mut self, now: UnixMs) -> Vec<JourneyEnd> {
        let now = self.observe(now);
        let mut ended = Vec::new();
        while let Some((vehicle, p, due)) = self.pop_overdue(now) {
            self.counts.timed_out += 1;
            self.sli.record(false, due);
            let expired = self.expired.entry(vehicle.clone()).or_default();
            if expired.len() >= self.max_per_vehicle {
                expired.pop_front();
            }
            expired.push_back((p.key, due));
            self.expired_order.push_back((due, vehicle.clone()));
            ended.push(JourneyEnd::TimedOut {
                vehicle: vehicle.into(),
                standing: p.standing,
            });
        }
        // A late answer is one within a timeout after the request timed out.
        let keep_from = now.saturating_sub(self.timeout_ms);
        while self
            .expired_order
            .front()
            .is_some_and(|&(at, _)| at < keep_from)
        {
            let Some((at, vehicle)) = self.expired_order.pop_front() else {
                break;
            };
            if let Some(queue) = self.expired.get_mut(&vehicle) {
                while queue.front().is_some_and(|&(_, t)| t <= at) {
                    queue.pop_front();
                }
                if queue.is_empty() {
                    self.expired.remove(&vehicle);
                }
            }
        }
        ended
    }

    /// Drops every request overdue at `now` without judging it (the broker could not see
    /// the answers); counted as abandoned.
    pub fn abandon_overdue(&mut self, now: UnixMs) {
        let now = self.observe(now);
        while self.pop_overdue(now).is_some() {
            self.counts.abandoned += 1;
        }
    }

    /// The next request past its deadline at `now`, taken out of the pending ones.
    fn pop_overdue(&mut self, now: UnixMs) -> Option<(Box<str>, Pending, UnixMs)> {
        while let Some(&(due, id, _)) = self.deadlines.front() {
            if due >= now {
                return None;
            }
            let (_, _, vehicle) = self.deadlines.pop_front()?;
            let Some(queue) = self.pending.get_mut(&vehicle) else {
                continue; // answered
            };
            let Some(i) = queue.iter().position(|p| p.id == id) else {
                continue;
            };
            let Some(p) = queue.remove(i) else {
                continue;
            };
            self.forget_if_empty(&vehicle);
            self.total -= 1;
            return Some((vehicle, p, due));
        }
        None
    }

    /// When the next request times out, if one is pending.
    pub fn next_deadline(&self) -> Option<UnixMs> {
        self.deadlines
            .front()
            .map(|&(due, _, _)| due.saturating_add(1))
    }

    /// The SLI's minutes from unix minute `from` up to `now` (see [`EventSli::minutes`]).
    pub fn sli_minutes(&mut self, from: u64, now: UnixMs) -> Vec<(u64, u64, u64)> {
        let now = self.observe(now);
        self.sli.minutes(from, now)
    }

    /// Puts a stored SLI minute back (see [`EventSli::import`]).
    pub fn import_minute(&mut self, minute: u64, good: u64, valid: u64) {
        self.sli.import(minute, good, valid);
    }

    /// Requests pending now.
    pub fn pending(&self) -> usize {
        self.total
    }

    /// The figures at `now`.
    pub fn report(&mut self, now: UnixMs) -> JourneyReport {
        let now = self.observe(now);
        let mut running = 0;
        let latency = self
            .latency
            .iter()
            .map(|n| {
                running += n;
                running
            })
            .collect();
        JourneyReport {
            sli: self.sli.report(now),
            counts: self.counts.clone(),
            pending: self.total,
            latency,
            latency_sum_ms: self.latency_sum_ms,
        }
    }
}

pub(crate) const HOUR: u64 = 60 * MINUTE;
/// Hours summed for the precision figures' "last day".
pub(crate) const DAY_HOURS: u64 = 24;

/// Counts of ended requests by outcome, standing at the request and model.
pub(crate) type Tally = HashMap<(&'static str, Standing, ModelId), u64>;

/// One journey in the fleet.
pub(crate) struct Tracked {
    pub(crate) config: JourneyConfig,
    pub(crate) journey: Journey,
    /// Per vehicle, the failures within the rule's window, oldest first.
    pub(crate) strikes: HashMap<Box<str>, VecDeque<UnixMs>>,
    pub(crate) alerts: Alerts,
    pub(crate) total: Tally,
    /// The last day's counts per hour, oldest first.
    pub(crate) hours: VecDeque<(u64, Tally)>,
}

/// One line of a journey's precision figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrecisionRow {
    /// `succeeded`, `failed` or `timed_out`.
    pub outcome: &'static str,
    /// How the broker showed the vehicle at the request: `in_service`, `out_of_service`
    /// or `unknown` (not in the fleet).
    pub state: &'static str,
    /// Its first out-of-service reason then (`heartbeat_lost`, ...), or "".
    pub reason: &'static str,
    /// Its model, if known.
    pub model: Option<String>,
    /// Since the start.
    pub total: u64,
    /// Within the last 24 hours (whole hours).
    pub last_day: u64,
}

/// One minute of a journey's SLI, as an owner stores it across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyMinute {
    /// The journey's name.
    pub journey: String,
    /// Unix minute.
    pub minute: u64,
    /// Requests ended with success in time that minute.
    pub good: u64,
    /// Requests ended that minute.
    pub valid: u64,
}

/// A journey's figures at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyStatus {
    /// The journey.
    pub name: String,
    /// The tracker's figures: SLI, counters, latency.
    #[serde(flatten)]
    pub report: JourneyReport,
    /// Its burn-rate alerts firing now.
    pub alerts_firing: Vec<AlertSeverity>,
    /// Ended requests by outcome and by how the broker showed the vehicle, most first.
    pub precision: Vec<PrecisionRow>,
}

impl Tracked {
    pub(crate) fn new(config: &JourneyConfig, now: UnixMs) -> Tracked {
        Tracked {
            journey: Journey::new(config, now),
            config: config.clone(),
            strikes: HashMap::new(),
            alerts: Alerts::default(),
            total: Tally::new(),
            hours: VecDeque::new(),
        }
    }

    pub(crate) fn count(
        &mut self,
        outcome: &'static str,
        standing: Standing,
        model: ModelId,
        now: UnixMs,
    ) {
        let key = (outcome, standing, model);
        *self.total.entry(key).or_default() += 1;
        let hour = now / HOUR;
        if self.hours.back().is_none_or(|(h, _)| *h < hour) {
            self.hours.push_back((hour, Tally::new()));
        }
        while self
            .hours
            .front()
            .is_some_and(|(h, _)| h + DAY_HOURS <= hour)
        {
            self.hours.pop_front();
        }
        if let Some((_, tally)) = self.hours.back_mut() {
            *tally.entry(key).or_default() += 1;
        }
    }

    /// Records a failure of `vehicle` at `at`: the failures within the window when that
    /// makes the rule's count.
    pub(crate) fn strike(&mut self, rule: &JourneyRule, vehicle: &str, at: UnixMs) -> Option<u32> {
        let window_ms = millis(rule.window);
        let strikes = self.strikes.entry(vehicle.into()).or_default();
        while strikes
            .front()
            .is_some_and(|&t| t.saturating_add(window_ms) <= at)
        {
            strikes.pop_front();
        }
        strikes.push_back(at);
        let n = u32::try_from(strikes.len()).unwrap_or(u32::MAX);
        if n >= rule.failures.max(1) {
            self.strikes.remove(vehicle);
            Some(n)
        } else {
            None
        }
    }

    /// Forgets strikes that left the window (once a minute, so the map stays as small as
    /// the vehicles failing lately).
    pub(crate) fn forget_old_strikes(&mut self, now: UnixMs) {
        let Some(rule) = &self.config.rule else {
            return;
        };
        let window_ms = millis(rule.window);
        self.strikes
            .retain(|_, s| s.back().is_some_and(|&t| t.saturating_add(window_ms) > now));
    }

    pub(crate) fn has_activity(&self) -> bool {
        self.journey.pending() > 0 || self.alerts.any_firing() || !self.hours.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const T0: UnixMs = 1_700_000_000_000;
    const IN: Standing = Standing::InService;

    fn config() -> JourneyConfig {
        JourneyConfig {
            timeout: Duration::from_secs(10),
            max_pending_per_vehicle: 4,
            max_pending: 100,
            name: "unlock".into(),
            target: 0.99,
            window: Duration::from_secs(30 * 24 * 3600),
            rule: None,
        }
    }

    fn journey() -> Journey {
        Journey::new(&config(), T0)
    }

    #[test]
    fn answers_end_their_requests_with_success_or_failure_and_their_latency() {
        let mut j = journey();
        j.request("sc-1", Some("r1"), IN, T0).unwrap();
        j.request("sc-1", Some("r2"), IN, T0 + 100).unwrap();
        // Answers in any order, matched by key.
        let (a, _) = j.answer("sc-1", Some("r2"), false, T0 + 400);
        assert_eq!(
            a,
            Answered::Ended(JourneyEnd::Failed {
                vehicle: "sc-1".into(),
                latency_ms: 300,
                standing: IN,
            })
        );
        let (a, _) = j.answer("sc-1", Some("r1"), true, T0 + 1_500);
        assert_eq!(
            a,
            Answered::Ended(JourneyEnd::Succeeded {
                vehicle: "sc-1".into(),
                latency_ms: 1_500,
                standing: IN,
            })
        );
        let r = j.report(T0 + 2_000);
        assert_eq!((r.sli.good, r.sli.valid), (1, 2));
        assert_eq!((r.counts.succeeded, r.counts.failed), (1, 1));
        assert_eq!(r.pending, 0);
        // 300 ms in the 0.5 s bucket, 1.5 s in the 2 s bucket; cumulative.
        assert_eq!(r.latency, [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]);
        assert_eq!(r.latency_sum_ms, 1_800);
    }

    #[test]
    fn an_unanswered_request_times_out_and_its_answer_after_that_is_late() {
        let mut j = journey();
        j.request("sc-1", Some("r1"), IN, T0).unwrap();
        assert_eq!(j.next_deadline(), Some(T0 + 10_001));
        assert!(j.tick(T0 + 10_000).is_empty(), "in time up to the timeout");
        assert_eq!(
            j.tick(T0 + 10_001),
            [JourneyEnd::TimedOut {
                vehicle: "sc-1".into(),
                standing: IN,
            }]
        );
        let (a, _) = j.answer("sc-1", Some("r1"), true, T0 + 12_000);
        assert_eq!(a, Answered::Late);
        // A second copy, or one with another key, matches nothing.
        let (a, _) = j.answer("sc-1", Some("r1"), true, T0 + 12_500);
        assert_eq!(a, Answered::Unmatched);
        let r = j.report(T0 + 13_000);
        assert_eq!((r.sli.good, r.sli.valid), (0, 1));
        assert_eq!(
            (r.counts.timed_out, r.counts.late, r.counts.unmatched),
            (1, 1, 1)
        );
        // Long after the timeout a stray answer is unmatched, not late.
        j.request("sc-2", None, IN, T0 + 20_000).unwrap();
        j.tick(T0 + 31_000);
        let (a, _) = j.answer("sc-2", None, true, T0 + 45_000);
        assert_eq!(a, Answered::Unmatched);
    }

    #[test]
    fn an_answer_times_out_what_was_overdue_first() {
        let mut j = journey();
        j.request("sc-1", None, IN, T0).unwrap();
        j.request("sc-1", None, IN, T0 + 9_000).unwrap();
        // Without keys the next answer is to the oldest pending request: the first timed
        // out, so this one ends the second.
        let (a, timed_out) = j.answer("sc-1", None, true, T0 + 10_500);
        assert_eq!(timed_out.len(), 1);
        assert_eq!(
            a,
            Answered::Ended(JourneyEnd::Succeeded {
                vehicle: "sc-1".into(),
                latency_ms: 1_500,
                standing: IN,
            })
        );
    }

    #[test]
    fn an_answer_never_ends_another_vehicles_request() {
        let mut j = journey();
        j.request("sc-1", Some("r1"), IN, T0).unwrap();
        let (a, _) = j.answer("sc-2", Some("r1"), true, T0 + 100);
        assert_eq!(a, Answered::Unmatched);
        assert_eq!(j.pending(), 1);
    }

    #[test]
    fn requests_past_the_bounds_are_refused_and_counted() {
        let mut j = Journey::new(
            &JourneyConfig {
                max_pending_per_vehicle: 2,
                max_pending: 3,
                ..config()
            },
            T0,
        );
        j.request("a", None, IN, T0).unwrap();
        j.request("a", None, IN, T0).unwrap();
        assert_eq!(j.request("a", None, IN, T0), Err(Refused::VehicleFull));
        j.request("b", None, IN, T0).unwrap();
        assert_eq!(j.request("c", None, IN, T0), Err(Refused::Full));
        assert_eq!(j.report(T0).counts.refused, 2);
        // Room again once one ends.
        j.answer("b", None, true, T0 + 1);
        j.request("c", None, IN, T0 + 1).unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request {
            vehicle: u8,
            key: Option<u8>,
        },
        Answer {
            vehicle: u8,
            key: Option<u8>,
            success: bool,
        },
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = proptest::option::of(0u8..4);
        prop_oneof![
            (0u8..3, key.clone()).prop_map(|(vehicle, key)| Op::Request { vehicle, key }),
            (0u8..3, key, any::<bool>()).prop_map(|(vehicle, key, success)| Op::Answer {
                vehicle,
                key,
                success
            }),
            (0u16..4_000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Every tracked request ends exactly once, as its own vehicle's, within the
        /// timeout when answered; the bounds hold throughout.
        #[test]
        fn every_request_ends_once_and_only_for_its_vehicle(ops in proptest::collection::vec(op(), 0..200)) {
            let cfg = JourneyConfig { max_pending_per_vehicle: 3, max_pending: 5, ..config() };
            let mut j = Journey::new(&cfg, T0);
            let mut now = T0;
            let mut ends = Vec::new();
            let name = |v: u8| format!("v{v}");
            let key_name = |k: Option<u8>| k.map(|k| format!("k{k}"));
            for op in ops {
                match op {
                    Op::Request { vehicle, key } => {
                        let _ = j.request(&name(vehicle), key_name(key).as_deref(), IN, now);
                    }
                    Op::Answer { vehicle, key, success } => {
                        let (a, timed_out) = j.answer(&name(vehicle), key_name(key).as_deref(), success, now);
                        ends.extend(timed_out);
                        if let Answered::Ended(end) = a {
                            match &end {
                                JourneyEnd::Succeeded { vehicle: v, latency_ms, .. }
                                | JourneyEnd::Failed { vehicle: v, latency_ms, .. } => {
                                    prop_assert_eq!(v, &name(vehicle));
                                    prop_assert!(*latency_ms <= 10_000);
                                }
                                JourneyEnd::TimedOut { .. } => prop_assert!(false, "an answer ended as a timeout"),
                            }
                            ends.push(end);
                        }
                    }
                    Op::Wait(ms) => {
                        now += u64::from(ms);
                        ends.extend(j.tick(now));
                    }
                }
                prop_assert!(j.pending() <= 5);
                prop_assert!(j.pending.values().all(|q| q.len() <= 3));
            }
            ends.extend(j.tick(now + 10_001));
            let r = j.report(now + 10_001);
            prop_assert_eq!(r.pending, 0);
            prop_assert_eq!(ends.len() as u64, r.counts.requested);
            prop_assert_eq!(r.counts.succeeded + r.counts.failed + r.counts.timed_out, r.counts.requested);
            prop_assert_eq!(r.sli.valid, r.counts.requested);
            prop_assert_eq!(r.sli.good, r.counts.succeeded);
        }
    }
}
