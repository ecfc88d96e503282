//! Error reports: every code is counted; a code with a threshold rule that collects enough
//! reports within its window sets `hardware_fault{code}`, which only a person clears.

use crate::config::millis;
use crate::{Cause, Effect, FaultRule, Fleet, Notification, Reason, ReasonChange, UnixMs};

impl Fleet {
    pub(crate) fn on_errors(&mut self, slot: u32, errors: &[(&str, u32)], now: UnixMs) {
        self.touch(slot, now);
        for &(code, count) in errors {
            self.on_error(slot, code, count, now);
        }
        self.end_incident_if_over(now, false);
    }

    fn on_error(&mut self, slot: u32, code: &str, count: u32, now: UnixMs) {
        let rule = self.settings.fault_rule(code).clone();
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        let extra = v.extra_mut();
        extra.errors_mut().count(code, count);
        let FaultRule::Threshold { threshold, window } = rule else {
            return;
        };
        // A fault already set is not counted again: after a person clears it, it takes
        // fresh reports to set it again.
        if extra.has_fault(code) {
            return;
        }
        let window_ms = millis(window);
        let Some(reports) = extra
            .errors_mut()
            .record(code, count, now, threshold, window_ms)
        else {
            return;
        };
        let Some((from, vehicle, model, battery)) = self.reclassify(slot, now, |v| {
            let from = v.state();
            v.extra_mut().add_fault(code, now);
            (from, v.id.to_string(), v.model, v.battery)
        }) else {
            return;
        };
        let model = self.timeouts.name(model).map(str::to_owned);
        let set = ReasonChange::Set(Reason::HardwareFault {
            code: code.to_owned(),
            since: now,
        });
        self.announce(slot, from, set, Cause::Rule, now);
        self.effects
            .push(Effect::Notify(Notification::HardwareFault {
                vehicle,
                code: code.to_owned(),
                reports,
                window_ms,
                model,
                battery,
                at: now,
            }));
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;
    use std::time::Duration;

    #[test]
    fn fault_reports_reaching_the_threshold_within_the_window_take_the_vehicle_out_and_notify() {
        let mut f = fleet();
        f.heartbeat("v1", of_model("e-bike"), T0).unwrap();
        f.error_report("v1", &[("MOTOR", 1)], T0).unwrap();
        f.error_report("v1", &[("MOTOR", 1)], T0 + 4 * MIN).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        drain(&mut f);
        f.error_report("v1", &[("MOTOR", 1)], T0 + 9 * MIN).unwrap();
        let effects = drain(&mut f);
        assert_eq!(
            reasons(&f, "v1"),
            [Reason::HardwareFault {
                code: "MOTOR".into(),
                since: T0 + 9 * MIN
            }]
        );
        assert!(matches!(effects[0], Effect::Transition(_)));
        assert_eq!(commands(&effects)[0].command, CommandKind::ServiceOut);
        assert_eq!(
            notifications(&effects),
            [Notification::HardwareFault {
                vehicle: "v1".into(),
                code: "MOTOR".into(),
                reports: 3,
                window_ms: 10 * MIN,
                model: Some("e-bike".into()),
                battery: None,
                at: T0 + 9 * MIN,
            }]
        );
    }

    #[test]
    fn a_per_code_rule_takes_the_vehicle_out_on_its_own_threshold() {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn fault_reports_spread_wider_than_the_window_do_not_take_the_vehicle_out() {
        let mut f = fleet();
        for i in 0..10 {
            f.heartbeat("v1", BARE, T0 + i * 6 * MIN).unwrap();
            f.error_report("v1", &[("MOTOR", 1)], T0 + i * 6 * MIN)
                .unwrap();
        }
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        assert_eq!(
            f.vehicle("v1").map(|v| v.error_counts),
            Some(vec![("MOTOR".into(), 10)])
        );
    }

    #[test]
    fn informational_codes_are_counted_and_never_take_the_vehicle_out() {
        let mut f = fleet();
        f.error_report("v1", &[("LOW_TIRE_PRESSURE", 1000)], T0)
            .unwrap();
        f.error_report("v1", &[("LOW_TIRE_PRESSURE", 5)], T0 + 1)
            .unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        assert_eq!(
            f.vehicle("v1").map(|v| v.error_counts),
            Some(vec![("LOW_TIRE_PRESSURE".into(), 1005)])
        );
    }

    #[test]
    fn hardware_faults_are_never_cleared_by_heartbeats() {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        for i in 1..20 {
            f.heartbeat("v1", reporting(ServiceState::OutOfService), T0 + i * 30_000)
                .unwrap();
            f.tick(T0 + i * 30_000);
        }
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        assert_eq!(reasons(&f, "v1").len(), 1);
    }

    #[test]
    fn a_fault_needs_fresh_reports_after_a_person_clears_it() {
        let mut f = Fleet::new(
            RulesConfig {
                faults: FaultConfig {
                    default: FaultRule::Threshold {
                        threshold: 2,
                        window: Duration::from_secs(600),
                    },
                    codes: Default::default(),
                },
                ..config()
            },
            T0,
        );
        f.error_report("v1", &[("MOTOR", 2)], T0).unwrap();
        f.error_report("v1", &[("MOTOR", 1)], T0 + 1).unwrap();
        f.service_in("v1", "ana", "checked", T0 + 2).unwrap();
        f.error_report("v1", &[("MOTOR", 1)], T0 + 3).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.error_report("v1", &[("MOTOR", 1)], T0 + 4).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }
}
