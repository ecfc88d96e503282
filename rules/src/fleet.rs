//! The fleet: every vehicle's state machine, the deadline index and the mass-loss guard.

use crate::{
    Effect, Reason, RulesConfig, RulesError, ServiceInOutcome, ServiceState, SliReport, UnixMs,
    VehicleSnapshot,
};

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
    /// Silent, but its service-out is held by a mass-loss incident.
    pub held: bool,
    /// Per error code: total reports since registration (or restart).
    pub error_counts: Vec<(String, u64)>,
}

/// The fleet's rules state. See the crate docs.
pub struct Fleet {
    _private: (),
}

impl Fleet {
    /// An empty fleet.
    pub fn new(config: RulesConfig, now: UnixMs) -> Fleet {
        let _ = (config, now);
        todo!()
    }

    /// A fleet rebuilt from stored vehicles after a restart. Faults and maintenance come
    /// back as they were; in-service vehicles get the restart grace counted from `now`.
    pub fn restore(config: RulesConfig, vehicles: Vec<VehicleSnapshot>, now: UnixMs) -> Fleet {
        let _ = (config, vehicles, now);
        todo!()
    }

    /// A heartbeat. Registers an unknown vehicle. `model` selects the timeout;
    /// `reported` is the state the vehicle says it applies (for command reconciliation).
    pub fn heartbeat(
        &mut self,
        id: &str,
        model: Option<&str>,
        reported: Option<ServiceState>,
        now: UnixMs,
    ) -> Result<(), RulesError> {
        let _ = (id, model, reported, now);
        todo!()
    }

    /// An error report: `(code, count)` pairs. Any uplink proves connectivity.
    pub fn error_report(
        &mut self,
        id: &str,
        errors: &[(&str, u32)],
        now: UnixMs,
    ) -> Result<(), RulesError> {
        let _ = (id, errors, now);
        todo!()
    }

    /// Any other uplink (an ack): proves connectivity, moves the deadline.
    pub fn seen(&mut self, id: &str, now: UnixMs) -> Result<(), RulesError> {
        let _ = (id, now);
        todo!()
    }

    /// A person takes the vehicle out (`maintenance`).
    pub fn service_out(
        &mut self,
        id: &str,
        operator: &str,
        note: &str,
        now: UnixMs,
    ) -> Result<ServiceState, RulesError> {
        let _ = (id, operator, note, now);
        todo!()
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
        let _ = (id, operator, note, now);
        todo!()
    }

    /// Removes the vehicle from the fleet and the SLI; its later messages are refused.
    pub fn decommission(&mut self, id: &str, operator: &str, now: UnixMs) -> Result<(), RulesError> {
        let _ = (id, operator, now);
        todo!()
    }

    /// The next instant at which [`Fleet::tick`] has work (a heartbeat deadline, a held
    /// vehicle's release, a minute boundary for the SLI buckets and alerts).
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        todo!()
    }

    /// Processes every deadline up to `now`.
    pub fn tick(&mut self, now: UnixMs) {
        let _ = now;
        todo!()
    }

    /// Takes the decisions made so far, oldest first.
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        todo!()
    }

    /// The SLI, SLO budget and burn rates, integrated up to `now`.
    pub fn sli(&mut self, now: UnixMs) -> SliReport {
        let _ = now;
        todo!()
    }

    /// One vehicle.
    pub fn vehicle(&self, id: &str) -> Option<VehicleView> {
        let _ = id;
        todo!()
    }

    /// Every vehicle, in id order, optionally only those in `state`.
    pub fn vehicles(&self, state: Option<ServiceState>) -> Vec<VehicleView> {
        let _ = state;
        todo!()
    }

    /// Tracked vehicles (decommissioned excluded).
    pub fn len(&self) -> usize {
        todo!()
    }

    /// No vehicle tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
