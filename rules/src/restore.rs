//! Rebuilding the fleet after a restart: reasons come back exactly as stored, and every
//! vehicle that was talking gets the restart grace counted from startup, so a broker
//! restart never mass-evicts the fleet. Nothing is announced: nothing changed.

use crate::vehicle::{Maintenance, Silence, SliClass, Vehicle};
use crate::{Fleet, Reason, UnixMs, VehicleSnapshot};

impl Fleet {
    pub(crate) fn load(&mut self, snapshots: Vec<VehicleSnapshot>, now: UnixMs) {
        self.timeouts.restored_at = Some(now);
        for s in snapshots {
            if self.registry.find(&s.id).is_some() {
                continue; // a duplicate: the first copy wins
            }
            let mut v = Vehicle::new(s.id.as_str().into(), s.last_seen);
            if let Some(id) = s.model.as_deref().and_then(|m| self.timeouts.intern(m)) {
                v.model = id;
            }
            for reason in s.reasons {
                match reason {
                    Reason::HeartbeatLost { since } => {
                        v.silence = Silence::Lost;
                        v.lost_since = since;
                    }
                    Reason::HardwareFault { code, since } => v.extra_mut().add_fault(&code, since),
                    Reason::Maintenance { by, note, since } => {
                        v.extra_mut().maintenance = Some(Box::new(Maintenance { by, note, since }));
                    }
                }
            }
            let class = v.sli_class(self.settings.maintenance_bad);
            let Some(slot) = self.registry.insert(v) else {
                break;
            };
            self.ledger.shift(SliClass::Uncounted, class);
            self.arm(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    fn snapshot(id: &str, reasons: Vec<Reason>, last_seen: UnixMs) -> VehicleSnapshot {
        VehicleSnapshot {
            id: id.into(),
            model: None,
            reasons,
            last_seen,
        }
    }

    #[test]
    fn a_restart_restores_faults_and_maintenance_and_gives_grace() {
        let fault = Reason::HardwareFault {
            code: "BRAKE_SENSOR".into(),
            since: T0 - 1,
        };
        let maintenance = Reason::Maintenance {
            by: "ana".into(),
            note: "bell".into(),
            since: T0 - 2,
        };
        let restart = T0 + 60 * MIN;
        let stored = vec![
            snapshot("faulty", vec![fault.clone(), maintenance.clone()], T0),
            snapshot("fine", vec![], T0),
            snapshot("bike", vec![], T0),
        ];
        let mut stored = stored;
        stored[2].model = Some("e-bike".into());
        let mut f = Fleet::restore(config(), stored, restart);
        assert!(drain(&mut f).is_empty());
        assert_eq!(reasons(&f, "faulty"), [fault, maintenance]);
        assert_eq!(state(&f, "fine"), ServiceState::InService);
        // Long silent before the restart, yet nobody is evicted before the grace ends.
        f.tick(restart + TIMEOUT - 1);
        let effects = drain(&mut f);
        assert!(transitions(&effects).is_empty());
        assert!(commands(&effects).is_empty());
        assert_eq!(state(&f, "fine"), ServiceState::InService);
        f.tick(restart + TIMEOUT);
        assert_eq!(
            reasons(&f, "fine"),
            [Reason::HeartbeatLost {
                since: restart + TIMEOUT
            }]
        );
        // The e-bike's grace is its own, longer timeout.
        assert_eq!(state(&f, "bike"), ServiceState::InService);
        f.tick(restart + EBIKE_TIMEOUT);
        assert_eq!(state(&f, "bike"), ServiceState::OutOfService);
    }

    #[test]
    fn a_configured_restart_grace_replaces_the_timeout() {
        let mut cfg = config();
        cfg.heartbeat.restart_grace = Some(std::time::Duration::from_secs(60));
        let restart = T0 + 60 * MIN;
        let mut f = Fleet::restore(cfg, vec![snapshot("v1", vec![], T0)], restart);
        f.tick(restart + MIN - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(restart + MIN);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn a_vehicle_heard_recently_keeps_its_own_later_deadline() {
        let restart = T0 + MIN;
        let mut f = Fleet::restore(config(), vec![snapshot("v1", vec![], restart)], restart);
        f.tick(restart + TIMEOUT - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn a_vehicle_silent_before_the_restart_stays_out_until_a_heartbeat() {
        let lost = Reason::HeartbeatLost { since: T0 };
        let restart = T0 + 60 * MIN;
        let mut f = Fleet::restore(
            config(),
            vec![snapshot("v1", vec![lost.clone()], T0)],
            restart,
        );
        f.tick(restart + 10 * TIMEOUT);
        assert_eq!(reasons(&f, "v1"), [lost]);
        assert!(drain(&mut f).iter().all(|e| matches!(e, Effect::Notify(_))));
        f.heartbeat("v1", None, None, restart + 10 * TIMEOUT)
            .unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn restored_vehicles_count_in_the_sli_as_they_stood() {
        let lost = Reason::HeartbeatLost { since: T0 };
        let restart = T0 + 60 * MIN;
        let mut f = Fleet::restore(
            config(),
            vec![snapshot("a", vec![], T0), snapshot("b", vec![lost], T0)],
            restart,
        );
        let sli = f.sli(restart);
        assert_eq!((sli.in_service, sli.fleet), (1, 2));
    }
}
