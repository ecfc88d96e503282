//! `GET /api/v1/slo`: both CMC SLOs (fleet in service, commands acknowledged in time) and
//! each journey's SLO with error budgets and burn rates, the alerts firing, each journey's
//! precision figures, and the fleet's census.
//! `GET /api/v1/slo/openslo`: the same SLOs as an OpenSLO v1 document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_rules::AlertSeverity;
use serde_json::{json, Value};

use super::openslo::{duration_shorthand, openslo_yaml};
use super::{ApiContext, ApiError};
use crate::engine::alerts::{burn_rates_json, journey_slo, policy, ACK_SLO, FLEET_SLO};

/// `GET /api/v1/slo`
pub async fn report(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Value>, ApiError> {
    let s = ctx.engine.snapshot().await?;
    let slo = &ctx.slo;
    let c = &s.census;
    Ok(Json(json!({
        "at": s.sli.at,
        "fleet_in_service": {
            "name": FLEET_SLO,
            "description": "share of active-fleet vehicle-time in service",
            "target": s.sli.target,
            "window": duration_shorthand(slo.window),
            "window_s": s.sli.window_ms / 1000,
            "maintenance_counts_as_bad": slo.maintenance_counts_as_bad,
            "in_service": s.sli.in_service,
            "fleet": s.sli.fleet,
            "sli_now": s.sli.fraction,
            "window_sli": s.sli.window_sli,
            "error_budget_remaining": s.sli.error_budget_remaining,
            "burn_rates": burn_rates_json(&s.sli.burn),
            "alerts_firing": s.sli.alerts_firing,
            "downtime_s": s.sli.downtime_ms / 1000,
            "covered_s": s.sli.covered_ms / 1000,
        },
        "command_acks": {
            "name": ACK_SLO,
            "description": format!(
                "share of commands to reachable vehicles acknowledged ok within {}s",
                slo.command_ack_within.as_secs()
            ),
            "target": s.acks.target,
            "ack_within_s": slo.command_ack_within.as_secs(),
            "window": duration_shorthand(slo.window),
            "window_s": s.acks.window_ms / 1000,
            "good": s.acks.good,
            "valid": s.acks.valid,
            "window_sli": s.acks.window_sli,
            "error_budget_remaining": s.acks.error_budget_remaining,
            "burn_rates": burn_rates_json(&s.acks.burn),
            "unacked_commands": s.unacked_commands,
        },
        "journeys": s.journeys.iter().map(|j| {
            let r = &j.report;
            json!({
                "name": journey_slo(&j.name),
                "journey": j.name,
                "description": format!("share of {} requests answered with success within the timeout", j.name),
                "target": r.sli.target,
                "window_s": r.sli.window_ms / 1000,
                "good": r.sli.good,
                "valid": r.sli.valid,
                "window_sli": r.sli.window_sli,
                "error_budget_remaining": r.sli.error_budget_remaining,
                "burn_rates": burn_rates_json(&r.sli.burn),
                "alerts_firing": j.alerts_firing,
                "counts": r.counts,
                "pending": r.pending,
                "latency": {
                    "bounds_s": fleet_rules::LATENCY_BOUNDS_S,
                    "cumulative": r.latency,
                    "sum_ms": r.latency_sum_ms,
                },
                "precision": j.precision,
            })
        }).collect::<Vec<_>>(),
        "alert_policy": {
            "page": policy(AlertSeverity::Page),
            "ticket": policy(AlertSeverity::Ticket),
            "topic": ctx.slo.alerts_topic,
        },
        "vehicles": {
            "total": c.total,
            "in_service": c.in_service,
            "out_of_service": c.out_of_service,
            "heartbeat_lost": c.heartbeat_lost,
            "hardware_fault": c.hardware_fault,
            "journey_failures": c.journey_failures,
            "maintenance": c.maintenance,
            "held": c.held,
            "by_fault_code": s.breakdown.fault_codes.iter()
                .map(|(code, n)| json!({"code": code, "vehicles": n}))
                .collect::<Vec<_>>(),
            "by_model": s.breakdown.models.iter()
                .map(|(model, in_service, n)| json!({"model": model, "in_service": in_service, "vehicles": n}))
                .collect::<Vec<_>>(),
        },
    })))
}

/// `GET /api/v1/slo/openslo`
pub async fn openslo(State(ctx): State<Arc<ApiContext>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        openslo_yaml(&ctx.slo),
    )
        .into_response()
}
