//! The fleet's journeys: one [`Journey`] tracker per configured journey, fed with the
//! requests and answers the owner takes from the fleet's own traffic. Each ended request
//! is counted by how the broker showed the vehicle when it was made (the health model's
//! precision figures); the journey's rule sets `journey_failures{name}` on a vehicle whose
//! requests keep failing; its SLO has the CMC SLO's burn-rate alerts.
//!
//! Only requests made while the vehicle was in service count towards the rule: a silent
//! or faulty vehicle that also fails its unlocks is already out, and a person clearing a
//! manual `journey_failures` should not have to clear one that its silence caused.

use crate::config::millis;
use crate::journey::{Tally, Tracked, DAY_HOURS, HOUR};
use crate::timeouts::NO_MODEL;
use crate::{
    Answered, Cause, Effect, Fleet, JourneyEnd, JourneyMinute, JourneyRule, JourneyStatus,
    Notification, PrecisionRow, Reason, ReasonChange, ReasonKind, Recovery, Refused, ServiceState,
    Standing, UnixMs,
};

impl Fleet {
    /// The configured journeys' names, in order: the index each call takes.
    pub fn journey_names(&self) -> impl Iterator<Item = &str> {
        self.journeys.iter().map(|t| t.config.name.as_str())
    }

    /// A request of journey `journey` (its index in the config) to `vehicle` at `now`, with
    /// the key its answer will carry, if any. An unknown vehicle is not registered; its
    /// request is tracked all the same.
    pub fn journey_request(
        &mut self,
        journey: usize,
        vehicle: &str,
        key: Option<&str>,
        now: UnixMs,
    ) -> Result<(), Refused> {
        let now = self.observe(now);
        let standing = self.standing(vehicle);
        let t = self.journeys.get_mut(journey).ok_or(Refused::NoJourney)?;
        t.journey.request(vehicle, key, standing, now)
    }

    /// `vehicle`'s answer to journey `journey` at `now`: success or not, with the key it
    /// carries. The answer proves the vehicle alive, as any uplink does.
    pub fn journey_answer(
        &mut self,
        journey: usize,
        vehicle: &str,
        key: Option<&str>,
        success: bool,
        now: UnixMs,
    ) -> Answered {
        let now = self.observe(now);
        if let Some(slot) = self.registry.find(vehicle) {
            self.touch(slot, now);
            self.end_incident_if_over(now, false);
        }
        let Some(t) = self.journeys.get_mut(journey) else {
            return Answered::Unmatched;
        };
        let (answered, timed_out) = t.journey.answer(vehicle, key, success, now);
        for end in timed_out {
            self.journey_ended(journey, end, now);
        }
        if let Answered::Ended(end) = &answered {
            self.journey_ended(journey, end.clone(), now);
        }
        answered
    }

    /// Every journey's SLI minutes from unix minute `from` up to `now`, to store.
    pub fn journey_minutes(&mut self, from: u64, now: UnixMs) -> Vec<JourneyMinute> {
        let now = self.observe(now);
        let mut out = Vec::new();
        for t in &mut self.journeys {
            for (minute, good, valid) in t.journey.sli_minutes(from, now) {
                out.push(JourneyMinute {
                    journey: t.config.name.clone(),
                    minute,
                    good,
                    valid,
                });
            }
        }
        out
    }

    /// Puts stored SLI minutes back into the journeys of those names (others are
    /// dropped: a journey no longer configured).
    pub fn restore_journey_minutes(&mut self, minutes: Vec<JourneyMinute>) {
        for m in minutes {
            if let Some(t) = self
                .journeys
                .iter_mut()
                .find(|t| t.config.name == m.journey)
            {
                t.journey.import_minute(m.minute, m.good, m.valid);
            }
        }
    }

    /// Every journey's figures at `now`.
    pub fn journey_statuses(&mut self, now: UnixMs) -> Vec<JourneyStatus> {
        let now = self.observe(now);
        let hour = now / HOUR;
        let timeouts = &self.timeouts;
        self.journeys
            .iter_mut()
            .map(|t| {
                let mut last_day = Tally::new();
                for (h, tally) in &t.hours {
                    if h + DAY_HOURS > hour {
                        for (k, n) in tally {
                            *last_day.entry(*k).or_default() += n;
                        }
                    }
                }
                let mut precision: Vec<PrecisionRow> = t
                    .total
                    .iter()
                    .map(|(&(outcome, standing, model), &total)| PrecisionRow {
                        outcome,
                        state: standing.state(),
                        reason: standing.reason(),
                        model: timeouts.name(model).map(str::to_owned),
                        total,
                        last_day: last_day
                            .get(&(outcome, standing, model))
                            .copied()
                            .unwrap_or(0),
                    })
                    .collect();
                precision.sort_by(|a, b| {
                    (b.total, a.outcome, a.state, a.reason, &a.model)
                        .cmp(&(a.total, b.outcome, b.state, b.reason, &b.model))
                });
                JourneyStatus {
                    name: t.config.name.clone(),
                    report: t.journey.report(now),
                    alerts_firing: t.alerts.firing(),
                    precision,
                }
            })
            .collect()
    }

    /// How the broker shows `vehicle` now.
    fn standing(&self, vehicle: &str) -> Standing {
        let Some(v) = self
            .registry
            .find(vehicle)
            .and_then(|s| self.registry.get(s))
        else {
            return Standing::Unknown;
        };
        match v.state() {
            ServiceState::InService => Standing::InService,
            ServiceState::OutOfService => ReasonKind::ALL
                .into_iter()
                .find(|k| k.holds_for(v))
                .map_or(Standing::Unknown, Standing::OutOfService),
        }
    }

    /// Times out what is overdue at `now`, and once a minute evaluates the alerts.
    pub(crate) fn journeys_due(&mut self, now: UnixMs, new_minute: bool) {
        for i in 0..self.journeys.len() {
            let ended = self.journeys[i].journey.tick(now);
            for end in ended {
                self.journey_ended(i, end, now);
            }
            if new_minute {
                let t = &mut self.journeys[i];
                t.forget_old_strikes(now);
                let sli = t.journey.report(now).sli;
                for change in t.alerts.evaluate(sli.burn, now) {
                    if let Notification::SloAlert {
                        severity, state, ..
                    } = change
                    {
                        self.effects
                            .push(Effect::Notify(Notification::JourneyAlert {
                                journey: t.config.name.clone(),
                                severity,
                                state,
                                sli: sli.clone(),
                                at: now,
                            }));
                    }
                }
            }
        }
    }

    /// Requests due while the broker was blind are dropped unjudged.
    pub(crate) fn abandon_journeys(&mut self, now: UnixMs) {
        for t in &mut self.journeys {
            t.journey.abandon_overdue(now);
        }
    }

    /// The earliest request deadline, and whether the minute's alert evaluation matters.
    pub(crate) fn journeys_wakeup(&self) -> (Option<UnixMs>, bool) {
        let deadline = self
            .journeys
            .iter()
            .filter_map(|t| t.journey.next_deadline())
            .min();
        (deadline, self.journeys.iter().any(Tracked::has_activity))
    }

    fn journey_ended(&mut self, journey: usize, end: JourneyEnd, now: UnixMs) {
        let slot = self.registry.find(end.vehicle());
        let model = slot
            .and_then(|s| self.registry.get(s))
            .map_or(NO_MODEL, |v| v.model);
        let Some(t) = self.journeys.get_mut(journey) else {
            return;
        };
        t.count(end.outcome(), end.standing(), model, now);
        let (Some(rule), Some(slot)) = (t.config.rule.clone(), slot) else {
            return;
        };
        let name = t.config.name.clone();
        match end {
            JourneyEnd::Succeeded { vehicle, .. } => {
                t.strikes.remove(vehicle.as_str());
                if rule.recovery == Recovery::Auto {
                    self.clear_journey(slot, &name, now);
                }
            }
            JourneyEnd::Failed {
                vehicle, standing, ..
            }
            | JourneyEnd::TimedOut { vehicle, standing } => {
                if standing != Standing::InService {
                    return;
                }
                if let Some(failures) = t.strike(&rule, &vehicle, now) {
                    self.set_journey(slot, &name, failures, &rule, now);
                }
            }
        }
    }

    fn set_journey(
        &mut self,
        slot: u32,
        journey: &str,
        failures: u32,
        rule: &JourneyRule,
        now: UnixMs,
    ) {
        let Some((from, vehicle, model, battery)) = self
            .reclassify(slot, now, |v| {
                let from = v.state();
                if v.extra.as_ref().is_some_and(|x| x.holds_journey(journey)) {
                    return None;
                }
                v.extra_mut().add_journey(journey, failures, now);
                Some((from, v.id.to_string(), v.model, v.battery))
            })
            .flatten()
        else {
            return;
        };
        let set = ReasonChange::Set(Reason::JourneyFailures {
            journey: journey.to_owned(),
            failures,
            since: now,
        });
        self.announce(slot, from, set, Cause::Rule, now);
        self.effects
            .push(Effect::Notify(Notification::JourneyFailures {
                vehicle,
                journey: journey.to_owned(),
                failures,
                window_ms: millis(rule.window),
                manual: rule.recovery == Recovery::Manual,
                model: self.timeouts.name(model).map(str::to_owned),
                battery,
                at: now,
            }));
    }

    fn clear_journey(&mut self, slot: u32, journey: &str, now: UnixMs) {
        let Some((from, hold)) = self
            .reclassify(slot, now, |v| {
                let from = v.state();
                let hold = v.extra.as_mut()?.remove_journey(Some(journey))?;
                Some((from, hold))
            })
            .flatten()
        else {
            return;
        };
        let cleared = ReasonChange::Cleared(Reason::JourneyFailures {
            journey: hold.journey.into(),
            failures: hold.failures,
            since: hold.since,
        });
        self.announce(slot, from, cleared, Cause::Rule, now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testkit::*;
    use crate::*;

    fn with_unlock(recovery: Recovery) -> Fleet {
        started_at(recovery, T0)
    }

    fn started_at(recovery: Recovery, now: UnixMs) -> Fleet {
        let mut cfg = config();
        cfg.journeys = vec![JourneyConfig {
            name: "unlock".into(),
            timeout: Duration::from_secs(10),
            max_pending_per_vehicle: 4,
            max_pending: 1_000,
            target: 0.99,
            window: Duration::from_secs(30 * 24 * 3600),
            rule: Some(JourneyRule {
                failures: 3,
                window: Duration::from_secs(3600),
                recovery,
            }),
        }];
        Fleet::new(cfg, now)
    }

    /// A keyed request to `v` at `at`, answered `ok` 200 ms later.
    fn unlock(f: &mut Fleet, v: &str, key: &str, ok: bool, at: UnixMs) -> Answered {
        f.journey_request(0, v, Some(key), at).unwrap();
        f.journey_answer(0, v, Some(key), ok, at + 200)
    }

    #[test]
    fn failures_within_the_window_take_the_vehicle_out_and_the_next_success_brings_it_back() {
        let mut f = with_unlock(Recovery::Auto);
        f.heartbeat("v1", of_model("e-bike"), T0).unwrap();
        drain(&mut f);
        unlock(&mut f, "v1", "a", false, T0 + 1_000);
        unlock(&mut f, "v1", "b", false, T0 + 2_000);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        // The third failure is a timeout.
        f.journey_request(0, "v1", Some("c"), T0 + 3_000).unwrap();
        f.tick(T0 + 13_001);
        let effects = drain(&mut f);
        assert_eq!(
            reasons(&f, "v1"),
            [Reason::JourneyFailures {
                journey: "unlock".into(),
                failures: 3,
                since: T0 + 13_001,
            }]
        );
        assert_eq!(commands(&effects)[0].command, CommandKind::ServiceOut);
        assert!(matches!(
            &notifications(&effects)[..],
            [Notification::JourneyFailures { vehicle, failures: 3, manual: false, model: Some(m), .. }]
                if vehicle == "v1" && m == "e-bike"
        ));
        // Heartbeats do not clear it; a success does.
        f.heartbeat("v1", BARE, T0 + 20_000).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        unlock(&mut f, "v1", "d", true, T0 + 21_000);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        let effects = drain(&mut f);
        assert_eq!(commands(&effects)[0].command, CommandKind::ServiceIn);
    }

    #[test]
    fn manual_recovery_waits_for_a_person_and_old_failures_leave_the_window() {
        let mut f = with_unlock(Recovery::Manual);
        f.heartbeat("v1", BARE, T0).unwrap();
        // Two failures, then an hour passes: they no longer count.
        unlock(&mut f, "v1", "a", false, T0);
        unlock(&mut f, "v1", "b", false, T0 + 1_000);
        f.heartbeat("v1", BARE, T0 + 3_600_000).unwrap();
        unlock(&mut f, "v1", "c", false, T0 + 3_600_500);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        unlock(&mut f, "v1", "d", false, T0 + 3_601_000);
        unlock(&mut f, "v1", "e", false, T0 + 3_602_000);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        unlock(&mut f, "v1", "f", true, T0 + 3_603_000);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService, "manual");
        let out = f
            .service_in("v1", "ana", "checked", T0 + 3_604_000)
            .unwrap();
        assert_eq!(out.state, ServiceState::InService);
        assert!(
            matches!(&out.cleared[..], [Reason::JourneyFailures { journey, .. }] if journey == "unlock")
        );
    }

    #[test]
    fn failures_of_a_vehicle_already_out_do_not_count_towards_the_rule() {
        let mut f = with_unlock(Recovery::Manual);
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        for i in 0..5 {
            unlock(&mut f, "v1", &format!("k{i}"), false, T0 + i * 1_000);
        }
        assert_eq!(reasons(&f, "v1").len(), 1, "only the hardware fault");
    }

    #[test]
    fn precision_counts_each_end_by_how_the_vehicle_was_shown_at_the_request() {
        let mut f = with_unlock(Recovery::Auto);
        f.heartbeat("ok", of_model("e-bike"), T0).unwrap();
        f.error_report("broken", &[("BRAKE_SENSOR", 1)], T0)
            .unwrap();
        unlock(&mut f, "ok", "a", true, T0);
        unlock(&mut f, "ok", "b", false, T0 + 1_000);
        unlock(&mut f, "broken", "c", false, T0 + 2_000);
        f.journey_request(0, "ghost", Some("d"), T0 + 3_000)
            .unwrap();
        f.tick(T0 + 14_000);
        // A day and an hour later the first day no longer counts in "last_day".
        unlock(&mut f, "ok", "e", true, T0 + 25 * 3_600_000);
        let s = &f.journey_statuses(T0 + 25 * 3_600_000)[0];
        let row = |outcome: &str, state: &str| {
            s.precision
                .iter()
                .find(|r| r.outcome == outcome && r.state == state)
                .map(|r| (r.reason, r.model.clone(), r.total, r.last_day))
        };
        assert_eq!(
            row("succeeded", "in_service"),
            Some(("", Some("e-bike".into()), 2, 1))
        );
        assert_eq!(
            row("failed", "in_service"),
            Some(("", Some("e-bike".into()), 1, 0))
        );
        assert_eq!(
            row("failed", "out_of_service"),
            Some(("hardware_fault", None, 1, 0))
        );
        assert_eq!(row("timed_out", "unknown"), Some(("", None, 1, 0)));
        assert_eq!(s.precision.len(), 4);
        assert_eq!((s.report.sli.good, s.report.sli.valid), (2, 5));
    }

    #[test]
    fn the_journey_sli_survives_a_restart_through_its_stored_minutes() {
        let mut f = with_unlock(Recovery::Auto);
        unlock(&mut f, "v1", "a", true, T0);
        unlock(&mut f, "v1", "b", false, T0 + 61_000);
        let minutes = f.journey_minutes(0, T0 + 62_000);
        assert_eq!(minutes.len(), 2);
        let mut again = started_at(Recovery::Auto, T0 + 62_000);
        let mut stray = minutes[0].clone();
        stray.journey = "gone".into();
        again.restore_journey_minutes(minutes.into_iter().chain([stray]).collect());
        let s = &again.journey_statuses(T0 + 63_000)[0];
        assert_eq!((s.report.sli.good, s.report.sli.valid), (1, 2));
        // Only minutes from `from` on come out.
        assert_eq!(
            again
                .journey_minutes((T0 + 61_000) / 60_000, T0 + 63_000)
                .len(),
            1
        );
    }

    #[test]
    fn requests_due_while_blind_are_dropped_unjudged() {
        let mut f = with_unlock(Recovery::Auto);
        f.heartbeat("v1", BARE, T0).unwrap();
        f.journey_request(0, "v1", Some("a"), T0).unwrap();
        f.link_lost(
            T0 + 1_000,
            Blindness {
                downtime_is_bad: false,
                alert_after: Duration::from_secs(3600),
            },
        );
        f.tick(T0 + 20_000);
        f.link_restored(T0 + 30_000);
        f.tick(T0 + 30_001);
        let s = &f.journey_statuses(T0 + 30_001)[0];
        assert_eq!(
            (s.report.counts.timed_out, s.report.counts.abandoned),
            (0, 1)
        );
        assert_eq!(s.report.sli.valid, 0);
    }

    #[test]
    fn a_journey_burning_its_budget_pages() {
        let mut f = with_unlock(Recovery::Auto);
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        // Every unlock fails for ten minutes (of many vehicles, so no rule takes one out).
        for i in 0..600u64 {
            let v = format!("x{i}");
            unlock(&mut f, &v, "k", false, T0 + i * 1_000);
            f.tick(T0 + i * 1_000 + 500);
        }
        let alerts: Vec<_> = drain(&mut f)
            .into_iter()
            .filter_map(|e| match e {
                Effect::Notify(Notification::JourneyAlert {
                    journey,
                    severity,
                    state,
                    ..
                }) => Some((journey, severity, state)),
                _ => None,
            })
            .collect();
        assert!(alerts.contains(&("unlock".into(), AlertSeverity::Page, AlertState::Firing)));
        assert_eq!(
            f.journey_statuses(T0 + 600_000)[0].alerts_firing,
            [AlertSeverity::Page, AlertSeverity::Ticket]
        );
    }
}
