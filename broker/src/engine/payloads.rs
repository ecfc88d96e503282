//! The JSON the broker publishes: commands, retained service state, fleet events and the
//! SLI, exactly as the MQTT contract v1 names them.

use fleet_rules::{mds, Command, Reason, ServiceState, SliReport, Transition, UnixMs};
use serde::Serialize;

/// `vehicles/{id}/command`
pub fn command(id: &str, c: &Command) -> Vec<u8> {
    #[derive(Serialize)]
    struct Payload<'a> {
        id: &'a str,
        command: fleet_rules::CommandKind,
        reasons: &'a [Reason],
        issued_at: UnixMs,
    }
    to_json(&Payload {
        id,
        command: c.command,
        reasons: &c.reasons,
        issued_at: c.issued_at,
    })
}

/// Retained `vehicles/{id}/service`: the desired state (`epoch`: the active/standby term
/// that decided it, absent for an engine running alone).
pub fn service(
    state: ServiceState,
    reasons: &[Reason],
    changed_at: UnixMs,
    epoch: Option<u64>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Payload<'a> {
        state: ServiceState,
        reasons: &'a [Reason],
        changed_at: UnixMs,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    }
    to_json(&Payload {
        state,
        reasons,
        changed_at,
        epoch,
    })
}

/// `fleet/events`: one object per transition, with its MDS 2.0 mapping (and the term's
/// `epoch`, as for the service state).
pub fn event(t: &Transition, epoch: Option<u64>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Payload<'a> {
        vehicle: &'a str,
        from: ServiceState,
        to: ServiceState,
        #[serde(flatten)]
        change: &'a fleet_rules::ReasonChange,
        reasons: &'a [Reason],
        cause: &'a fleet_rules::Cause,
        at: UnixMs,
        mds: mds::MdsEvent,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    }
    to_json(&Payload {
        vehicle: &t.vehicle,
        from: t.from,
        to: t.to,
        change: &t.change,
        reasons: &t.reasons,
        cause: &t.cause,
        at: t.at,
        mds: mds::map(t),
        epoch,
    })
}

/// Retained `fleet/sli`.
pub fn sli(r: &SliReport, journeys: &[fleet_rules::JourneyStatus]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Journey<'a> {
        name: &'a str,
        target: f64,
        window_s: u64,
        good: u64,
        valid: u64,
        window_sli: f64,
        error_budget_remaining: f64,
        burn_rates: &'a fleet_rules::BurnRates,
        alerts_firing: &'a [fleet_rules::AlertSeverity],
        pending: usize,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        in_service: usize,
        fleet: usize,
        fraction: f64,
        slo_target: f64,
        slo_window_s: u64,
        window_sli: f64,
        error_budget_remaining: f64,
        burn_rates: &'a fleet_rules::BurnRates,
        alerts_firing: &'a [fleet_rules::AlertSeverity],
        downtime_ms: u64,
        at: UnixMs,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        journeys: Vec<Journey<'a>>,
    }
    to_json(&Payload {
        in_service: r.in_service,
        fleet: r.fleet,
        fraction: r.fraction,
        slo_target: r.target,
        slo_window_s: r.window_ms / 1000,
        window_sli: r.window_sli,
        error_budget_remaining: r.error_budget_remaining,
        burn_rates: &r.burn,
        alerts_firing: &r.alerts_firing,
        downtime_ms: r.downtime_ms,
        at: r.at,
        journeys: journeys
            .iter()
            .map(|j| Journey {
                name: &j.name,
                target: j.report.sli.target,
                window_s: j.report.sli.window_ms / 1000,
                good: j.report.sli.good,
                valid: j.report.sli.valid,
                window_sli: j.report.sli.window_sli,
                error_budget_remaining: j.report.sli.error_budget_remaining,
                burn_rates: &j.report.sli.burn,
                alerts_firing: &j.alerts_firing,
                pending: j.report.pending,
            })
            .collect(),
    })
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys, no
    // fallible Serialize impls); an empty payload would be the visible symptom.
    serde_json::to_vec(value).unwrap_or_default()
}
