//! The mass-loss guard through the public API: a network outage must not evict the fleet.
//! 1000 vehicles, threshold max(50, 20 %) = 200, onset 20, window 2 minutes.

use fleet_rules::{
    CommandKind, Effect, Fleet, Heartbeat, MassLossAction, Notification, OpenIncident, Reason,
    ReasonChange, Restore, RulesConfig, ServiceState, UnixMs, VehicleSnapshot,
};

const MIN: u64 = 60_000;
const T0: UnixMs = 28_333_340 * MIN;
const TIMEOUT: u64 = 5 * MIN;
const FLEET: usize = 1000;

fn id(i: usize) -> String {
    format!("v{i:04}")
}

fn config(action: MassLossAction) -> RulesConfig {
    let mut c = RulesConfig::default();
    c.mass_loss.action = action;
    c
}

/// 1000 vehicles heard at T0; the last `silent` of them never talk again, the rest
/// heartbeat every 30 s. Runs until `until`, ticking along.
fn outage(action: MassLossAction, silent: usize, until: UnixMs) -> (Fleet, Vec<Effect>) {
    let mut f = Fleet::new(config(action), T0);
    for i in 0..FLEET {
        f.heartbeat(&id(i), Heartbeat::default(), T0).unwrap();
    }
    f.drain_effects();
    let effects = run(&mut f, 0..FLEET - silent, T0, until);
    (f, effects)
}

/// Heartbeats from `talking` every 30 s and ticks from `from` (exclusive) to `until`.
fn run(f: &mut Fleet, talking: std::ops::Range<usize>, from: UnixMs, until: UnixMs) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut now = from;
    while now < until {
        now = (now + 30_000).min(until);
        for i in talking.clone() {
            f.heartbeat(&id(i), Heartbeat::default(), now).unwrap();
        }
        f.tick(now);
        effects.extend(f.drain_effects());
    }
    effects
}

fn losses(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Transition(t)
                if matches!(t.change, ReasonChange::Set(Reason::HeartbeatLost { .. })) =>
            {
                Some(t.vehicle.clone())
            }
            _ => None,
        })
        .collect()
}

fn commands(effects: &[Effect], kind: CommandKind) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Command(c) if c.command == kind))
        .count()
}

/// Notifications other than SLO alerts (a 30 % outage burns the budget, rightly).
fn notes(effects: &[Effect]) -> Vec<Notification> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(Notification::SloAlert { .. }) => None,
            Effect::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn held(f: &Fleet) -> usize {
    f.vehicles(None).iter().filter(|v| v.held).count()
}

#[test]
fn three_hundred_silent_together_start_one_incident_and_are_held_not_evicted() {
    let (mut f, effects) = outage(MassLossAction::Hold, 300, T0 + TIMEOUT + 3 * MIN);
    let announced = notes(&effects);
    assert_eq!(announced.len(), 1, "{announced:?}");
    match &announced[0] {
        Notification::MassLossStarted {
            silent,
            fleet,
            threshold,
            sample,
            holding,
            at,
        } => {
            assert_eq!((*silent, *fleet, *threshold), (200, 1000, 200));
            assert!(*holding);
            assert_eq!(*at, T0 + TIMEOUT);
            assert_eq!(sample.len(), 10);
        }
        other => panic!("expected MassLossStarted, got {other:?}"),
    }
    // At most the onset (20) were evicted before the incident was recognised.
    let evicted = losses(&effects);
    assert_eq!(evicted.len(), 20);
    assert_eq!(commands(&effects, CommandKind::ServiceOut), 20);
    assert_eq!(held(&f), 280);
    assert_eq!(f.vehicles(Some(ServiceState::OutOfService)).len(), 20);
    // Held vehicles still count as bad.
    let sli = f.sli(T0 + TIMEOUT + 3 * MIN);
    assert_eq!((sli.in_service, sli.fleet), (700, 1000));

    // The network comes back: every held vehicle just becomes normal again.
    let back = T0 + TIMEOUT + 3 * MIN + 10_000;
    for i in FLEET - 300..FLEET {
        f.heartbeat(&id(i), Heartbeat::default(), back).unwrap();
    }
    f.tick(back);
    let effects: Vec<Effect> = f.drain_effects().collect();
    assert_eq!(
        notes(&effects),
        [Notification::MassLossEnded {
            recovered: 300,
            still_silent: 0,
            at: back
        }]
    );
    assert_eq!(commands(&effects, CommandKind::ServiceOut), 0);
    // Only the 20 evicted before detection are told to come back.
    assert_eq!(commands(&effects, CommandKind::ServiceIn), 20);
    assert_eq!(held(&f), 0);
    assert_eq!(f.vehicles(Some(ServiceState::InService)).len(), FLEET);
    assert_eq!(f.sli(back).in_service, FLEET);
}

#[test]
fn with_service_out_they_are_all_evicted_but_announced_once() {
    let (f, effects) = outage(MassLossAction::ServiceOut, 300, T0 + TIMEOUT + 3 * MIN);
    let announced = notes(&effects);
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert!(matches!(
        announced[0],
        Notification::MassLossStarted { holding: false, .. }
    ));
    assert_eq!(losses(&effects).len(), 300);
    assert_eq!(commands(&effects, CommandKind::ServiceOut), 300);
    assert_eq!(held(&f), 0);
}

#[test]
fn a_held_vehicle_still_silent_when_the_incident_ends_is_evicted() {
    let start = T0 + TIMEOUT + 30_000;
    let (mut f, _) = outage(MassLossAction::Hold, 300, start);
    // All but the last 10 come back; they stay silent.
    let effects = run(&mut f, 0..FLEET - 10, start, start + 4 * MIN);
    let announced = notes(&effects);
    let recovered_at = start + 30_000;
    assert_eq!(
        announced,
        [Notification::MassLossEnded {
            recovered: 290,
            still_silent: 10,
            at: recovered_at + 2 * MIN
        }]
    );
    let evicted = losses(&effects);
    let expected: Vec<String> = (FLEET - 10..FLEET).map(id).collect();
    assert_eq!(evicted, expected);
    assert_eq!(commands(&effects, CommandKind::ServiceOut), 10);
    for v in &expected {
        let view = f.vehicle(v).unwrap();
        assert_eq!(
            view.reasons,
            [Reason::HeartbeatLost {
                since: T0 + TIMEOUT
            }]
        );
        assert!(!view.held);
    }
    assert_eq!(f.vehicles(Some(ServiceState::OutOfService)).len(), 10);
}

#[test]
fn a_wave_below_the_threshold_is_taken_out_once_it_leaves_the_window() {
    let (f, effects) = outage(MassLossAction::Hold, 100, T0 + TIMEOUT + 30_000);
    assert!(notes(&effects).is_empty());
    assert_eq!(losses(&effects).len(), 20);
    assert_eq!(held(&f), 80);
    let mut f = f;
    let effects = run(
        &mut f,
        0..FLEET - 100,
        T0 + TIMEOUT + 30_000,
        T0 + TIMEOUT + 3 * MIN,
    );
    assert!(notes(&effects).is_empty());
    assert_eq!(losses(&effects).len(), 80);
    assert_eq!(held(&f), 0);
    let lost_since: Vec<Reason> = f
        .vehicles(Some(ServiceState::OutOfService))
        .into_iter()
        .flat_map(|v| v.reasons)
        .collect();
    assert_eq!(lost_since.len(), 100);
    assert!(lost_since.iter().all(|r| *r
        == Reason::HeartbeatLost {
            since: T0 + TIMEOUT
        }));
}

#[test]
fn a_pending_vehicle_that_talks_again_just_becomes_normal() {
    let (mut f, _) = outage(MassLossAction::Hold, 100, T0 + TIMEOUT + 30_000);
    let pending = id(FLEET - 1);
    assert!(f.vehicle(&pending).unwrap().held);
    f.heartbeat(&pending, Heartbeat::default(), T0 + TIMEOUT + 40_000)
        .unwrap();
    let effects: Vec<Effect> = f.drain_effects().collect();
    assert!(effects.is_empty(), "{effects:?}");
    let view = f.vehicle(&pending).unwrap();
    assert!(!view.held);
    assert_eq!(view.state, ServiceState::InService);
}

/// What a store would hold of `f`: each vehicle's reasons and last-seen time.
fn stored(f: &Fleet) -> Vec<VehicleSnapshot> {
    f.vehicles(None)
        .into_iter()
        .map(|v| VehicleSnapshot {
            id: v.id,
            model: v.model,
            reasons: v.reasons,
            last_seen: v.last_seen,
            error_counts: v.error_counts,
        })
        .collect()
}

#[test]
fn an_incident_open_at_a_restart_goes_on_and_ends_once_when_its_vehicles_come_back() {
    let stop = T0 + TIMEOUT + 3 * MIN;
    let (f, effects) = outage(MassLossAction::Hold, 300, stop);
    let Some(Notification::MassLossStarted { at, threshold, .. }) =
        notes(&effects).first().cloned()
    else {
        panic!("no incident");
    };
    // The broker is down a minute; it comes back with the incident it stopped with.
    let restart = stop + MIN;
    let restored = Fleet::restore(
        config(MassLossAction::Hold),
        Restore {
            vehicles: stored(&f),
            mass_loss: Some(OpenIncident {
                started_at: at,
                threshold,
            }),
            ..Restore::default()
        },
        restart,
    );
    let mut f = restored.fleet;
    assert_eq!(
        held(&f),
        280,
        "the held vehicles are held again, not given grace"
    );
    assert_eq!(f.sli(restart).in_service, 700);
    // Well past the restart grace: nobody is evicted, no second incident.
    let effects = run(&mut f, 0..FLEET - 300, restart, restart + TIMEOUT + 3 * MIN);
    assert!(losses(&effects).is_empty(), "{:?}", losses(&effects));
    assert!(notes(&effects).is_empty(), "{:?}", notes(&effects));
    let back = restart + TIMEOUT + 3 * MIN + 10_000;
    for i in FLEET - 300..FLEET {
        f.heartbeat(&id(i), Heartbeat::default(), back).unwrap();
    }
    f.tick(back);
    let effects: Vec<Effect> = f.drain_effects().collect();
    assert_eq!(
        notes(&effects),
        [Notification::MassLossEnded {
            recovered: 300,
            still_silent: 0,
            at: back
        }]
    );
    assert_eq!(commands(&effects, CommandKind::ServiceIn), 20);
}

#[test]
fn without_the_open_incident_a_restart_would_evict_or_announce_the_silent_wave_again() {
    // The counterfactual of the test above: the same store, no incident restored.
    let stop = T0 + TIMEOUT + 3 * MIN;
    let (f, _) = outage(MassLossAction::Hold, 300, stop);
    let restart = stop + MIN;
    let mut f = Fleet::restore(
        config(MassLossAction::Hold),
        Restore {
            vehicles: stored(&f),
            ..Restore::default()
        },
        restart,
    )
    .fleet;
    assert_eq!(held(&f), 0);
    let effects = run(&mut f, 0..FLEET - 300, restart, restart + TIMEOUT + 3 * MIN);
    assert!(!losses(&effects).is_empty() || !notes(&effects).is_empty());
}
