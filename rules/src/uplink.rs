//! Uplink messages: registering unknown vehicles, the connectivity proof every uplink gives
//! (it moves the deadline), recovery from `heartbeat_lost` (heartbeats only) and command
//! reconciliation. Error reports continue in `hardware`.

use crate::fleet::command_for;
use crate::vehicle::{Silence, SliClass, Vehicle, NEVER};
use crate::{
    Cause, Effect, Fleet, Heartbeat, Reason, ReasonChange, RulesError, ServiceState, UnixMs,
};

impl Fleet {
    /// The vehicle's slot, registering an unknown id (in service).
    pub(crate) fn resolve(&mut self, id: &str, now: UnixMs) -> Result<u32, RulesError> {
        if let Some(slot) = self.registry.find(id) {
            return Ok(slot);
        }
        if self.registry.is_decommissioned(id) {
            return Err(RulesError::Decommissioned(id.to_owned()));
        }
        let tracked = self.registry.len();
        if tracked >= self.settings.max_vehicles {
            return Err(RulesError::FleetFull(tracked, id.to_owned()));
        }
        let slot = self
            .registry
            .insert(Vehicle::new(id.into(), now))
            .ok_or_else(|| RulesError::FleetFull(tracked, id.to_owned()))?;
        self.effects.push(Effect::Registered {
            vehicle: id.to_owned(),
            at: now,
        });
        self.recount(SliClass::Uncounted, SliClass::Good, now);
        Ok(slot)
    }

    /// Any uplink: the vehicle is talking. Its deadline moves, and a pending or held vehicle
    /// simply becomes normal again (it never had a transition).
    pub(crate) fn touch(&mut self, slot: u32, now: UnixMs) {
        let Some(was_member) = self.reclassify(slot, now, |v| {
            v.last_seen = v.last_seen.max(now);
            if matches!(v.silence, Silence::Pending | Silence::Held) {
                v.silence = Silence::Talking;
            }
            std::mem::take(&mut v.wave_member)
        }) else {
            return;
        };
        if was_member {
            self.guard.member_recovered(now);
        }
        self.arm(slot);
    }

    /// Gives a talking vehicle a heap entry no later than its deadline. Usually it has one
    /// already (heartbeats leave it alone); a model with a shorter timeout needs a new one.
    pub(crate) fn arm(&mut self, slot: u32) {
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        if v.silence != Silence::Talking {
            return;
        }
        let due = self.timeouts.deadline(v.model, v.last_seen);
        if due < v.heap_at {
            self.deadlines.push(due, slot);
            v.heap_at = due;
        }
    }

    // By reference: each field is read where it is used instead of being copied out and
    // kept across the calls below, which cost every heartbeat a few instructions.
    pub(crate) fn on_heartbeat(&mut self, slot: u32, heartbeat: &Heartbeat<'_>, now: UnixMs) {
        if let Some(id) = heartbeat.model.and_then(|name| self.timeouts.intern(name)) {
            if let Some(v) = self.registry.get_mut(slot) {
                v.model = id;
            }
        }
        self.touch(slot, now);
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        let mut recovered = false;
        if v.silence == Silence::Lost {
            // A gap longer than the timeout between heartbeats restarts the count.
            let gap = now.saturating_sub(v.last_heartbeat);
            v.streak = if v.streak == 0 || gap > self.timeouts.timeout(v.model) {
                1
            } else {
                v.streak.saturating_add(1)
            };
            recovered = v.streak >= self.settings.recover_after;
        }
        v.last_heartbeat = now;
        if heartbeat.reported.is_some() {
            v.reported = heartbeat.reported;
        }
        if heartbeat.battery.is_some() {
            v.battery = heartbeat.battery;
        }
        if recovered {
            self.clear_heartbeat_lost(slot, now);
        }
        if let Some(state) = heartbeat.reported {
            self.reconcile(slot, state, now);
        }
        self.end_incident_if_over(now, false);
    }

    fn clear_heartbeat_lost(&mut self, slot: u32, now: UnixMs) {
        let Some((from, since)) = self.reclassify(slot, now, |v| {
            let before = (v.state(), v.lost_since);
            v.silence = Silence::Talking;
            v.streak = 0;
            before
        }) else {
            return;
        };
        self.arm(slot);
        let cleared = ReasonChange::Cleared(Reason::HeartbeatLost { since });
        self.announce(slot, from, cleared, Cause::Rule, now);
    }

    /// The vehicle reported applying `reported`: when that is not the desired state, send
    /// the desired command again, at most once per resend interval.
    fn reconcile(&mut self, slot: u32, reported: ServiceState, now: UnixMs) {
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        let desired = v.state();
        if reported == desired {
            return;
        }
        if v.last_command_at != NEVER
            && now.saturating_sub(v.last_command_at) < self.settings.resend_ms
        {
            return;
        }
        v.last_command_at = now;
        let command = command_for(v.id.to_string(), desired, v.reasons(), now, true);
        self.effects.push(Effect::Command(command));
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn a_first_message_from_an_unknown_vehicle_registers_it_in_service() {
        let mut f = fleet();
        f.seen("v1", T0).unwrap();
        f.error_report("v2", &[("LOW_TIRE_PRESSURE", 1)], T0)
            .unwrap();
        f.heartbeat("v3", BARE, T0).unwrap();
        let registered: Vec<String> = f
            .drain_effects()
            .filter_map(|e| match e {
                Effect::Registered { vehicle, at } if at == T0 => Some(vehicle),
                _ => None,
            })
            .collect();
        assert_eq!(registered, ["v1", "v2", "v3"]);
        assert_eq!(f.vehicles(Some(ServiceState::InService)).len(), 3);
        assert_eq!(f.sli(T0).in_service, 3);
    }

    #[test]
    fn a_full_fleet_refuses_new_vehicles_but_serves_known_ones() {
        let mut f = Fleet::new(
            RulesConfig {
                max_vehicles: 2,
                ..config()
            },
            T0,
        );
        f.heartbeat("v1", BARE, T0).unwrap();
        f.heartbeat("v2", BARE, T0).unwrap();
        assert_eq!(
            f.heartbeat("v3", BARE, T0),
            Err(RulesError::FleetFull(2, "v3".into()))
        );
        assert_eq!(f.heartbeat("v1", BARE, T0 + 1), Ok(()));
        assert_eq!(f.len(), 2);
        f.decommission("v2", "ana", T0 + 2).unwrap();
        assert_eq!(f.heartbeat("v3", BARE, T0 + 3), Ok(()));
    }

    #[test]
    fn a_silent_vehicle_goes_out_with_heartbeat_lost_after_its_timeout_not_before() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        f.tick(T0 + TIMEOUT - 1);
        assert!(drain(&mut f).is_empty());
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(T0 + TIMEOUT);
        let effects = drain(&mut f);
        assert_eq!(
            reasons(&f, "v1"),
            [Reason::HeartbeatLost {
                since: T0 + TIMEOUT
            }]
        );
        let t = &transitions(&effects)[0];
        assert_eq!(
            (t.from, t.to, &t.cause),
            (
                ServiceState::InService,
                ServiceState::OutOfService,
                &Cause::Rule
            )
        );
        let c = commands(&effects);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].command, CommandKind::ServiceOut);
        assert_eq!(c[0].reasons, reasons(&f, "v1"));
        assert!(!c[0].resend);
        // The transition comes before its command.
        assert!(matches!(effects[0], Effect::Transition(_)));
        assert!(matches!(effects[1], Effect::Command(_)));
    }

    #[test]
    fn a_model_with_its_own_timeout_goes_silent_on_its_own_clock() {
        let mut f = fleet();
        f.heartbeat("bike", of_model("e-bike"), T0).unwrap();
        f.heartbeat("scooter", BARE, T0).unwrap();
        f.tick(T0 + TIMEOUT);
        assert_eq!(state(&f, "scooter"), ServiceState::OutOfService);
        assert_eq!(state(&f, "bike"), ServiceState::InService);
        f.tick(T0 + EBIKE_TIMEOUT - 1);
        assert_eq!(state(&f, "bike"), ServiceState::InService);
        f.tick(T0 + EBIKE_TIMEOUT);
        assert_eq!(state(&f, "bike"), ServiceState::OutOfService);
        assert_eq!(
            f.vehicle("bike").and_then(|v| v.model),
            Some("e-bike".into())
        );
    }

    #[test]
    fn a_bare_heartbeat_keeps_the_model_named_before() {
        let mut f = fleet();
        f.heartbeat("bike", of_model("e-bike"), T0).unwrap();
        f.heartbeat("bike", BARE, T0 + 1).unwrap();
        f.tick(T0 + 1 + TIMEOUT);
        assert_eq!(state(&f, "bike"), ServiceState::InService);
    }

    #[test]
    fn a_heartbeat_brings_a_silent_vehicle_back_with_a_service_in_command() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.tick(T0 + TIMEOUT);
        drain(&mut f);
        f.heartbeat("v1", BARE, T0 + TIMEOUT + 5).unwrap();
        let effects = drain(&mut f);
        let t = &transitions(&effects)[0];
        assert_eq!(
            t.change,
            ReasonChange::Cleared(Reason::HeartbeatLost {
                since: T0 + TIMEOUT
            })
        );
        assert_eq!(t.to, ServiceState::InService);
        let c = commands(&effects);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].command, CommandKind::ServiceIn);
        assert!(c[0].reasons.is_empty());
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn recover_after_three_needs_three_consecutive_heartbeats() {
        let mut f = Fleet::new(recovering_after(3), T0);
        f.heartbeat("v1", BARE, T0).unwrap();
        let lost_at = T0 + TIMEOUT;
        f.tick(lost_at);
        f.heartbeat("v1", BARE, lost_at + 1_000).unwrap();
        f.heartbeat("v1", BARE, lost_at + 31_000).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        f.heartbeat("v1", BARE, lost_at + 61_000).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn a_gap_longer_than_the_timeout_restarts_the_recovery_count() {
        let mut f = Fleet::new(recovering_after(3), T0);
        f.heartbeat("v1", BARE, T0).unwrap();
        let lost_at = T0 + TIMEOUT;
        f.tick(lost_at);
        f.heartbeat("v1", BARE, lost_at + 1_000).unwrap();
        f.heartbeat("v1", BARE, lost_at + 2_000).unwrap();
        let later = lost_at + 2_000 + TIMEOUT + 1;
        f.heartbeat("v1", BARE, later).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        f.heartbeat("v1", BARE, later + 1_000).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        f.heartbeat("v1", BARE, later + 2_000).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn any_uplink_moves_the_deadline_but_only_heartbeats_clear_heartbeat_lost() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.error_report("v1", &[("LOW_TIRE_PRESSURE", 1)], T0 + 100_000)
            .unwrap();
        f.seen("v1", T0 + 200_000).unwrap();
        f.tick(T0 + 200_000 + TIMEOUT - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(T0 + 200_000 + TIMEOUT);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        f.seen("v1", T0 + 200_000 + TIMEOUT + 1).unwrap();
        f.error_report(
            "v1",
            &[("LOW_TIRE_PRESSURE", 1)],
            T0 + 200_000 + TIMEOUT + 2,
        )
        .unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        assert_eq!(
            f.vehicle("v1").map(|v| v.last_seen),
            Some(T0 + 200_000 + TIMEOUT + 2)
        );
    }

    #[test]
    fn a_heartbeat_after_fault_and_silence_clears_heartbeat_lost_only_and_sends_no_command() {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        f.tick(T0 + TIMEOUT);
        assert_eq!(reasons(&f, "v1").len(), 2);
        drain(&mut f);
        f.heartbeat("v1", BARE, T0 + TIMEOUT + 1).unwrap();
        let effects = drain(&mut f);
        let t = transitions(&effects);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].from, t[0].to),
            (ServiceState::OutOfService, ServiceState::OutOfService)
        );
        assert!(matches!(
            t[0].change,
            ReasonChange::Cleared(Reason::HeartbeatLost { .. })
        ));
        assert!(commands(&effects).is_empty());
        assert_eq!(
            reasons(&f, "v1"),
            [Reason::HardwareFault {
                code: "BRAKE_SENSOR".into(),
                since: T0
            }]
        );
    }

    #[test]
    fn a_reported_state_other_than_the_desired_one_resends_the_command_at_most_once_per_interval() {
        let mut f = fleet();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        drain(&mut f);
        let wrong = reporting(ServiceState::InService);
        // The service-out was just sent: too early to repeat it.
        f.heartbeat("v1", wrong, T0 + 10_000).unwrap();
        assert!(commands(&drain(&mut f)).is_empty());
        f.heartbeat("v1", wrong, T0 + RESEND).unwrap();
        let c = commands(&drain(&mut f));
        assert_eq!(c.len(), 1);
        assert!(c[0].resend);
        assert_eq!(c[0].command, CommandKind::ServiceOut);
        assert_eq!(c[0].reasons, reasons(&f, "v1"));
        f.heartbeat("v1", wrong, T0 + RESEND + 10_000).unwrap();
        assert!(commands(&drain(&mut f)).is_empty());
        f.heartbeat("v1", reporting(ServiceState::OutOfService), T0 + 3 * RESEND)
            .unwrap();
        assert!(commands(&drain(&mut f)).is_empty());
        assert_eq!(
            f.vehicle("v1").and_then(|v| v.reported),
            Some(ServiceState::OutOfService)
        );
    }

    #[test]
    fn a_new_vehicle_reporting_out_of_service_is_told_to_go_in_at_once() {
        let mut f = fleet();
        f.heartbeat("v1", reporting(ServiceState::OutOfService), T0)
            .unwrap();
        let c = commands(&drain(&mut f));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].command, c[0].resend), (CommandKind::ServiceIn, true));
    }

    #[test]
    fn a_heartbeat_remembers_the_battery_level_until_one_reports_another() {
        let mut f = fleet();
        let with_battery = |percent| Heartbeat {
            battery: Some(percent),
            ..BARE
        };
        f.heartbeat("v1", with_battery(80), T0).unwrap();
        assert_eq!(f.vehicle("v1").and_then(|v| v.battery), Some(80));
        f.heartbeat("v1", BARE, T0 + 1).unwrap();
        assert_eq!(f.vehicle("v1").and_then(|v| v.battery), Some(80));
        f.heartbeat("v1", with_battery(12), T0 + 2).unwrap();
        assert_eq!(f.vehicle("v1").and_then(|v| v.battery), Some(12));
    }

    #[test]
    fn the_battery_level_from_a_heartbeat_is_told_with_a_hardware_fault() {
        let mut f = fleet();
        let heartbeat = Heartbeat {
            model: Some("e-bike"),
            reported: Some(ServiceState::InService),
            battery: Some(35),
        };
        f.heartbeat("v1", heartbeat, T0).unwrap();
        f.error_report("v1", &[("BRAKE_SENSOR", 1)], T0 + 1)
            .unwrap();
        let told = notifications(&drain(&mut f));
        assert!(matches!(
            told.as_slice(),
            [Notification::HardwareFault { battery: Some(35), model: Some(m), .. }] if m == "e-bike"
        ));
    }

    #[test]
    fn a_refused_heartbeat_records_nothing() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.decommission("v1", "ana", T0).unwrap();
        let heartbeat = Heartbeat {
            battery: Some(50),
            ..BARE
        };
        assert_eq!(
            f.heartbeat("v1", heartbeat, T0 + 1),
            Err(RulesError::Decommissioned("v1".into()))
        );
        assert!(f.vehicle("v1").is_none());
    }

    #[test]
    fn flapping_is_reported_once_per_episode() {
        let mut f = fleet();
        let mut now = T0;
        let mut flapping = 0;
        f.heartbeat("v1", BARE, now).unwrap();
        for _ in 0..6 {
            now += TIMEOUT;
            f.tick(now);
            now += 1_000;
            f.heartbeat("v1", BARE, now).unwrap();
            flapping += drain(&mut f)
                .iter()
                .filter(|e| matches!(e, Effect::Notify(Notification::Flapping { .. })))
                .count();
        }
        assert_eq!(flapping, 1);
    }
}
