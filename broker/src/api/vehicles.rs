//! The vehicles: a filtered, paginated list; one vehicle with its reasons, error counters
//! and recent history from the audit log; manual service-in and service-out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use fleet_rules::{
    PageCursor, Reason, ReasonKind, RulesError, ServiceState, UnixMs, VehicleFilter, VehicleView,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::authorize;
use super::history::HistoryError;
use super::paging::{collect_page, page_params};
use super::params::{vehicle_id, Params, RawParams};
use super::{ApiContext, ApiError};

/// History shown with a vehicle.
const DETAIL_TRANSITIONS: usize = 20;
const DETAIL_COMMANDS: usize = 10;
/// Bounds of the operator's name and note.
const MAX_OPERATOR: usize = 100;
const MAX_NOTE: usize = 1000;

pub(super) fn parse_state(s: &str) -> Option<ServiceState> {
    match s {
        "in_service" => Some(ServiceState::InService),
        "out_of_service" => Some(ServiceState::OutOfService),
        _ => None,
    }
}

/// Unix ms as RFC 3339 UTC, for messages.
pub(super) fn rfc3339(ms: UnixMs) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A vehicle in a listing.
pub(super) fn summary(v: &VehicleView) -> Value {
    json!({
        "id": v.id,
        "state": v.state,
        "reasons": v.reasons,
        "last_seen": v.last_seen,
        "model": v.model,
        "reported": v.reported,
        "held": v.held,
    })
}

/// The `state`, `reason` and `model` parameters of a listing.
pub(super) fn vehicle_filter(p: &Params) -> Result<VehicleFilter, ApiError> {
    Ok(VehicleFilter {
        state: p.choice("state", &["in_service", "out_of_service"], parse_state)?,
        reason: p.choice(
            "reason",
            &["heartbeat_lost", "hardware_fault", "maintenance"],
            ReasonKind::parse,
        )?,
        model: p.get("model").map(str::to_owned),
    })
}

/// `GET /api/v1/vehicles?state=&reason=&model=&limit=&cursor=`
pub async fn list(
    State(ctx): State<Arc<ApiContext>>,
    raw: RawParams,
) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(raw, &["state", "reason", "model", "limit", "cursor"])?;
    let filter = vehicle_filter(&p)?;
    let (cursor, limit) = page_params(&p)?;
    let (vehicles, next) = collect_page(&ctx.engine, &filter, cursor, limit).await?;
    Ok(Json(json!({
        "vehicles": vehicles.iter().map(summary).collect::<Vec<_>>(),
        "next_cursor": next.map(PageCursor::token),
        "at": ctx.clock.now(),
    })))
}

/// `GET /api/v1/vehicles/{id}`
pub async fn detail(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = vehicle_id(path)?;
    let view = ctx
        .engine
        .vehicle(&id)
        .await?
        .ok_or_else(|| ApiError::unknown_vehicle(&id))?;
    let mut body = summary(&view);
    let counts: Map<String, Value> = view
        .error_counts
        .iter()
        .map(|(code, n)| (code.clone(), Value::from(*n)))
        .collect();
    let transitions = ctx
        .history
        .transitions(Some(id.clone()), DETAIL_TRANSITIONS)
        .await;
    let commands = ctx.history.commands(id.clone(), DETAIL_COMMANDS).await;
    if let Value::Object(map) = &mut body {
        map.insert("error_counts".into(), Value::Object(counts));
        let mut problems = Vec::new();
        let mut history = |name: &str, result: Result<Value, HistoryError>| match result {
            Ok(v) => {
                map.insert(name.into(), v);
            }
            Err(e) => {
                map.insert(name.into(), Value::Null);
                problems.push(format!("{name}: {e}"));
            }
        };
        history("recent_transitions", transitions.map(|t| json!(t)));
        history("recent_commands", commands.map(|c| json!(c)));
        if !problems.is_empty() {
            map.insert(
                "history_error".into(),
                Value::from(format!(
                    "the audit log could not be read ({}); state and reasons above are current",
                    problems.join("; ")
                )),
            );
        }
        map.insert(
            "mds_device_id".into(),
            Value::from(super::mds::device_id(&id)),
        );
        map.insert("at".into(), Value::from(ctx.clock.now()));
    }
    Ok(Json(body))
}

/// The body of a manual service-in or service-out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualRequest {
    operator: String,
    note: String,
}

fn manual_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ManualRequest, ApiError> {
    let example = r#"{"operator":"ana","note":"brake sensor replaced, test ride ok"}"#;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the body as application/json (got {ct:?}), like {example}"),
            ));
        }
    }
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_body",
            format!(
                "the request body could not be read: {e} (at most {} bytes)",
                super::BODY_LIMIT
            ),
        )
    })?;
    let req: ManualRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the body must be JSON like {example}: {e}"),
        )
    })?;
    let operator = req.operator.trim();
    let note = req.note.trim();
    if operator.is_empty()
        || operator.chars().count() > MAX_OPERATOR
        || operator.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "bad_operator",
            format!(
                "operator must name the person doing this (1 to {MAX_OPERATOR} characters, no control characters)"
            ),
        ));
    }
    if note.is_empty() || note.chars().count() > MAX_NOTE {
        return Err(ApiError::bad_request(
            "bad_note",
            format!(
                "note must say what was checked or done (1 to {MAX_NOTE} characters): it goes to the audit log"
            ),
        ));
    }
    Ok(ManualRequest {
        operator: operator.to_owned(),
        note: note.to_owned(),
    })
}

fn refused(e: RulesError) -> ApiError {
    match e {
        RulesError::UnknownVehicle(id) => ApiError::unknown_vehicle(&id),
        RulesError::Decommissioned(id) => ApiError::decommissioned(&id),
        other => ApiError::new(StatusCode::CONFLICT, "refused", other.to_string()),
    }
}

/// `POST /api/v1/vehicles/{id}/service-in` with `{"operator", "note"}`: clears hardware
/// faults and maintenance. 409 when the vehicle stays out (it is silent).
pub async fn service_in(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(ctx.token.as_deref(), &headers)?;
    let id = vehicle_id(path)?;
    let req = manual_request(&headers, body)?;
    let outcome = ctx
        .engine
        .service_in(&id, &req.operator, &req.note)
        .await?
        .map_err(refused)?;
    if outcome.state == ServiceState::OutOfService {
        return Err(still_out(&id, &outcome.remaining, &outcome.cleared));
    }
    Ok(Json(json!({
        "vehicle": id,
        "state": outcome.state,
        "cleared": outcome.cleared,
        "remaining": outcome.remaining,
    })))
}

/// The 409 for a service-in that cleared what a person may clear, with the vehicle still
/// out for a reason only the vehicle can clear.
fn still_out(id: &str, remaining: &[Reason], cleared: &[Reason]) -> ApiError {
    let why: Vec<String> = remaining
        .iter()
        .map(|r| match r {
            Reason::HeartbeatLost { since } => format!(
                "it has been silent since {} (heartbeat_lost): only its next heartbeat brings \
                 it back, so check its power and connectivity (battery, SIM, antenna)",
                rfc3339(*since)
            ),
            Reason::HardwareFault { code, .. } => format!("hardware_fault {code} still holds"),
            Reason::JourneyFailures { journey, .. } => {
                format!("journey_failures {journey} still holds")
            }
            Reason::Maintenance { by, .. } => format!("maintenance by {by} still holds"),
        })
        .collect();
    let done = if cleared.is_empty() {
        "Nothing was cleared.".to_owned()
    } else {
        let kinds: Vec<String> = cleared
            .iter()
            .map(|r| match r {
                Reason::HardwareFault { code, .. } => format!("hardware_fault {code}"),
                Reason::JourneyFailures { journey, .. } => format!("journey_failures {journey}"),
                Reason::Maintenance { .. } => "maintenance".to_owned(),
                Reason::HeartbeatLost { .. } => "heartbeat_lost".to_owned(),
            })
            .collect();
        format!("Cleared: {}.", kinds.join(", "))
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "still_out_of_service",
        format!(
            "vehicle {id:?} stays out of service: {}. {done}",
            why.join("; ")
        ),
    )
    .with("vehicle", Value::from(id))
    .with("state", json!(ServiceState::OutOfService))
    .with("remaining", json!(remaining))
    .with("cleared", json!(cleared))
}

/// `POST /api/v1/vehicles/{id}/service-out` with `{"operator", "note"}`: sets maintenance.
pub async fn service_out(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(ctx.token.as_deref(), &headers)?;
    let id = vehicle_id(path)?;
    let req = manual_request(&headers, body)?;
    let state = ctx
        .engine
        .service_out(&id, &req.operator, &req.note)
        .await?
        .map_err(refused)?;
    let reasons = ctx
        .engine
        .vehicle(&id)
        .await?
        .map(|v| v.reasons)
        .unwrap_or_default();
    Ok(Json(json!({
        "vehicle": id,
        "state": state,
        "reasons": reasons,
    })))
}
