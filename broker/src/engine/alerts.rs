//! The retained `fleet/alerts` message: the SLO burn-rate alert that changed, the alerts
//! firing after the change (so a client that connects later knows the state), the burn
//! rates, and a sentence saying what it means and what to look at.

use fleet_rules::{AlertSeverity, AlertState, BurnRates, SliReport, UnixMs};
use serde::Serialize;
use serde_json::Value;

/// The name of the CMC SLO in alerts, metrics and the OpenSLO export.
pub const FLEET_SLO: &str = "fleet-in-service";
/// The name of the command-ack SLO in metrics and the OpenSLO export.
pub const ACK_SLO: &str = "command-acks";

/// The name of a journey's SLO in metrics, the API and the OpenSLO export.
pub fn journey_slo(journey: &str) -> String {
    format!("journey-{journey}")
}

/// Burn rates keyed by window name (`"5m"` ... `"3d"`).
pub fn burn_rates_json(b: &BurnRates) -> Value {
    serde_json::to_value(b).unwrap_or_default()
}

/// What the multi-window policy of `severity` requires.
pub fn policy(severity: AlertSeverity) -> &'static str {
    match severity {
        AlertSeverity::Page => "1h and 5m burn rates both above 14.4, or 6h and 30m both above 6",
        AlertSeverity::Ticket => "3d and 6h burn rates both above 1",
    }
}

/// The `fleet/alerts` payload for a change of `severity` to `state`, with `report` taken
/// right after the change.
pub fn payload(
    severity: AlertSeverity,
    state: AlertState,
    burn: &BurnRates,
    at: UnixMs,
    report: &SliReport,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Payload<'a> {
        slo: &'a str,
        severity: AlertSeverity,
        state: AlertState,
        at: UnixMs,
        summary: String,
        policy: &'a str,
        burn_rates: &'a BurnRates,
        firing: &'a [AlertSeverity],
        window_sli: f64,
        slo_target: f64,
        error_budget_remaining: f64,
    }
    let body = Payload {
        slo: FLEET_SLO,
        severity,
        state,
        at,
        summary: summary(severity, state, burn, report),
        policy: policy(severity),
        burn_rates: burn,
        firing: &report.alerts_firing,
        window_sli: report.window_sli,
        slo_target: report.target,
        error_budget_remaining: report.error_budget_remaining,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// One sentence for a person: what changed, how fast the budget burns, what to look at.
pub fn summary(
    severity: AlertSeverity,
    state: AlertState,
    b: &BurnRates,
    report: &SliReport,
) -> String {
    let (label, rates, long) = match severity {
        AlertSeverity::Page => (
            "PAGE",
            format!(
                "1h {:.1}x, 5m {:.1}x, 6h {:.1}x, 30m {:.1}x",
                b.h1, b.m5, b.h6, b.m30
            ),
            b.h1.max(b.h6),
        ),
        AlertSeverity::Ticket => ("TICKET", format!("3d {:.1}x, 6h {:.1}x", b.d3, b.h6), b.d3),
    };
    match state {
        AlertState::Resolved => format!(
            "RESOLVED {label}: the {FLEET_SLO} SLO burn rates are back under the policy ({rates}); \
             {:.1} % of the error budget remains.",
            report.error_budget_remaining * 100.0
        ),
        AlertState::Firing => {
            let runway = if report.error_budget_remaining <= 0.0 {
                "the error budget is already spent".to_owned()
            } else if long > 0.0 {
                let hours =
                    report.error_budget_remaining * (report.window_ms as f64) / long / 3_600_000.0;
                format!(
                    "at this rate the remaining {:.1} % of the error budget lasts {}",
                    report.error_budget_remaining * 100.0,
                    human_hours(hours)
                )
            } else {
                "the budget is burning".to_owned()
            };
            format!(
                "{label}: the fleet is out of service faster than the {:.2} % SLO allows \
                 ({rates}); {runway}. {:.2} % of the fleet is in service now. Look at \
                 fleet/events and `fleet-broker vehicles list --state out_of_service`.",
                report.target * 100.0,
                report.fraction * 100.0
            )
        }
    }
}

fn human_hours(hours: f64) -> String {
    if hours >= 48.0 {
        format!("{:.1} days", hours / 24.0)
    } else if hours >= 1.0 {
        format!("{hours:.1} hours")
    } else {
        format!("{:.0} minutes", (hours * 60.0).max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(remaining: f64, firing: Vec<AlertSeverity>) -> SliReport {
        SliReport {
            at: 0,
            in_service: 90,
            fleet: 100,
            fraction: 0.9,
            window_sli: 0.99,
            target: 0.995,
            window_ms: 30 * 24 * 3_600_000,
            error_budget_remaining: remaining,
            burn: BurnRates::default(),
            alerts_firing: firing,
            downtime_ms: 0,
            covered_ms: 0,
        }
    }

    #[test]
    fn a_firing_page_names_the_rates_the_runway_and_where_to_look() {
        let burn = BurnRates {
            m5: 20.0,
            m30: 20.0,
            h1: 20.0,
            h6: 3.3,
            d1: 0.8,
            d3: 0.3,
        };
        let r = report(0.5, vec![AlertSeverity::Page]);
        let json: Value = serde_json::from_slice(&payload(
            AlertSeverity::Page,
            AlertState::Firing,
            &burn,
            7,
            &r,
        ))
        .unwrap();
        assert_eq!(json["slo"], FLEET_SLO);
        assert_eq!(json["severity"], "page");
        assert_eq!(json["state"], "firing");
        assert_eq!(json["firing"][0], "page");
        assert_eq!(json["burn_rates"]["1h"], 20.0);
        assert_eq!(json["at"], 7);
        let summary = json["summary"].as_str().unwrap();
        // Half of a 30-day budget at 20x: 0.5 * 720 h / 20 = 18 h.
        assert!(summary.contains("18.0 hours"), "{summary}");
        assert!(summary.contains("1h 20.0x"), "{summary}");
        assert!(summary.contains("vehicles list"), "{summary}");
    }

    #[test]
    fn a_resolved_alert_says_how_much_budget_is_left() {
        let r = report(0.25, vec![]);
        let s = summary(
            AlertSeverity::Ticket,
            AlertState::Resolved,
            &BurnRates::default(),
            &r,
        );
        assert!(s.starts_with("RESOLVED TICKET"), "{s}");
        assert!(s.contains("25.0 %"), "{s}");
    }

    #[test]
    fn a_spent_budget_is_called_spent() {
        let burn = BurnRates {
            d3: 2.0,
            h6: 2.0,
            ..BurnRates::default()
        };
        let s = summary(
            AlertSeverity::Ticket,
            AlertState::Firing,
            &burn,
            &report(-0.2, vec![AlertSeverity::Ticket]),
        );
        assert!(s.contains("already spent"), "{s}");
    }
}
