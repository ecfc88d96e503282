//! The CMC SLI: good and valid vehicle-time in per-minute buckets, the SLO's error
//! budget, burn rates and the multi-window multi-burn-rate alert policy.

use serde::Serialize;

use crate::burn::{budget, burn_rates, Alerts};
use crate::ledger::SliLedger;
use crate::{AlertSeverity, BurnRates, UnixMs};

/// The SLI and SLO figures at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliReport {
    /// When computed.
    pub at: UnixMs,
    /// Vehicles counted good right now.
    pub in_service: usize,
    /// Vehicles counted valid right now (the active fleet, less excluded ones).
    pub fleet: usize,
    /// in_service / fleet right now (1.0 for an empty fleet).
    pub fraction: f64,
    /// good / valid vehicle-time over the SLO window (1.0 with no valid time).
    pub window_sli: f64,
    /// The SLO target.
    pub target: f64,
    /// The SLO window in ms.
    pub window_ms: u64,
    /// Share of the error budget left over the SLO window, negative when overspent. Once
    /// the history covers the window: 1 - (1 - window_sli) / (1 - target); before that,
    /// the budget of the unseen part of the window counts the current fleet as valid.
    pub error_budget_remaining: f64,
    /// Burn rates.
    pub burn: BurnRates,
    /// Alerts currently firing.
    pub alerts_firing: Vec<AlertSeverity>,
    /// How long the broker itself was down within the SLO window (from the stored
    /// history: see [`crate::SliHistory`]).
    pub downtime_ms: u64,
    /// How much of the SLO window the history covers (less than `window_ms` while the
    /// broker has not run, or kept history, for that long).
    pub covered_ms: u64,
}

/// The report at the ledger's clock `at`.
pub(crate) fn report(
    ledger: &SliLedger,
    alerts: &Alerts,
    target: f64,
    window_ms: u64,
    at: UnixMs,
) -> SliReport {
    let (good, valid) = ledger.counts();
    let fraction = if valid == 0 {
        1.0
    } else {
        good as f64 / valid as f64
    };
    let w = ledger.window(window_ms);
    let window_sli = if w.valid == 0 {
        1.0
    } else {
        w.good as f64 / w.valid as f64
    };
    SliReport {
        at,
        in_service: usize::try_from(good).unwrap_or(usize::MAX),
        fleet: usize::try_from(valid).unwrap_or(usize::MAX),
        fraction,
        window_sli,
        target,
        window_ms,
        error_budget_remaining: budget_remaining(ledger, w, valid, target, window_ms),
        burn: burn_rates(ledger, target),
        alerts_firing: alerts.firing(),
        downtime_ms: w.down,
        covered_ms: ledger.covered(window_ms),
    }
}

/// Share of the window's error budget left. The budget is `1 - target` of the valid
/// vehicle-time of the whole window; while the history is shorter than the window, the
/// part not yet seen counts the current fleet as valid, so one early outage spends its
/// true share of a 30-day budget instead of "all of it" on the first day. Once the history
/// covers the window this is exactly `1 - (1 - window_sli) / (1 - target)`.
fn budget_remaining(
    ledger: &SliLedger,
    w: crate::ledger::Bucket,
    valid_now: u64,
    target: f64,
    window_ms: u64,
) -> f64 {
    let unseen_ms = window_ms.saturating_sub(ledger.covered(window_ms));
    let allowance = budget(target) * (w.valid as f64 + valid_now as f64 * unseen_ms as f64);
    if allowance > 0.0 {
        1.0 - w.valid.saturating_sub(w.good) as f64 / allowance
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testkit::*;
    use crate::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// A config where nobody goes silent, so only faults move the SLI.
    fn never_silent() -> RulesConfig {
        let mut c = config();
        c.heartbeat.timeout = Duration::from_secs(30 * 24 * 3600);
        c
    }

    fn fleet_of(n: usize, config: RulesConfig) -> Fleet {
        let mut f = Fleet::new(config, T0);
        for i in 0..n {
            f.heartbeat(&format!("v{i:03}"), BARE, T0).unwrap();
        }
        f
    }

    #[test]
    fn ten_vehicles_with_one_out_for_six_of_sixty_minutes_give_an_sli_of_ninety_nine_percent() {
        let mut f = fleet_of(10, never_silent());
        f.error_report("v000", &[("BRAKE_SENSOR", 1)], T0 + 20 * MIN)
            .unwrap();
        assert_eq!(f.sli(T0 + 21 * MIN).in_service, 9);
        f.service_in("v000", "ana", "fixed", T0 + 26 * MIN).unwrap();
        let sli = f.sli(T0 + 60 * MIN);
        assert!(close(sli.window_sli, 0.99));
        assert_eq!((sli.in_service, sli.fleet, sli.fraction), (10, 10, 1.0));
        // 6 bad vehicle-minutes against 0.5 % of 30 days of 10 vehicles (2,160
        // vehicle-minutes): the first hour's outage spends its share, not the whole budget.
        assert!(close(sli.error_budget_remaining, 1.0 - 6.0 / 2160.0));
        assert!(close(sli.burn.h1, 2.0));
        assert!(close(sli.burn.m5, 0.0));
        assert!(close(sli.burn.m30, 0.0));
        assert!(close(sli.burn.d3, 2.0));
        assert_eq!(sli.window_ms, 30 * 24 * 60 * MIN);
    }

    #[test]
    fn once_the_history_covers_the_window_the_budget_is_the_classic_ratio() {
        let mut config = never_silent();
        config.slo.window = Duration::from_secs(3600);
        let mut f = fleet_of(10, config);
        f.error_report("v000", &[("BRAKE_SENSOR", 1)], T0 + 20 * MIN)
            .unwrap();
        f.service_in("v000", "ana", "fixed", T0 + 26 * MIN).unwrap();
        // 1 % bad over the whole 1-hour window against a 0.5 % budget: twice spent.
        let sli = f.sli(T0 + 60 * MIN);
        assert!(close(sli.error_budget_remaining, -1.0));
        // Half-way through, the unseen half of the window still holds its budget.
        let mut g = fleet_of(10, {
            let mut c = never_silent();
            c.slo.window = Duration::from_secs(3600);
            c
        });
        g.error_report("v000", &[("BRAKE_SENSOR", 1)], T0).unwrap();
        g.service_in("v000", "ana", "fixed", T0 + 3 * MIN).unwrap();
        let half = g.sli(T0 + 30 * MIN);
        // 3 bad vehicle-minutes against 0.5 % of 600 vehicle-minutes (3): all spent.
        assert!(close(half.error_budget_remaining, 0.0));
    }

    #[test]
    fn an_empty_fleet_reports_a_perfect_sli_and_no_burn() {
        let mut f = fleet();
        let sli = f.sli(T0 + 60 * MIN);
        assert_eq!((sli.fraction, sli.window_sli), (1.0, 1.0));
        assert_eq!(sli.burn, BurnRates::default());
        assert!(close(sli.error_budget_remaining, 1.0));
    }

    #[test]
    fn maintenance_alone_is_excluded_unless_configured_bad() {
        let mut f = fleet_of(4, never_silent());
        f.service_out("v000", "ana", "", T0).unwrap();
        let sli = f.sli(T0 + MIN);
        assert_eq!((sli.in_service, sli.fleet), (3, 3));
        let mut c = never_silent();
        c.slo.maintenance_counts_as_bad = true;
        let mut f = fleet_of(4, c);
        f.service_out("v000", "ana", "", T0).unwrap();
        let sli = f.sli(T0 + MIN);
        assert_eq!((sli.in_service, sli.fleet), (3, 4));
    }

    fn page_alerts(effects: &[Effect]) -> Vec<(AlertState, UnixMs)> {
        notifications(effects)
            .into_iter()
            .filter_map(|n| match n {
                Notification::SloAlert {
                    severity: AlertSeverity::Page,
                    state,
                    at,
                    ..
                } => Some((state, at)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_page_fires_when_one_hour_and_five_minutes_burn_above_fourteen_point_four_and_resolves() {
        let mut f = fleet_of(100, never_silent());
        // Six good hours first, so the 6h/30m pair stays below 6x.
        let bad_from = T0 + 6 * 60 * MIN;
        for m in 1..=360 {
            f.tick(T0 + m * MIN);
        }
        assert!(page_alerts(&drain(&mut f)).is_empty());
        for i in 0..10 {
            f.error_report(&format!("v{i:03}"), &[("BRAKE_SENSOR", 1)], bad_from)
                .unwrap();
        }
        // 10 % bad against a 0.5 % budget burns 20x: the 1h window passes 14.4x after
        // 44 minutes (43/60 * 20 = 14.33, 44/60 * 20 = 14.67).
        let mut alerts = Vec::new();
        for m in 1..=43 {
            f.tick(bad_from + m * MIN);
        }
        alerts.extend(page_alerts(&drain(&mut f)));
        assert!(alerts.is_empty());
        f.tick(bad_from + 44 * MIN);
        assert_eq!(
            page_alerts(&drain(&mut f)),
            [(AlertState::Firing, bad_from + 44 * MIN)]
        );
        assert!(f
            .sli(bad_from + 44 * MIN)
            .alerts_firing
            .contains(&AlertSeverity::Page));
        for m in 45..=50 {
            f.tick(bad_from + m * MIN);
        }
        for i in 0..10 {
            f.service_in(&format!("v{i:03}"), "ana", "fixed", bad_from + 50 * MIN)
                .unwrap();
        }
        drain(&mut f);
        // The 5m window holds 4 bad minutes of 5 at +51 (16x) and 3 at +52 (12x).
        f.tick(bad_from + 51 * MIN);
        assert!(page_alerts(&drain(&mut f)).is_empty());
        f.tick(bad_from + 52 * MIN);
        assert_eq!(
            page_alerts(&drain(&mut f)),
            [(AlertState::Resolved, bad_from + 52 * MIN)]
        );
    }
}
