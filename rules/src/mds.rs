//! Mapping transitions onto MDS 2.0 `event_types` and `vehicle_state`.

use crate::{Reason, ReasonChange, ServiceState, Transition};

/// The MDS 2.0 view of one transition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdsEvent {
    /// MDS `event_types`.
    pub event_types: Vec<&'static str>,
    /// MDS `vehicle_state` after the transition.
    pub vehicle_state: &'static str,
}

/// The MDS `vehicle_state` of a vehicle with these reasons: `available` with none,
/// `non_contactable` when silence is the only one, `non_operational` otherwise.
pub fn vehicle_state(reasons: &[Reason]) -> &'static str {
    if reasons.is_empty() {
        "available"
    } else if reasons
        .iter()
        .any(|r| !matches!(r, Reason::HeartbeatLost { .. }))
    {
        "non_operational"
    } else {
        "non_contactable"
    }
}

/// Maps a transition (DESIGN.md "MDS 2.0 mapping").
pub fn map(t: &Transition) -> MdsEvent {
    let state_after = vehicle_state;
    let event = match &t.change {
        ReasonChange::Set(Reason::HeartbeatLost { .. }) => "comms_lost",
        ReasonChange::Cleared(Reason::HeartbeatLost { .. }) => "comms_restored",
        ReasonChange::Set(_) | ReasonChange::Cleared(_) => "maintenance",
        ReasonChange::Decommissioned => {
            return MdsEvent {
                event_types: vec!["decommissioned"],
                vehicle_state: "removed",
            }
        }
    };
    let vehicle_state = match (t.to, &t.change) {
        // A silent vehicle cannot be reached whatever else holds it out.
        (ServiceState::OutOfService, ReasonChange::Set(Reason::HeartbeatLost { .. })) => {
            "non_contactable"
        }
        _ => state_after(&t.reasons),
    };
    MdsEvent {
        event_types: vec![event],
        vehicle_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cause;

    fn set(reason: Reason, reasons: Vec<Reason>) -> Transition {
        Transition {
            vehicle: "v1".into(),
            from: ServiceState::InService,
            to: ServiceState::OutOfService,
            change: ReasonChange::Set(reason),
            reasons,
            cause: Cause::Rule,
            at: 1,
        }
    }

    #[test]
    fn failing_journeys_map_like_a_hardware_fault_and_silence_wins() {
        let unlock = Reason::JourneyFailures {
            journey: "unlock".into(),
            failures: 3,
            since: 1,
        };
        let m = map(&set(unlock.clone(), vec![unlock.clone()]));
        assert_eq!(
            (m.event_types, m.vehicle_state),
            (vec!["maintenance"], "non_operational")
        );
        let lost = Reason::HeartbeatLost { since: 2 };
        let m = map(&set(lost.clone(), vec![lost, unlock]));
        assert_eq!(
            (m.event_types, m.vehicle_state),
            (vec!["comms_lost"], "non_contactable")
        );
    }
}
