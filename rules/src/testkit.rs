//! Helpers for the unit tests: a config with round numbers and effect filters.

use std::time::Duration;

use crate::*;

/// A start time on a minute boundary.
pub(crate) const T0: UnixMs = 28_333_340 * MIN;
pub(crate) const MIN: u64 = 60_000;
/// The default heartbeat timeout.
pub(crate) const TIMEOUT: u64 = 5 * MIN;
/// The e-bike model's timeout.
pub(crate) const EBIKE_TIMEOUT: u64 = 10 * MIN;
/// The command resend interval.
pub(crate) const RESEND: u64 = 30_000;

/// The defaults, plus an e-bike model, a one-report brake rule and an informational code.
pub(crate) fn config() -> RulesConfig {
    let mut c = RulesConfig::default();
    c.heartbeat
        .models
        .insert("e-bike".into(), Duration::from_millis(EBIKE_TIMEOUT));
    c.faults.codes.insert(
        "BRAKE_SENSOR".into(),
        FaultRule::Threshold {
            threshold: 1,
            window: Duration::from_secs(60),
        },
    );
    c.faults
        .codes
        .insert("LOW_TIRE_PRESSURE".into(), FaultRule::Informational);
    c
}

pub(crate) fn recovering_after(n: u32) -> RulesConfig {
    let mut c = config();
    c.heartbeat.recover_after = n;
    c
}

/// A heartbeat that says nothing but "I am here".
pub(crate) const BARE: Heartbeat<'static> = Heartbeat {
    model: None,
    reported: None,
    battery: None,
};

/// A heartbeat naming the model.
pub(crate) fn of_model(name: &str) -> Heartbeat<'_> {
    Heartbeat {
        model: Some(name),
        ..BARE
    }
}

/// A heartbeat reporting the state the vehicle applies.
pub(crate) fn reporting(state: ServiceState) -> Heartbeat<'static> {
    Heartbeat {
        reported: Some(state),
        ..BARE
    }
}

pub(crate) fn fleet() -> Fleet {
    Fleet::new(config(), T0)
}

pub(crate) fn drain(f: &mut Fleet) -> Vec<Effect> {
    f.drain_effects().collect()
}

pub(crate) fn transitions(effects: &[Effect]) -> Vec<Transition> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Transition(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn commands(effects: &[Effect]) -> Vec<Command> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Command(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn notifications(effects: &[Effect]) -> Vec<Notification> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn state(f: &Fleet, id: &str) -> ServiceState {
    f.vehicle(id)
        .map_or(ServiceState::OutOfService, |v| v.state)
}

pub(crate) fn reasons(f: &Fleet, id: &str) -> Vec<Reason> {
    f.vehicle(id).map(|v| v.reasons).unwrap_or_default()
}
