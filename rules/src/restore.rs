//! Rebuilding the fleet after a restart: reasons come back exactly as stored, and every
//! vehicle that was talking gets the restart grace counted from startup, so a broker
//! restart never mass-evicts the fleet. Nothing is announced: nothing changed. The SLI
//! history comes back too, with the broker's own downtime accounted for, not skipped.

use crate::vehicle::{Maintenance, Silence, SliClass, Vehicle};
use crate::{Fleet, Reason, SliMinute, UnixMs, VehicleSnapshot};

impl Fleet {
    /// Puts back the stored SLI history after [`Fleet::restore`] (before any other call)
    /// and accounts the gap from `saved_to` (the time the history was stored up to) to the
    /// restore as the broker's downtime: marked in each minute it covers (reported as
    /// [`crate::SliReport::downtime_ms`]) and, with `downtime_is_bad`, counted as valid but
    /// not good time for the fleet as restored, since no vehicle could reach the broker.
    /// Returns the downtime accounted (cut to the history kept).
    pub fn restore_sli<I>(&mut self, minutes: I, saved_to: UnixMs, downtime_is_bad: bool) -> u64
    where
        I: IntoIterator<Item = SliMinute>,
    {
        for m in minutes {
            self.ledger.import(m.minute, m.bucket());
        }
        let restored_at = self.ledger.clock();
        self.ledger
            .account_downtime(saved_to, restored_at, downtime_is_bad)
    }

    /// Puts back a vehicle's stored error counters (see [`VehicleView::error_counts`]);
    /// false when the vehicle is not in the fleet.
    ///
    /// [`VehicleView::error_counts`]: crate::VehicleView::error_counts
    pub fn restore_error_counts(&mut self, id: &str, counts: &[(String, u64)]) -> bool {
        let Some(v) = self
            .registry
            .find(id)
            .and_then(|s| self.registry.get_mut(s))
        else {
            return false;
        };
        if !counts.is_empty() {
            v.extra_mut().errors_mut().restore_counts(counts);
        }
        true
    }

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
        f.heartbeat("v1", BARE, restart + 10 * TIMEOUT).unwrap();
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn the_sli_history_continues_across_a_restart_and_the_downtime_is_counted_bad() {
        let mut before = Fleet::new(config(), T0);
        for id in ["a", "b"] {
            before.heartbeat(id, BARE, T0).unwrap();
        }
        let saved = before.sli_minutes(Fleet::minute_of(T0), T0 + 10 * MIN);
        let stored = vec![snapshot("a", vec![], T0), snapshot("b", vec![], T0)];
        let restart = T0 + 15 * MIN;
        let mut f = Fleet::restore(config(), stored, restart);
        assert_eq!(f.restore_sli(saved, T0 + 10 * MIN, true), 5 * MIN);
        let sli = f.sli(restart + 5 * MIN);
        // 10 good minutes, 5 down (bad), 5 good, for both vehicles.
        assert!((sli.window_sli - 15.0 / 20.0).abs() < 1e-9);
        assert_eq!(sli.downtime_ms, 5 * MIN);
        assert_eq!((sli.in_service, sli.fleet), (2, 2));
    }

    #[test]
    fn downtime_can_be_excluded_from_the_sli_and_is_still_reported() {
        let restart = T0 + 15 * MIN;
        let mut f = Fleet::restore(config(), vec![snapshot("a", vec![], T0)], restart);
        f.restore_sli(Vec::new(), T0 + 10 * MIN, false);
        let sli = f.sli(restart + 5 * MIN);
        assert_eq!(sli.window_sli, 1.0);
        assert_eq!(sli.downtime_ms, 5 * MIN);
    }

    #[test]
    fn stored_error_counters_come_back() {
        let restart = T0 + MIN;
        let mut f = Fleet::restore(config(), vec![snapshot("a", vec![], T0)], restart);
        let counts = vec![("MOTOR".to_string(), 7)];
        assert!(f.restore_error_counts("a", &counts));
        assert!(!f.restore_error_counts("ghost", &counts));
        f.error_report("a", &[("MOTOR", 1)], restart).unwrap();
        let view = f.vehicle("a").unwrap();
        assert_eq!(view.error_counts, [("MOTOR".to_string(), 8)]);
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
