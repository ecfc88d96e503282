//! Requests from people (ops API, CLI, tests) to the engine, each answered on a oneshot.

use fleet_rules::{
    Fleet, PageCursor, RulesError, ServiceInOutcome, ServiceState, SliReport, UnixMs,
    VehicleFilter, VehiclePage, VehicleView,
};
use tokio::sync::{mpsc, oneshot};

use super::commands::CommandTracker;
use super::snapshot::{CensusCache, EngineSnapshot};

/// Vehicles one page request may look at (a few milliseconds of engine time at most), so a
/// listing never stalls ingest however large the fleet and however rare the match.
pub const PAGE_SCAN_BUDGET: usize = 100_000;

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
    /// SLIs, census and command figures at once.
    Snapshot {
        /// Answer.
        reply: oneshot::Sender<EngineSnapshot>,
    },
    /// One page of a filtered listing.
    VehiclesPage {
        /// Which vehicles.
        filter: VehicleFilter,
        /// Where to start.
        cursor: PageCursor,
        /// At most this many.
        limit: usize,
        /// Answer.
        reply: oneshot::Sender<VehiclePage>,
    },
}

/// Sends a request's answer when called. The engine calls it once the batch holding the
/// request's effects is stored, so nobody learns of a change that a crash could undo.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

fn answer<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) -> Reply {
    // A requester that gave up has dropped its receiver: nothing to tell it.
    Box::new(move || {
        let _ = reply.send(value);
    })
}

/// Applies the request now; the answer is returned for the engine to send later.
pub(super) fn handle(
    fleet: &mut Fleet,
    commands: &mut CommandTracker,
    census: &mut CensusCache,
    op: OpRequest,
    now: UnixMs,
) -> Reply {
    if matches!(
        op,
        OpRequest::ServiceIn { .. } | OpRequest::ServiceOut { .. } | OpRequest::Decommission { .. }
    ) {
        census.invalidate();
    }
    match op {
        OpRequest::ServiceIn {
            vehicle,
            operator,
            note,
            reply,
        } => answer(reply, fleet.service_in(&vehicle, &operator, &note, now)),
        OpRequest::ServiceOut {
            vehicle,
            operator,
            note,
            reply,
        } => answer(reply, fleet.service_out(&vehicle, &operator, &note, now)),
        OpRequest::Decommission {
            vehicle,
            operator,
            reply,
        } => answer(reply, fleet.decommission(&vehicle, &operator, now)),
        OpRequest::Vehicle { vehicle, reply } => answer(reply, fleet.vehicle(&vehicle)),
        OpRequest::Vehicles { state, reply } => answer(reply, fleet.vehicles(state)),
        OpRequest::Sli { reply } => answer(reply, fleet.sli(now)),
        OpRequest::Snapshot { reply } => {
            let (census, breakdown) = census.get(fleet, now);
            let snapshot = EngineSnapshot {
                sli: fleet.sli(now),
                acks: commands.report(now),
                census,
                breakdown,
                unacked_commands: commands.unacked(),
                journeys: fleet.journey_statuses(now),
            };
            answer(reply, snapshot)
        }
        OpRequest::VehiclesPage {
            filter,
            cursor,
            limit,
            reply,
        } => answer(
            reply,
            fleet.vehicles_page(&filter, cursor, limit, PAGE_SCAN_BUDGET),
        ),
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

    /// SLIs, census and command figures at once.
    pub async fn snapshot(&self) -> Result<EngineSnapshot, EngineGone> {
        self.ask(|reply| OpRequest::Snapshot { reply }).await
    }

    /// One page of a filtered listing, in registration order.
    pub async fn vehicles_page(
        &self,
        filter: VehicleFilter,
        cursor: PageCursor,
        limit: usize,
    ) -> Result<VehiclePage, EngineGone> {
        self.ask(|reply| OpRequest::VehiclesPage {
            filter,
            cursor,
            limit,
            reply,
        })
        .await
    }

    /// Requests queued for the engine now, and the queue's capacity.
    pub fn queue_fill(&self) -> (usize, usize) {
        let max = self.tx.max_capacity();
        (max.saturating_sub(self.tx.capacity()), max)
    }
}
