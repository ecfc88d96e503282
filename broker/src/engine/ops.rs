//! Requests from people (ops API, CLI, tests) to the engine, each answered on a oneshot.

use fleet_rules::{
    Fleet, RulesError, ServiceInOutcome, ServiceState, SliReport, UnixMs, VehicleView,
};
use tokio::sync::{mpsc, oneshot};

/// A request the engine answers.
#[derive(Debug)]
pub enum OpRequest {
    /// Manual service-in.
    ServiceIn {
        /// Vehicle.
        vehicle: String,
        /// Operator name.
        operator: String,
        /// Note.
        note: String,
        /// Answer.
        reply: oneshot::Sender<Result<ServiceInOutcome, RulesError>>,
    },
    /// Manual service-out (maintenance).
    ServiceOut {
        /// Vehicle.
        vehicle: String,
        /// Operator name.
        operator: String,
        /// Note.
        note: String,
        /// Answer.
        reply: oneshot::Sender<Result<ServiceState, RulesError>>,
    },
    /// Remove a vehicle from the fleet.
    Decommission {
        /// Vehicle.
        vehicle: String,
        /// Operator name.
        operator: String,
        /// Answer.
        reply: oneshot::Sender<Result<(), RulesError>>,
    },
    /// One vehicle's view.
    Vehicle {
        /// Vehicle.
        vehicle: String,
        /// Answer.
        reply: oneshot::Sender<Option<VehicleView>>,
    },
    /// Every vehicle, optionally in one state.
    Vehicles {
        /// Filter.
        state: Option<ServiceState>,
        /// Answer.
        reply: oneshot::Sender<Vec<VehicleView>>,
    },
    /// The SLI report.
    Sli {
        /// Answer.
        reply: oneshot::Sender<SliReport>,
    },
}

pub(super) fn handle(fleet: &mut Fleet, op: OpRequest, now: UnixMs) {
    // A requester that gave up has dropped its receiver: nothing to tell it.
    match op {
        OpRequest::ServiceIn {
            vehicle,
            operator,
            note,
            reply,
        } => {
            let _ = reply.send(fleet.service_in(&vehicle, &operator, &note, now));
        }
        OpRequest::ServiceOut {
            vehicle,
            operator,
            note,
            reply,
        } => {
            let _ = reply.send(fleet.service_out(&vehicle, &operator, &note, now));
        }
        OpRequest::Decommission {
            vehicle,
            operator,
            reply,
        } => {
            let _ = reply.send(fleet.decommission(&vehicle, &operator, now));
        }
        OpRequest::Vehicle { vehicle, reply } => {
            let _ = reply.send(fleet.vehicle(&vehicle));
        }
        OpRequest::Vehicles { state, reply } => {
            let _ = reply.send(fleet.vehicles(state));
        }
        OpRequest::Sli { reply } => {
            let _ = reply.send(fleet.sli(now));
        }
    }
}

/// The engine stopped before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine is not running (shutting down?)")]
pub struct EngineGone;

/// A cheap, cloneable way to ask the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<OpRequest>,
}

impl EngineHandle {
    /// A handle on the engine's ops queue.
    pub fn new(tx: mpsc::Sender<OpRequest>) -> EngineHandle {
        EngineHandle { tx }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> OpRequest,
    ) -> Result<T, EngineGone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| EngineGone)?;
        answer.await.map_err(|_| EngineGone)
    }

    /// Manual service-in.
    pub async fn service_in(
        &self,
        vehicle: &str,
        operator: &str,
        note: &str,
    ) -> Result<Result<ServiceInOutcome, RulesError>, EngineGone> {
        self.ask(|reply| OpRequest::ServiceIn {
            vehicle: vehicle.to_owned(),
            operator: operator.to_owned(),
            note: note.to_owned(),
            reply,
        })
        .await
    }

    /// Manual service-out.
    pub async fn service_out(
        &self,
        vehicle: &str,
        operator: &str,
        note: &str,
    ) -> Result<Result<ServiceState, RulesError>, EngineGone> {
        self.ask(|reply| OpRequest::ServiceOut {
            vehicle: vehicle.to_owned(),
            operator: operator.to_owned(),
            note: note.to_owned(),
            reply,
        })
        .await
    }

    /// Decommission.
    pub async fn decommission(
        &self,
        vehicle: &str,
        operator: &str,
    ) -> Result<Result<(), RulesError>, EngineGone> {
        self.ask(|reply| OpRequest::Decommission {
            vehicle: vehicle.to_owned(),
            operator: operator.to_owned(),
            reply,
        })
        .await
    }

    /// One vehicle.
    pub async fn vehicle(&self, vehicle: &str) -> Result<Option<VehicleView>, EngineGone> {
        self.ask(|reply| OpRequest::Vehicle {
            vehicle: vehicle.to_owned(),
            reply,
        })
        .await
    }

    /// Every vehicle, optionally in one state.
    pub async fn vehicles(
        &self,
        state: Option<ServiceState>,
    ) -> Result<Vec<VehicleView>, EngineGone> {
        self.ask(|reply| OpRequest::Vehicles { state, reply }).await
    }

    /// The SLI report.
    pub async fn sli(&self) -> Result<SliReport, EngineGone> {
        self.ask(|reply| OpRequest::Sli { reply }).await
    }
}
