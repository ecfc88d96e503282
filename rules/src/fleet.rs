//! The fleet: the public face of the rules engine. It owns the vehicles, the deadline
//! index, the mass-loss guard and the SLI ledger; the work itself is done in `uplink`,
//! `manual`, `sweep` and `restore`.

use crate::burn::Alerts;
use crate::deadlines::Deadlines;
use crate::ledger::{SliLedger, MINUTE};
use crate::mass_loss::MassLossGuard;
use crate::registry::Registry;
use crate::settings::Settings;
use crate::timeouts::Timeouts;
use crate::vehicle::{Silence, SliClass, Vehicle};
use crate::{
    Cause, Command, CommandKind, Effect, Heartbeat, Reason, ReasonChange, RulesConfig, RulesError,
    ServiceInOutcome, ServiceState, SliReport, Transition, UnixMs,
};

/// Capacity of the effect buffer kept between calls (a few MB); more is freed once drained.
const EFFECTS_KEPT: usize = 1 << 16;

/// A read-only view of one vehicle, for the ops API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VehicleView {
    /// The vehicle id.
    pub id: String,
    /// Desired state (in service exactly when `reasons` is empty).
    pub state: ServiceState,
    /// Out-of-service reasons.
    pub reasons: Vec<Reason>,
    /// Last uplink (server time).
    pub last_seen: UnixMs,
    /// Model from the last heartbeat that named one.
    pub model: Option<String>,
    /// The state the vehicle last reported it applies, if it ever did.
    pub reported: Option<ServiceState>,
    /// The battery level it last reported, in percent.
    pub battery: Option<u8>,
    /// Silent, but its service-out is held by a mass-loss incident (or pending while a
    /// possible incident is recognised).
    pub held: bool,
    /// Per error code: total reports since registration (kept across restarts by an owner
    /// that checkpoints them: [`crate::VehicleSnapshot::error_counts`]), sorted by code.
    /// Past 64 distinct codes the rest are summed under `"other"`.
    pub error_counts: Vec<(String, u64)>,
}

/// The fleet's rules state. See the crate docs.
pub struct Fleet {
    pub(crate) settings: Settings,
    pub(crate) timeouts: Timeouts,
    pub(crate) registry: Registry,
    pub(crate) deadlines: Deadlines,
    pub(crate) guard: MassLossGuard,
    pub(crate) ledger: SliLedger,
    pub(crate) alerts: Alerts,
    pub(crate) effects: Vec<Effect>,
    /// The latest `now` seen: a call with an older one is taken as happening now.
    pub(crate) clock: UnixMs,
    /// The minute whose alerts were evaluated last.
    pub(crate) evaluated_minute: u64,
    /// Set while the broker cannot see the fleet (see [`Fleet::link_lost`]).
    pub(crate) blind: Option<crate::blind::Blind>,
    /// Restored from a standby's watch: the watch saw the fleet until the engine's own
    /// link came up, so the first end of blindness keeps the grace where the restore put
    /// it instead of starting one.
    pub(crate) watched_until_link: bool,
    /// The configured journeys, in config order.
    pub(crate) journeys: Vec<crate::journey::Tracked>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(config: RulesConfig, now: UnixMs) -> Fleet {
        let settings = Settings::new(&config);
        Fleet {
            timeouts: Timeouts::new(&config.heartbeat),
            registry: Registry::default(),
            deadlines: Deadlines::default(),
            guard: MassLossGuard::new(&config.mass_loss),
            ledger: SliLedger::new(now, settings.slo_window_ms),
            alerts: Alerts::default(),
            effects: Vec::new(),
            clock: now,
            evaluated_minute: now / MINUTE,
            blind: None,
            watched_until_link: false,
            journeys: config
                .journeys
                .iter()
                .map(|j| crate::journey::Tracked::new(j, now))
                .collect(),
            settings,
        }
    }

    /// A heartbeat, with what it says about the vehicle (see [`Heartbeat`]). Registers an
    /// unknown vehicle.
    pub fn heartbeat(
        &mut self,
        id: &str,
        heartbeat: Heartbeat<'_>,
        now: UnixMs,
    ) -> Result<(), RulesError> {
        let now = self.observe(now);
        let slot = self.resolve(id, now)?;
        self.on_heartbeat(slot, &heartbeat, now);
        Ok(())
    }

    /// An error report: `(code, count)` pairs. Any uplink proves connectivity.
    pub fn error_report(
        &mut self,
        id: &str,
        errors: &[(&str, u32)],
        now: UnixMs,
    ) -> Result<(), RulesError> {
        let now = self.observe(now);
        let slot = self.resolve(id, now)?;
        self.on_errors(slot, errors, now);
        Ok(())
    }

    /// Any other uplink (an ack): proves connectivity, moves the deadline.
    pub fn seen(&mut self, id: &str, now: UnixMs) -> Result<(), RulesError> {
        let now = self.observe(now);
        let slot = self.resolve(id, now)?;
        self.touch(slot, now);
        self.end_incident_if_over(now, false);
        Ok(())
    }

    /// A person takes the vehicle out (`maintenance`).
    pub fn service_out(
        &mut self,
        id: &str,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> Result<ServiceState, RulesError> {
        let now = self.observe(now);
        let slot = self.tracked(id)?;
        Ok(self.take_out(slot, operator, note, now))
    }

    /// A person puts the vehicle back: clears hardware faults and maintenance, never
    /// `heartbeat_lost`; the outcome says what remains.
    pub fn service_in(
        &mut self,
        id: &str,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> Result<ServiceInOutcome, RulesError> {
        let now = self.observe(now);
        let slot = self.tracked(id)?;
        Ok(self.put_back(slot, operator, note, now))
    }

    /// Removes the vehicle from the fleet and the SLI; its later messages are refused.
    pub fn decommission(
        &mut self,
        id: &str,
        operator: &str,
        now: UnixMs,
    ) -> Result<(), RulesError> {
        let now = self.observe(now);
        let slot = self.tracked(id)?;
        self.remove(slot, operator, now);
        Ok(())
    }

    /// The next instant at which [`Fleet::tick`] has work: a heartbeat deadline, a held or
    /// pending vehicle's release, the end of a mass-loss incident, or a minute boundary for
    /// the SLO alerts. `None` when nothing is due until another call changes the fleet: in
    /// practice only an empty fleet whose SLI history has left the burn-rate windows and
    /// with no alert firing, since a tracked vehicle has a deadline or counts in the SLI.
    /// An earlier instant than needed may be named (waking early is harmless).
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        self.next_wakeup()
    }

    /// Processes every deadline up to `now`.
    pub fn tick(&mut self, now: UnixMs) {
        self.sweep(now);
    }

    /// Takes the decisions made so far, oldest first.
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// The SLI, SLO budget and burn rates, integrated up to `now`.
    pub fn sli(&mut self, now: UnixMs) -> SliReport {
        let now = self.observe(now);
        self.ledger.advance(now);
        crate::sli::report(
            &self.ledger,
            &self.alerts,
            self.settings.slo_target,
            self.settings.slo_window_ms,
            now,
        )
    }

    /// One vehicle.
    pub fn vehicle(&self, id: &str) -> Option<VehicleView> {
        let slot = self.registry.find(id)?;
        self.registry.get(slot).map(|v| self.view(v))
    }

    /// Every vehicle, in id order, optionally only those in `state`.
    pub fn vehicles(&self, state: Option<ServiceState>) -> Vec<VehicleView> {
        let mut chosen: Vec<&Vehicle> = self
            .registry
            .iter()
            .filter(|v| state.is_none_or(|s| v.state() == s))
            .collect();
        chosen.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        chosen.into_iter().map(|v| self.view(v)).collect()
    }

    /// Tracked vehicles (decommissioned excluded).
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// No vehicle tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn view(&self, v: &Vehicle) -> VehicleView {
        VehicleView {
            id: v.id.to_string(),
            state: v.state(),
            reasons: v.reasons(),
            last_seen: v.last_seen,
            model: self.timeouts.name(v.model).map(str::to_owned),
            reported: v.reported,
            battery: v.battery,
            held: matches!(v.silence, Silence::Pending | Silence::Held),
            error_counts: v
                .extra
                .as_ref()
                .and_then(|x| x.errors.as_ref())
                .map(|e| e.counts())
                .unwrap_or_default(),
        }
    }

    /// Moves the clock forward to `now` and returns the time to act at. Also gives back the
    /// memory of a big burst of effects (a mass loss) once the owner has drained it.
    pub(crate) fn observe(&mut self, now: UnixMs) -> UnixMs {
        if self.effects.is_empty() && self.effects.capacity() > EFFECTS_KEPT {
            self.effects.shrink_to(EFFECTS_KEPT);
        }
        self.clock = self.clock.max(now);
        self.clock
    }

    /// The slot of a tracked vehicle, for a person's call.
    fn tracked(&self, id: &str) -> Result<u32, RulesError> {
        match self.registry.find(id) {
            Some(slot) => Ok(slot),
            None if self.registry.is_decommissioned(id) => {
                Err(RulesError::Decommissioned(id.to_owned()))
            }
            None => Err(RulesError::UnknownVehicle(id.to_owned())),
        }
    }

    pub(crate) fn class_of(&self, slot: u32) -> SliClass {
        self.registry.get(slot).map_or(SliClass::Uncounted, |v| {
            v.sli_class(self.settings.maintenance_bad)
        })
    }

    /// Applies `change` to the vehicle in `slot` and re-counts it in the SLI as of `at` if
    /// that moved it between good, bad and uncounted; `None`, and nothing done, for an empty
    /// slot. Changes that can move a vehicle's class go through here, so none is missed.
    pub(crate) fn reclassify<R>(
        &mut self,
        slot: u32,
        at: UnixMs,
        change: impl FnOnce(&mut Vehicle) -> R,
    ) -> Option<R> {
        let maintenance_bad = self.settings.maintenance_bad;
        let v = self.registry.get_mut(slot)?;
        let before = v.sli_class(maintenance_bad);
        let out = change(v);
        let after = v.sli_class(maintenance_bad);
        self.recount(before, after, at);
        Some(out)
    }

    /// Re-counts a vehicle in the SLI, the counts having held until `at`. Integrating only
    /// on a change keeps heartbeats free of ledger work.
    pub(crate) fn recount(&mut self, before: SliClass, after: SliClass, at: UnixMs) {
        if before == after {
            return;
        }
        self.ledger.advance(at);
        self.ledger.shift(before, after);
    }

    /// Announces a change of the vehicle's reasons (its state before was `from`): the
    /// transition, then the command when the state flipped.
    pub(crate) fn announce(
        &mut self,
        slot: u32,
        from: ServiceState,
        change: ReasonChange,
        cause: Cause,
        at: UnixMs,
    ) {
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        let to = v.state();
        let reasons = v.reasons();
        let vehicle = v.id.to_string();
        let flipped = from != to;
        if flipped {
            v.last_command_at = at;
        }
        self.effects.push(Effect::Transition(Transition {
            vehicle: vehicle.clone(),
            from,
            to,
            change,
            reasons: reasons.clone(),
            cause,
            at,
        }));
        if flipped {
            self.effects.push(Effect::Command(command_for(
                vehicle, to, reasons, at, false,
            )));
        }
    }
}

/// The command that applies `state`.
pub(crate) fn command_for(
    vehicle: String,
    state: ServiceState,
    reasons: Vec<Reason>,
    at: UnixMs,
    resend: bool,
) -> Command {
    let (command, reasons) = match state {
        ServiceState::InService => (CommandKind::ServiceIn, Vec::new()),
        ServiceState::OutOfService => (CommandKind::ServiceOut, reasons),
    };
    Command {
        vehicle,
        command,
        reasons,
        issued_at: at,
        resend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn the_fleet_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Fleet>();
    }

    #[test]
    fn vehicles_are_listed_in_id_order_and_filtered_by_state() {
        let mut f = fleet();
        for id in ["c", "a", "b"] {
            f.heartbeat(id, BARE, T0).unwrap();
        }
        f.service_out("b", "ana", "", T0).unwrap();
        let ids = |views: Vec<VehicleView>| views.into_iter().map(|v| v.id).collect::<Vec<_>>();
        assert_eq!(ids(f.vehicles(None)), ["a", "b", "c"]);
        assert_eq!(ids(f.vehicles(Some(ServiceState::InService))), ["a", "c"]);
        assert_eq!(ids(f.vehicles(Some(ServiceState::OutOfService))), ["b"]);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn manual_calls_on_an_unknown_vehicle_are_refused() {
        let mut f = fleet();
        assert_eq!(
            f.service_out("ghost", "ana", "", T0),
            Err(RulesError::UnknownVehicle("ghost".into()))
        );
        assert!(matches!(
            f.service_in("ghost", "ana", "", T0),
            Err(RulesError::UnknownVehicle(_))
        ));
        assert!(matches!(
            f.decommission("ghost", "ana", T0),
            Err(RulesError::UnknownVehicle(_))
        ));
        assert!(f.is_empty());
        assert_eq!(f.drain_effects().count(), 0);
    }

    #[test]
    fn a_reclassified_vehicle_counts_in_its_new_class_from_the_given_time() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        let slot = f.registry.find("v1").unwrap();
        // Held: bad in the SLI, no reason, so no transition either.
        assert_eq!(
            f.reclassify(slot, T0 + MIN, |v| v.silence = Silence::Held),
            Some(())
        );
        assert_eq!(f.reclassify(slot + 1, T0 + MIN, |_| ()), None);
        let sli = f.sli(T0 + 2 * MIN);
        assert!((sli.window_sli - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_older_now_is_taken_as_the_latest_time_seen() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0 + 10).unwrap();
        f.heartbeat("v1", BARE, T0).unwrap();
        assert_eq!(f.vehicle("v1").map(|v| v.last_seen), Some(T0 + 10));
    }
}
