//! Rebuilding the fleet after a restart from one stored value: reasons come back exactly as
//! stored, every vehicle that was talking gets the restart grace counted from startup (so a
//! restart never mass-evicts the fleet), and nothing is announced: nothing changed. The SLI
//! history comes back too, with the broker's own downtime accounted for, not skipped.

use crate::vehicle::{Maintenance, Silence, SliClass, Vehicle};
use crate::{AlertSeverity, Fleet, Reason, RulesConfig, SliMinute, UnixMs, VehicleSnapshot};

/// Everything the owner stored for [`Fleet::restore`]. The default restores nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// The vehicles with their reasons and error counters. Of two with the same id the
    /// first wins, error counters included.
    pub vehicles: Vec<VehicleSnapshot>,
    /// Ids decommissioned before the restart: refused from now on. An id also among
    /// `vehicles` stays tracked.
    pub decommissioned: Vec<String>,
    /// The SLI history, if one was stored; without it no downtime is accounted.
    pub sli: Option<SliHistory>,
    /// The burn-rate alerts firing when the broker stopped: they stay firing (no second
    /// "firing" notification) and resolve when the burn rates say so.
    pub alerts_firing: Vec<AlertSeverity>,
    /// The mass-loss incident open when the broker stopped, if any: it goes on, so its end
    /// is one notification about the same incident.
    pub mass_loss: Option<OpenIncident>,
    /// What a standby engine heard before it took over, if it watched the uplinks: the
    /// restart grace then counts from when it started watching, not from the restore.
    pub watched: Option<Watched>,
}

/// The uplinks a standby engine watched (without acting on them) until it took over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// When its uninterrupted watch began: a vehicle not heard since then has been silent
    /// at least that long. Never after the restore.
    pub since: UnixMs,
    /// When each vehicle was last heard (ids not among the stored vehicles are left for
    /// their next uplink to register).
    pub last_seen: Vec<(String, UnixMs)>,
}

/// A mass-loss incident that was open when the broker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenIncident {
    /// When it started.
    pub started_at: UnixMs,
    /// The threshold it crossed.
    pub threshold: usize,
}

/// The stored SLI history and how to account the gap since it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliHistory {
    /// Stored minutes; those outside the history kept are ignored.
    pub minutes: Vec<SliMinute>,
    /// Where the history was stored up to: the broker is taken as down from here until the
    /// restore.
    pub saved_to: UnixMs,
    /// Count the downtime as valid but not good time for the fleet as restored (no vehicle
    /// could reach the broker); otherwise it is only marked.
    pub downtime_is_bad: bool,
}

/// What [`Fleet::restore`] gives back.
pub struct RestoredFleet {
    /// The fleet, ready for calls.
    pub fleet: Fleet,
    /// The broker's downtime accounted in the SLI history, in ms (cut to the history kept;
    /// 0 without a stored history). Reported per minute as [`crate::SliReport::downtime_ms`].
    pub downtime_ms: u64,
}

impl Fleet {
    /// A fleet rebuilt at `now` from what the owner stored. Faults and maintenance come back
    /// as they were; if any vehicle was stored, the restart grace is counted from `now`
    /// (with none stored there is nobody to protect: a fresh start, no grace), or from when
    /// a standby began watching, with the last-seen times it heard.
    pub fn restore(config: RulesConfig, stored: Restore, now: UnixMs) -> RestoredFleet {
        let Restore {
            vehicles,
            decommissioned,
            sli,
            alerts_firing,
            mass_loss,
            watched,
        } = stored;
        let mut fleet = Fleet::new(config, now);
        fleet.watched_until_link = watched.is_some();
        fleet.load(vehicles, watched, now);
        for id in &decommissioned {
            fleet.registry.forbid(id);
        }
        // After the vehicles: downtime counted bad is counted for the fleet as restored.
        let downtime_ms = sli.map_or(0, |history| fleet.load_sli(history));
        fleet.alerts.restore(&alerts_firing);
        if let Some(incident) = mass_loss {
            fleet.reopen_incident(incident, now);
        }
        RestoredFleet { fleet, downtime_ms }
    }

    /// Goes on with an incident open at the stop. Its wave is what the store shows: the
    /// vehicles taken out for silence since the window before it started, and, when
    /// service-outs are held, the in-service vehicles silent for longer than their timeout
    /// (they were held: held again, not given the restart grace). Any uplink brings a
    /// member back, as before the restart.
    fn reopen_incident(&mut self, incident: OpenIncident, now: UnixMs) {
        self.guard.start(incident.threshold, now);
        let wave_from = incident.started_at.saturating_sub(self.guard.window_ms());
        let holding = self.guard.holding();
        let mut held = Vec::new();
        for (slot, v) in self.registry.iter_from(0) {
            let member = match v.silence {
                Silence::Lost => v.lost_since >= wave_from,
                Silence::Talking => {
                    holding
                        && v.state() == crate::ServiceState::InService
                        && v.last_seen.saturating_add(self.timeouts.timeout(v.model)) <= now
                }
                _ => false,
            };
            if member {
                held.push((slot, v.silence == Silence::Talking));
            }
        }
        for (slot, talking) in held {
            if let Some(v) = self.registry.get_mut(slot) {
                v.wave_member = true;
            }
            self.guard.member_joined(slot);
            if talking {
                self.reclassify(slot, now, |v| v.silence = Silence::Held);
            }
        }
    }

    fn load(&mut self, snapshots: Vec<VehicleSnapshot>, watched: Option<Watched>, now: UnixMs) {
        let (since, heard): (_, std::collections::HashMap<String, UnixMs>) = match watched {
            Some(w) => (w.since.min(now), w.last_seen.into_iter().collect()),
            None => (now, Default::default()),
        };
        if !snapshots.is_empty() {
            self.timeouts.restored_at = Some(since);
        }
        for s in snapshots {
            if self.registry.find(&s.id).is_some() {
                continue; // a duplicate: the first copy wins
            }
            let last_seen = heard
                .get(&s.id)
                .map_or(s.last_seen, |&t| t.min(now).max(s.last_seen));
            let mut v = Vehicle::new(s.id.as_str().into(), last_seen);
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
                    Reason::JourneyFailures {
                        journey,
                        failures,
                        since,
                    } => v.extra_mut().add_journey(&journey, failures, since),
                    Reason::Maintenance { by, note, since } => {
                        v.extra_mut().maintenance = Some(Box::new(Maintenance { by, note, since }));
                    }
                }
            }
            // Only a vehicle with counters gets the boxed extras.
            if !s.error_counts.is_empty() {
                v.extra_mut().errors_mut().restore_counts(&s.error_counts);
            }
            let class = v.sli_class(self.settings.maintenance_bad);
            let Some(slot) = self.registry.insert(v) else {
                break;
            };
            self.ledger.shift(SliClass::Uncounted, class);
            self.arm(slot);
        }
    }

    /// Imports the minutes, then accounts the gap from `saved_to` to the ledger's start (the
    /// restore) as downtime. Only right before the ledger integrates past its start.
    fn load_sli(&mut self, history: SliHistory) -> u64 {
        for m in history.minutes {
            self.ledger.import(m.minute, m.bucket());
        }
        let restored_at = self.ledger.clock();
        self.ledger
            .account_downtime(history.saved_to, restored_at, history.downtime_is_bad)
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
            error_counts: Vec::new(),
        }
    }

    /// A fleet restored from vehicles alone.
    fn restored(config: RulesConfig, vehicles: Vec<VehicleSnapshot>, now: UnixMs) -> Fleet {
        let stored = Restore {
            vehicles,
            ..Restore::default()
        };
        Fleet::restore(config, stored, now).fleet
    }

    /// A fleet restored from vehicles and an SLI history; the downtime accounted beside it.
    fn restored_with_history(
        vehicles: Vec<VehicleSnapshot>,
        minutes: Vec<SliMinute>,
        saved_to: UnixMs,
        downtime_is_bad: bool,
        now: UnixMs,
    ) -> (Fleet, u64) {
        let stored = Restore {
            vehicles,
            decommissioned: Vec::new(),
            sli: Some(SliHistory {
                minutes,
                saved_to,
                downtime_is_bad,
            }),
            ..Restore::default()
        };
        let RestoredFleet { fleet, downtime_ms } = Fleet::restore(config(), stored, now);
        (fleet, downtime_ms)
    }

    #[test]
    fn an_alert_firing_at_the_stop_is_firing_after_the_restart_and_resolves_once() {
        let stored = Restore {
            alerts_firing: vec![AlertSeverity::Page],
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, T0).fleet;
        assert_eq!(f.sli(T0).alerts_firing, [AlertSeverity::Page]);
        // Nothing burns now: the first evaluation resolves it, and only that.
        f.tick(T0 + MIN);
        let notes: Vec<Notification> = drain(&mut f)
            .into_iter()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some(n),
                _ => None,
            })
            .collect();
        assert!(
            matches!(
                notes.as_slice(),
                [Notification::SloAlert {
                    severity: AlertSeverity::Page,
                    state: AlertState::Resolved,
                    ..
                }]
            ),
            "{notes:?}"
        );
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
        let mut f = restored(config(), stored, restart);
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
    fn a_takeover_after_watching_gives_no_grace_to_the_silent_and_keeps_the_heard() {
        let takeover = T0 + 60 * MIN;
        let watch_from = takeover - TIMEOUT - MIN;
        let stored = Restore {
            vehicles: vec![
                snapshot("heard", vec![], T0),
                snapshot("silent", vec![], T0),
                snapshot("late", vec![], T0),
            ],
            watched: Some(Watched {
                since: watch_from,
                last_seen: vec![
                    ("heard".into(), takeover - 1_000),
                    ("late".into(), takeover + 5_000), // clamped to the takeover
                    ("stranger".into(), takeover - 1_000),
                ],
            }),
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, takeover).fleet;
        assert!(drain(&mut f).is_empty(), "a restore announces nothing");
        // Unheard for longer than its timeout while watched: out at the first tick, lost
        // since its deadline during the watch.
        f.tick(takeover);
        assert_eq!(
            reasons(&f, "silent"),
            [Reason::HeartbeatLost {
                since: watch_from + TIMEOUT
            }]
        );
        // Heard just before the takeover: its own deadline, no earlier, no grace later.
        f.tick(takeover - 1_000 + TIMEOUT - 1);
        assert_eq!(state(&f, "heard"), ServiceState::InService);
        f.tick(takeover - 1_000 + TIMEOUT);
        assert_eq!(state(&f, "heard"), ServiceState::OutOfService);
        f.tick(takeover + TIMEOUT - 1);
        assert_eq!(state(&f, "late"), ServiceState::InService);
        f.tick(takeover + TIMEOUT);
        assert_eq!(state(&f, "late"), ServiceState::OutOfService);
        assert!(
            f.vehicle("stranger").is_none(),
            "registers with its next uplink"
        );
    }

    #[test]
    fn the_engines_first_link_after_a_watch_keeps_the_grace_and_a_later_one_restarts_it() {
        let takeover = T0 + 60 * MIN;
        let how = Blindness {
            downtime_is_bad: true,
            alert_after: std::time::Duration::from_secs(60),
        };
        let stored = Restore {
            vehicles: vec![snapshot("v1", vec![], T0), snapshot("v2", vec![], T0)],
            watched: Some(Watched {
                since: takeover - 2 * TIMEOUT,
                last_seen: vec![("v2".into(), takeover - 1_000)],
            }),
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, takeover).fleet;
        // Blind until the engine's own link is up, 200 ms later. What was due before is
        // handled first: v1 was silent through the whole watch.
        f.link_lost(takeover, how);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
        assert_eq!(f.link_restored(takeover + 200), Some(200));
        // v2 keeps the deadline the watch gave it: no new grace from the first link.
        let due = takeover - 1_000 + TIMEOUT;
        f.tick(due - 1);
        assert_eq!(state(&f, "v2"), ServiceState::InService);
        f.tick(due);
        assert_eq!(state(&f, "v2"), ServiceState::OutOfService);
        // A later loss of the link is a blind stretch like any other: a grace after it.
        f.heartbeat("v3", BARE, due).unwrap();
        f.link_lost(due + 1_000, how);
        f.link_restored(due + 2_000);
        f.tick(due + TIMEOUT);
        assert_eq!(state(&f, "v3"), ServiceState::InService);
        f.tick(due + 2_000 + TIMEOUT);
        assert_eq!(state(&f, "v3"), ServiceState::OutOfService);
    }

    #[test]
    fn a_short_watch_still_gives_the_grace_from_when_it_began() {
        let takeover = T0 + 60 * MIN;
        let watch_from = takeover - MIN;
        let stored = Restore {
            vehicles: vec![snapshot("v1", vec![], T0)],
            watched: Some(Watched {
                since: watch_from,
                last_seen: Vec::new(),
            }),
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, takeover).fleet;
        f.tick(watch_from + TIMEOUT - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(watch_from + TIMEOUT);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn a_configured_restart_grace_replaces_the_timeout() {
        let mut cfg = config();
        cfg.heartbeat.restart_grace = Some(std::time::Duration::from_secs(60));
        let restart = T0 + 60 * MIN;
        let mut f = restored(cfg, vec![snapshot("v1", vec![], T0)], restart);
        f.tick(restart + MIN - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(restart + MIN);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn a_vehicle_heard_recently_keeps_its_own_later_deadline() {
        let restart = T0 + MIN;
        let mut f = restored(config(), vec![snapshot("v1", vec![], restart)], restart);
        f.tick(restart + TIMEOUT - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
    }

    #[test]
    fn a_vehicle_silent_before_the_restart_stays_out_until_a_heartbeat() {
        let lost = Reason::HeartbeatLost { since: T0 };
        let restart = T0 + 60 * MIN;
        let mut f = restored(
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
        let (mut f, downtime_ms) =
            restored_with_history(stored, saved, T0 + 10 * MIN, true, restart);
        assert_eq!(downtime_ms, 5 * MIN);
        let sli = f.sli(restart + 5 * MIN);
        // 10 good minutes, 5 down (bad), 5 good, for both vehicles.
        assert!((sli.window_sli - 15.0 / 20.0).abs() < 1e-9);
        assert_eq!(sli.downtime_ms, 5 * MIN);
        assert_eq!((sli.in_service, sli.fleet), (2, 2));
    }

    #[test]
    fn downtime_can_be_excluded_from_the_sli_and_is_still_reported() {
        let restart = T0 + 15 * MIN;
        let stored = vec![snapshot("a", vec![], T0)];
        let (mut f, _) = restored_with_history(stored, Vec::new(), T0 + 10 * MIN, false, restart);
        let sli = f.sli(restart + 5 * MIN);
        assert_eq!(sli.window_sli, 1.0);
        assert_eq!(sli.downtime_ms, 5 * MIN);
    }

    #[test]
    fn stored_error_counters_come_back() {
        let restart = T0 + MIN;
        let mut a = snapshot("a", vec![], T0);
        a.error_counts = vec![("MOTOR".to_string(), 7)];
        let mut f = restored(config(), vec![a], restart);
        f.error_report("a", &[("MOTOR", 1)], restart).unwrap();
        let view = f.vehicle("a").unwrap();
        assert_eq!(view.error_counts, [("MOTOR".to_string(), 8)]);
    }

    #[test]
    fn restored_vehicles_count_in_the_sli_as_they_stood() {
        let lost = Reason::HeartbeatLost { since: T0 };
        let restart = T0 + 60 * MIN;
        let mut f = restored(
            config(),
            vec![snapshot("a", vec![], T0), snapshot("b", vec![lost], T0)],
            restart,
        );
        let sli = f.sli(restart);
        assert_eq!((sli.in_service, sli.fleet), (1, 2));
    }

    #[test]
    fn a_whole_stored_value_comes_back_in_one_call() {
        let fault = Reason::HardwareFault {
            code: "BRAKE_SENSOR".into(),
            since: T0 + MIN,
        };
        let mut faulty = snapshot("faulty", vec![fault.clone()], T0 + 9 * MIN);
        faulty.error_counts = vec![("BRAKE_SENSOR".into(), 3), ("MOTOR".into(), 1)];
        let fine = snapshot("fine", vec![], T0 + 9 * MIN);
        let saved_to = T0 + 10 * MIN;
        let history: Vec<SliMinute> = (0..10)
            .map(|m| SliMinute {
                minute: Fleet::minute_of(T0) + m,
                good: MIN,
                valid: 2 * MIN,
                down_ms: 0,
            })
            .collect();
        let restart = T0 + 12 * MIN;
        let stored = Restore {
            vehicles: vec![faulty, fine],
            decommissioned: vec!["gone".into()],
            sli: Some(SliHistory {
                minutes: history,
                saved_to,
                downtime_is_bad: true,
            }),
            ..Restore::default()
        };
        let RestoredFleet {
            mut fleet,
            downtime_ms,
        } = Fleet::restore(config(), stored, restart);
        assert!(drain(&mut fleet).is_empty());
        assert_eq!(fleet.len(), 2);
        assert_eq!(reasons(&fleet, "faulty"), [fault]);
        assert_eq!(
            fleet.vehicle("faulty").map(|v| v.error_counts),
            Some(vec![("BRAKE_SENSOR".into(), 3), ("MOTOR".into(), 1)])
        );
        assert_eq!(
            fleet.heartbeat("gone", BARE, restart),
            Err(RulesError::Decommissioned("gone".into()))
        );
        assert_eq!(downtime_ms, 2 * MIN);
        let sli = fleet.sli(restart);
        assert_eq!(sli.downtime_ms, 2 * MIN);
        // 10 stored minutes half good, then 2 down minutes counted bad for both vehicles.
        assert!((sli.window_sli - 10.0 / 24.0).abs() < 1e-9);
    }

    #[test]
    fn of_two_stored_copies_of_a_vehicle_the_first_wins_with_its_error_counts() {
        let mut first = snapshot("a", vec![], T0);
        first.error_counts = vec![("MOTOR".into(), 1)];
        let mut second = snapshot("a", vec![Reason::HeartbeatLost { since: T0 }], T0);
        second.error_counts = vec![("MOTOR".into(), 9)];
        let f = restored(config(), vec![first, second], T0 + MIN);
        assert_eq!(f.len(), 1);
        let view = f.vehicle("a").unwrap();
        assert_eq!(view.state, ServiceState::InService);
        assert_eq!(view.error_counts, [("MOTOR".to_string(), 1)]);
    }

    #[test]
    fn a_decommissioned_id_that_is_also_stored_as_a_vehicle_stays_tracked() {
        let stored = Restore {
            vehicles: vec![snapshot("a", vec![], T0)],
            decommissioned: vec!["a".into()],
            sli: None,
            ..Restore::default()
        };
        let mut f = Fleet::restore(config(), stored, T0 + MIN).fleet;
        assert_eq!(f.heartbeat("a", BARE, T0 + MIN), Ok(()));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn without_a_stored_history_no_downtime_is_accounted() {
        let stored = Restore {
            vehicles: vec![snapshot("a", vec![], T0)],
            ..Restore::default()
        };
        let RestoredFleet {
            mut fleet,
            downtime_ms,
        } = Fleet::restore(config(), stored, T0 + 60 * MIN);
        assert_eq!(downtime_ms, 0);
        assert_eq!(fleet.sli(T0 + 61 * MIN).downtime_ms, 0);
    }

    #[test]
    fn a_restore_without_vehicles_is_a_fresh_start_without_grace() {
        let mut cfg = config();
        cfg.heartbeat.restart_grace = Some(std::time::Duration::from_millis(3 * TIMEOUT));
        let restart = T0 + 60 * MIN;
        let stored = Restore {
            decommissioned: vec!["gone".into()],
            ..Restore::default()
        };
        let mut f = Fleet::restore(cfg.clone(), stored, restart).fleet;
        f.heartbeat("new", BARE, restart).unwrap();
        f.tick(restart + TIMEOUT);
        assert_eq!(state(&f, "new"), ServiceState::OutOfService);
        // With a vehicle stored, a newcomer shares the grace.
        let mut f = restored(cfg, vec![snapshot("old", vec![], T0)], restart);
        f.heartbeat("new", BARE, restart).unwrap();
        f.tick(restart + TIMEOUT);
        assert_eq!(state(&f, "new"), ServiceState::InService);
    }
}
