//! What a person does through the ops API: take a vehicle out for maintenance, put it back
//! (clearing hardware faults, journey failures and maintenance, never `heartbeat_lost`:
//! only the vehicle can prove it talks again), and decommission it.

use crate::vehicle::{Maintenance, SliClass};
use crate::{
    Cause, Effect, Fleet, Reason, ReasonChange, ServiceInOutcome, ServiceState, Transition, UnixMs,
};

impl Fleet {
    /// Sets (or replaces) maintenance.
    pub(crate) fn take_out(
        &mut self,
        slot: u32,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> ServiceState {
        let Some(from) = self.reclassify(slot, now, |v| {
            let from = v.state();
            v.extra_mut().maintenance = Some(Box::new(Maintenance {
                by: operator.to_owned(),
                note: note.to_owned(),
                since: now,
            }));
            from
        }) else {
            return ServiceState::OutOfService;
        };
        let set = ReasonChange::Set(Reason::Maintenance {
            by: operator.to_owned(),
            note: note.to_owned(),
            since: now,
        });
        self.announce(slot, from, set, operator_cause(operator, note), now);
        ServiceState::OutOfService
    }

    /// Clears faults (by code) then maintenance, one transition each.
    pub(crate) fn put_back(
        &mut self,
        slot: u32,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> ServiceInOutcome {
        let mut cleared = Vec::new();
        while let Some(reason) = self.clear_one_manual_reason(slot, operator, note, now) {
            cleared.push(reason);
        }
        let (state, remaining) = self
            .registry
            .get(slot)
            .map_or((ServiceState::OutOfService, Vec::new()), |v| {
                (v.state(), v.reasons())
            });
        ServiceInOutcome {
            state,
            remaining,
            cleared,
        }
    }

    fn clear_one_manual_reason(
        &mut self,
        slot: u32,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> Option<Reason> {
        let (from, reason) = self
            .reclassify(slot, now, |v| {
                let from = v.state();
                let extra = v.extra.as_mut()?;
                let reason = if !extra.faults.is_empty() {
                    let (code, since) = extra.faults.remove(0);
                    Reason::HardwareFault {
                        code: code.into(),
                        since,
                    }
                } else if let Some(hold) = extra.remove_journey(None) {
                    Reason::JourneyFailures {
                        journey: hold.journey.into(),
                        failures: hold.failures,
                        since: hold.since,
                    }
                } else {
                    let Maintenance { by, note, since } = *extra.maintenance.take()?;
                    Reason::Maintenance { by, note, since }
                };
                Some((from, reason))
            })
            .flatten()?;
        let change = ReasonChange::Cleared(reason.clone());
        self.announce(slot, from, change, operator_cause(operator, note), now);
        Some(reason)
    }

    /// Forgets the vehicle; its id is refused from now on.
    pub(crate) fn remove(&mut self, slot: u32, operator: &str, now: UnixMs) {
        // Not `reclassify`: the vehicle leaves the registry, so it is counted out by hand.
        let before = self.class_of(slot);
        let Some(v) = self.registry.decommission(slot) else {
            return;
        };
        self.recount(before, SliClass::Uncounted, now);
        if v.wave_member {
            self.guard.member_left();
        }
        self.effects.push(Effect::Transition(Transition {
            vehicle: v.id.to_string(),
            from: v.state(),
            to: ServiceState::OutOfService,
            change: ReasonChange::Decommissioned,
            reasons: Vec::new(),
            cause: operator_cause(operator, ""),
            at: now,
        }));
        self.end_incident_if_over(now, false);
    }
}

fn operator_cause(name: &str, note: &str) -> Cause {
    Cause::Operator {
        name: name.to_owned(),
        note: note.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn service_out_sets_maintenance_and_sends_a_service_out() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        let state = f.service_out("v1", "ana", "wobbly bell", T0 + 1).unwrap();
        assert_eq!(state, ServiceState::OutOfService);
        let effects = drain(&mut f);
        let t = &transitions(&effects)[0];
        assert_eq!(
            t.cause,
            Cause::Operator {
                name: "ana".into(),
                note: "wobbly bell".into()
            }
        );
        assert_eq!(commands(&effects)[0].command, CommandKind::ServiceOut);
    }

    #[test]
    fn service_out_again_replaces_the_operator_and_note_without_a_command() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.service_out("v1", "ana", "first", T0).unwrap();
        drain(&mut f);
        f.service_out("v1", "bo", "second", T0 + 1).unwrap();
        let effects = drain(&mut f);
        assert_eq!(transitions(&effects).len(), 1);
        assert!(commands(&effects).is_empty());
        assert!(matches!(
            reasons(&f, "v1").as_slice(),
            [Reason::Maintenance { by, note, .. }] if by == "bo" && note == "second"
        ));
    }

    #[test]
    fn service_in_clears_faults_and_maintenance_with_one_transition_each() {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1), ("MOTOR", 3)], T0)
            .unwrap();
        f.service_out("v1", "ana", "check", T0).unwrap();
        drain(&mut f);
        let outcome = f.service_in("v1", "bo", "fixed", T0 + 1).unwrap();
        assert_eq!(outcome.state, ServiceState::InService);
        assert!(outcome.remaining.is_empty());
        assert_eq!(outcome.cleared.len(), 3);
        let effects = drain(&mut f);
        let t = transitions(&effects);
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|t| matches!(t.cause, Cause::Operator { .. })));
        assert_eq!(t[2].to, ServiceState::InService);
        let c = commands(&effects);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].command, CommandKind::ServiceIn);
        // The command follows the transition that put the vehicle back.
        assert!(matches!(effects.last(), Some(Effect::Command(_))));
    }

    #[test]
    fn manual_service_in_of_a_silent_vehicle_clears_the_fault_and_it_stays_out_for_heartbeat_lost()
    {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        f.tick(T0 + TIMEOUT);
        drain(&mut f);
        let outcome = f
            .service_in("v1", "ana", "replaced", T0 + TIMEOUT + 1)
            .unwrap();
        assert_eq!(outcome.state, ServiceState::OutOfService);
        assert_eq!(
            outcome.remaining,
            [Reason::HeartbeatLost {
                since: T0 + TIMEOUT
            }]
        );
        assert_eq!(
            outcome.cleared,
            [Reason::HardwareFault {
                code: "BRAKE_SENSOR".into(),
                since: T0
            }]
        );
        let effects = drain(&mut f);
        assert_eq!(transitions(&effects).len(), 1);
        assert!(commands(&effects).is_empty());
        // When it talks again it comes back by itself.
        f.heartbeat("v1", BARE, T0 + TIMEOUT + 2).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn service_in_with_nothing_to_clear_changes_nothing() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        let outcome = f.service_in("v1", "ana", "", T0 + 1).unwrap();
        assert_eq!(outcome.state, ServiceState::InService);
        assert!(outcome.cleared.is_empty());
        assert!(drain(&mut f).is_empty());
    }

    #[test]
    fn decommissioning_removes_the_vehicle_from_the_fleet_and_the_sli_and_refuses_it_later() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.error_report("v2", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        assert_eq!((f.sli(T0).in_service, f.sli(T0).fleet), (1, 2));
        drain(&mut f);
        f.decommission("v2", "ana", T0 + 1).unwrap();
        let effects = drain(&mut f);
        let t = &transitions(&effects)[0];
        assert_eq!(t.change, ReasonChange::Decommissioned);
        assert_eq!(t.to, ServiceState::OutOfService);
        assert!(t.reasons.is_empty());
        assert_eq!(f.len(), 1);
        assert!(f.vehicle("v2").is_none());
        let sli = f.sli(T0 + 1);
        assert_eq!((sli.in_service, sli.fleet, sli.fraction), (1, 1, 1.0));
        let refused = Err(RulesError::Decommissioned("v2".into()));
        assert_eq!(f.heartbeat("v2", BARE, T0 + 2), refused);
        assert_eq!(f.seen("v2", T0 + 2), refused);
        assert_eq!(f.error_report("v2", &[], T0 + 2), refused);
        assert_eq!(f.service_in("v2", "ana", "", T0 + 2).map(|_| ()), refused);
        assert!(drain(&mut f).is_empty());
        // Its old deadline does no harm.
        f.tick(T0 + 2 * TIMEOUT);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn ids_decommissioned_before_a_restart_stay_refused() {
        let stored = Restore {
            decommissioned: vec!["v9".into()],
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, T0).fleet;
        assert_eq!(
            f.heartbeat("v9", BARE, T0),
            Err(RulesError::Decommissioned("v9".into()))
        );
    }
}
