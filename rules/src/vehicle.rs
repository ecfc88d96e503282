//! One vehicle's record: its reasons and the little state the rules need. Kept compact
//! because a broker holds a million of them; the rarely used parts (faults, maintenance,
//! error windows, flap history) live behind one optional box.

use std::sync::Arc;

use crate::deadlines::NOT_QUEUED;
use crate::faults::ErrorLog;
use crate::flap::FlapHistory;
use crate::timeouts::{ModelId, NO_MODEL};
use crate::{Reason, ServiceState, UnixMs};

/// `Vehicle::last_command_at` when no command was ever sent.
pub(crate) const NEVER: UnixMs = UnixMs::MAX;

/// Where a vehicle stands on heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Silence {
    /// Its deadline is ahead.
    Talking,
    /// Past its deadline while a mass-loss wave is building: no transition yet.
    Pending,
    /// Past its deadline during a mass-loss incident that holds service-outs.
    Held,
    /// `heartbeat_lost` is set.
    Lost,
}

/// How a vehicle counts in the SLI right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SliClass {
    /// Good and valid.
    Good,
    /// Valid, not good.
    Bad,
    /// Neither (maintenance only, or not in the fleet).
    Uncounted,
}

/// A person's service-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Maintenance {
    pub(crate) by: String,
    pub(crate) note: String,
    pub(crate) since: UnixMs,
}

/// A journey's `journey_failures` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JourneyHold {
    pub(crate) journey: Box<str>,
    pub(crate) failures: u32,
    pub(crate) since: UnixMs,
}

/// The parts most vehicles never need. Each part is boxed again where that keeps a vehicle
/// that only ever flapped (the common case) small.
#[derive(Default)]
pub(crate) struct Extra {
    /// Active hardware faults, sorted by code.
    pub(crate) faults: Vec<(Box<str>, UnixMs)>,
    pub(crate) maintenance: Option<Box<Maintenance>>,
    pub(crate) errors: Option<Box<ErrorLog>>,
    pub(crate) flap: FlapHistory,
    /// Active `journey_failures`, in the order they were set. Boxed: 8 B in every Extra
    /// instead of a Vec's 24, for the few vehicles that ever have one.
    #[allow(clippy::box_collection)]
    pub(crate) journeys: Option<Box<Vec<JourneyHold>>>,
}

impl Extra {
    pub(crate) fn errors_mut(&mut self) -> &mut ErrorLog {
        self.errors.get_or_insert_with(Box::default)
    }

    pub(crate) fn journey_holds(&self) -> &[JourneyHold] {
        self.journeys.as_deref().map_or(&[], Vec::as_slice)
    }

    pub(crate) fn holds_journey(&self, journey: &str) -> bool {
        self.journey_holds().iter().any(|h| &*h.journey == journey)
    }

    /// Sets `journey_failures{journey}` unless it is set already.
    pub(crate) fn add_journey(&mut self, journey: &str, failures: u32, since: UnixMs) {
        if !self.holds_journey(journey) {
            self.journeys
                .get_or_insert_with(Box::default)
                .push(JourneyHold {
                    journey: journey.into(),
                    failures,
                    since,
                });
        }
    }

    /// Clears `journey_failures{journey}` (the first one with `None`), if set.
    pub(crate) fn remove_journey(&mut self, journey: Option<&str>) -> Option<JourneyHold> {
        let holds = self.journeys.as_mut()?;
        let i = holds
            .iter()
            .position(|h| journey.is_none_or(|j| &*h.journey == j))?;
        let hold = holds.remove(i);
        if holds.is_empty() {
            self.journeys = None;
        }
        Some(hold)
    }

    pub(crate) fn has_fault(&self, code: &str) -> bool {
        self.faults
            .binary_search_by(|(c, _)| (**c).cmp(code))
            .is_ok()
    }

    /// Sets `code` unless it is set already.
    pub(crate) fn add_fault(&mut self, code: &str, since: UnixMs) {
        if let Err(at) = self.faults.binary_search_by(|(c, _)| (**c).cmp(code)) {
            self.faults.insert(at, (code.into(), since));
        }
    }
}

/// One tracked vehicle.
pub(crate) struct Vehicle {
    pub(crate) id: Arc<str>,
    /// Last uplink of any kind (server time).
    pub(crate) last_seen: UnixMs,
    /// Last heartbeat: recovery counts consecutive heartbeats.
    pub(crate) last_heartbeat: UnixMs,
    /// The deadline of its live entry in the deadline heap, or `NOT_QUEUED`.
    pub(crate) heap_at: UnixMs,
    /// When `heartbeat_lost` was set (meaningful while `silence == Lost`).
    pub(crate) lost_since: UnixMs,
    /// The last command sent, resend or not (bounds resends).
    pub(crate) last_command_at: UnixMs,
    pub(crate) extra: Option<Box<Extra>>,
    /// Consecutive heartbeats since `heartbeat_lost` was set.
    pub(crate) streak: u32,
    pub(crate) model: ModelId,
    pub(crate) silence: Silence,
    pub(crate) reported: Option<ServiceState>,
    /// Last battery level reported, in percent.
    pub(crate) battery: Option<u8>,
    /// Counted as silent by the current mass-loss incident.
    pub(crate) wave_member: bool,
}

impl Vehicle {
    pub(crate) fn new(id: Arc<str>, now: UnixMs) -> Vehicle {
        Vehicle {
            id,
            last_seen: now,
            last_heartbeat: now,
            heap_at: NOT_QUEUED,
            lost_since: 0,
            last_command_at: NEVER,
            extra: None,
            streak: 0,
            model: NO_MODEL,
            silence: Silence::Talking,
            reported: None,
            battery: None,
            wave_member: false,
        }
    }

    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// A hardware fault or a journey's failures: a rule found it broken.
    fn faulted(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|x| !x.faults.is_empty() || x.journeys.is_some())
    }

    fn in_maintenance(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| x.maintenance.is_some())
    }

    /// Out exactly when some reason holds (a pending or held vehicle has none yet).
    pub(crate) fn state(&self) -> ServiceState {
        if self.silence == Silence::Lost || self.faulted() || self.in_maintenance() {
            ServiceState::OutOfService
        } else {
            ServiceState::InService
        }
    }

    /// Its reasons: `heartbeat_lost`, then faults by code, journey failures, maintenance.
    pub(crate) fn reasons(&self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if self.silence == Silence::Lost {
            reasons.push(Reason::HeartbeatLost {
                since: self.lost_since,
            });
        }
        if let Some(x) = &self.extra {
            reasons.extend(x.faults.iter().map(|(code, since)| Reason::HardwareFault {
                code: code.to_string(),
                since: *since,
            }));
            reasons.extend(x.journey_holds().iter().map(|h| Reason::JourneyFailures {
                journey: h.journey.to_string(),
                failures: h.failures,
                since: h.since,
            }));
            if let Some(m) = &x.maintenance {
                reasons.push(Reason::Maintenance {
                    by: m.by.clone(),
                    note: m.note.clone(),
                    since: m.since,
                });
            }
        }
        reasons
    }

    /// Silent vehicles (pending and held too) and faulted ones (hardware or journey) are
    /// bad; maintenance alone
    /// is excluded unless configured as bad.
    pub(crate) fn sli_class(&self, maintenance_bad: bool) -> SliClass {
        if self.silence != Silence::Talking || self.faulted() {
            SliClass::Bad
        } else if self.in_maintenance() {
            if maintenance_bad {
                SliClass::Bad
            } else {
                SliClass::Uncounted
            }
        } else {
            SliClass::Good
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vehicle() -> Vehicle {
        Vehicle::new("v1".into(), 0)
    }

    #[test]
    fn reasons_come_in_a_stable_order_heartbeat_faults_by_code_then_maintenance() {
        let mut v = vehicle();
        v.extra_mut().maintenance = Some(Box::new(Maintenance {
            by: "ana".into(),
            note: "tyre".into(),
            since: 5,
        }));
        v.extra_mut().add_fault("MOTOR", 3);
        v.extra_mut().add_fault("BRAKE", 4);
        v.extra_mut().add_journey("unlock", 3, 6);
        v.silence = Silence::Lost;
        v.lost_since = 2;
        let kinds: Vec<String> = v
            .reasons()
            .iter()
            .map(|r| match r {
                Reason::HeartbeatLost { .. } => "hb".to_string(),
                Reason::HardwareFault { code, .. } => code.clone(),
                Reason::Maintenance { .. } => "maint".to_string(),
                Reason::JourneyFailures { journey, .. } => journey.clone(),
            })
            .collect();
        assert_eq!(kinds, ["hb", "BRAKE", "MOTOR", "unlock", "maint"]);
        assert_eq!(v.state(), ServiceState::OutOfService);
    }

    #[test]
    fn a_vehicle_without_reasons_is_in_service_even_while_held() {
        let mut v = vehicle();
        assert_eq!(v.state(), ServiceState::InService);
        v.silence = Silence::Held;
        assert_eq!(v.state(), ServiceState::InService);
        assert_eq!(v.sli_class(false), SliClass::Bad);
    }

    #[test]
    fn maintenance_alone_is_excluded_from_the_sli_unless_configured_bad() {
        let mut v = vehicle();
        v.extra_mut().maintenance = Some(Box::new(Maintenance {
            by: "ana".into(),
            note: String::new(),
            since: 0,
        }));
        assert_eq!(v.sli_class(false), SliClass::Uncounted);
        assert_eq!(v.sli_class(true), SliClass::Bad);
        v.extra_mut().add_fault("BRAKE", 1);
        assert_eq!(v.sli_class(false), SliClass::Bad);
    }

    #[test]
    fn the_records_stay_small() {
        assert!(std::mem::size_of::<Vehicle>() <= 80);
        // Boxed per vehicle that needs it (an error report, a flap): 88 B at most.
        assert!(std::mem::size_of::<Extra>() <= 88);
    }
}
