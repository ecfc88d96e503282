//! MDS 2.0 micromobility views for cities: `vehicles/status` (each vehicle's last event)
//! and `events/recent` (state changes in a time range), with the mapping of
//! `fleet_rules::mds`. Ids become UUIDs (`device_id`, `event_id`) by hashing, so they are
//! stable across restarts. The MQTT contract carries no position, so `location` and
//! `last_telemetry` are absent: a backend that has GPS data merges it in.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fleet_rules::{
    mds, Cause, PageCursor, Reason, ReasonChange, ServiceState, Transition, VehicleFilter,
    VehicleView,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::paging::{collect_page, page_params};
use super::params::{Params, RawParams};
use super::{ApiContext, ApiError};
use crate::store::StoredTransition;

/// The MDS version served.
pub const MDS_VERSION: &str = "2.0.0";
const CONTENT_TYPE: &str = "application/vnd.mds+json;version=2.0";
/// Transitions `events/recent` looks through (newest first).
pub const RECENT_EVENTS_SCAN: usize = 10_000;
/// Longest `events/recent` range: MDS asks for the last two weeks.
const MAX_RANGE_MS: u64 = 14 * 24 * 3_600_000;
/// How long a `vehicles/status` answer stays fresh, in ms.
const STATUS_TTL_MS: u64 = 10_000;

/// A name-based UUID (RFC 9562 version 8, SHA-256 of `kind` and `name`).
pub fn uuid_for(kind: &str, name: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"fleet-broker/")
        .chain_update(kind.as_bytes())
        .chain_update(b"/")
        .chain_update(name.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The MDS `device_id` of a vehicle.
pub fn device_id(vehicle: &str) -> String {
    uuid_for("device", vehicle)
}

fn mds_response(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn reason_from_json(v: &Value) -> Option<Reason> {
    let since = v["since"].as_u64()?;
    match v["kind"].as_str()? {
        "heartbeat_lost" => Some(Reason::HeartbeatLost { since }),
        "hardware_fault" => Some(Reason::HardwareFault {
            code: v["code"].as_str()?.to_owned(),
            since,
        }),
        "journey_failures" => Some(Reason::JourneyFailures {
            journey: v["journey"].as_str()?.to_owned(),
            failures: v["failures"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            since,
        }),
        "maintenance" => Some(Reason::Maintenance {
            by: v["by"].as_str().unwrap_or("").to_owned(),
            note: v["note"].as_str().unwrap_or("").to_owned(),
            since,
        }),
        _ => None,
    }
}

fn state_from(s: &str) -> ServiceState {
    if s == "in_service" {
        ServiceState::InService
    } else {
        ServiceState::OutOfService
    }
}

/// A stored transition back as the rules' value, for the rules' MDS mapping.
fn transition_of(t: &StoredTransition) -> Option<Transition> {
    let change = match t.change.as_str() {
        "decommissioned" => ReasonChange::Decommissioned,
        "set" => ReasonChange::Set(reason_from_json(t.reason.as_ref()?)?),
        "cleared" => ReasonChange::Cleared(reason_from_json(t.reason.as_ref()?)?),
        _ => return None,
    };
    let reasons = t
        .reasons
        .as_array()
        .map(|rs| rs.iter().filter_map(reason_from_json).collect())
        .unwrap_or_default();
    Some(Transition {
        vehicle: t.vehicle.clone(),
        from: state_from(&t.from),
        to: state_from(&t.to),
        change,
        reasons,
        cause: Cause::Rule,
        at: t.at,
    })
}

/// The MDS event of a stored transition.
fn event(provider_id: &str, t: &StoredTransition) -> Option<Value> {
    let m = mds::map(&transition_of(t)?);
    Some(json!({
        "device_id": device_id(&t.vehicle),
        "provider_id": provider_id,
        "event_id": uuid_for("event", &t.seq.to_string()),
        "vehicle_state": m.vehicle_state,
        "event_types": m.event_types,
        "timestamp": t.at,
    }))
}

/// The last event of a vehicle with no stored transition: its current state, unspecified.
fn current_state_event(provider_id: &str, v: &VehicleView) -> Value {
    let since = v.reasons.iter().map(|r| match r {
        Reason::HeartbeatLost { since }
        | Reason::HardwareFault { since, .. }
        | Reason::JourneyFailures { since, .. }
        | Reason::Maintenance { since, .. } => *since,
    });
    json!({
        "device_id": device_id(&v.id),
        "provider_id": provider_id,
        "event_id": uuid_for("state", &v.id),
        "vehicle_state": mds::vehicle_state(&v.reasons),
        "event_types": ["unspecified"],
        "timestamp": since.max().unwrap_or(v.last_seen),
    })
}

/// `GET /api/v1/mds/vehicles/status?limit=&cursor=`
pub async fn vehicles_status(
    State(ctx): State<Arc<ApiContext>>,
    raw: RawParams,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw, &["limit", "cursor"])?;
    let (cursor, limit) = page_params(&p)?;
    let (vehicles, next) =
        collect_page(&ctx.engine, &VehicleFilter::default(), cursor, limit).await?;
    let ids: Vec<String> = vehicles.iter().map(|v| v.id.clone()).collect();
    let last: std::collections::HashMap<String, _> = ctx
        .history
        .last_transitions(ids)
        .await
        .map_err(|e| ApiError::history_unavailable(&e))?
        .into_iter()
        .collect();
    let provider = &ctx.mds_provider_id;
    let status: Vec<Value> = vehicles
        .iter()
        .map(|v| {
            let last_event = last
                .get(&v.id)
                .and_then(|t| event(provider, t))
                .unwrap_or_else(|| current_state_event(provider, v));
            json!({
                "device_id": device_id(&v.id),
                "provider_id": provider,
                "last_event": last_event,
                "last_telemetry": Value::Null,
            })
        })
        .collect();
    let next = next.map(|c: PageCursor| {
        format!(
            "/api/v1/mds/vehicles/status?limit={limit}&cursor={}",
            c.token()
        )
    });
    Ok(mds_response(json!({
        "version": MDS_VERSION,
        "vehicles_status": status,
        "last_updated": ctx.clock.now(),
        "ttl": STATUS_TTL_MS,
        "links": { "next": next },
    })))
}

/// `GET /api/v1/mds/events/recent?start_time=&end_time=` (unix ms, half-open range).
pub async fn events_recent(
    State(ctx): State<Arc<ApiContext>>,
    raw: RawParams,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw, &["start_time", "end_time"])?;
    let now = ctx.clock.now();
    let (Some(start), Some(end)) = (
        p.integer("start_time", 0..=u64::MAX)?,
        p.integer("end_time", 0..=u64::MAX)?,
    ) else {
        return Err(ApiError::bad_request(
            "missing_parameter",
            format!(
                "start_time and end_time are required (unix ms), e.g. \
                 ?start_time={}&end_time={now}",
                now.saturating_sub(3_600_000)
            ),
        ));
    };
    if start >= end || end - start > MAX_RANGE_MS || start < now.saturating_sub(MAX_RANGE_MS) {
        return Err(ApiError::bad_request(
            "bad_range",
            "start_time must be before end_time, within the last two weeks",
        ));
    }
    let recent = ctx
        .history
        .transitions(None, RECENT_EVENTS_SCAN)
        .await
        .map_err(|e| ApiError::history_unavailable(&e))?;
    let provider = &ctx.mds_provider_id;
    let events: Vec<Value> = recent
        .iter()
        .rev()
        .filter(|t| (start..end).contains(&t.at))
        .filter_map(|t| event(provider, t))
        .collect();
    Ok(mds_response(json!({
        "version": MDS_VERSION,
        "events": events,
        "links": { "next": Value::Null },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_version_8_and_differ_by_name() {
        let a = device_id("scooter-1");
        assert_eq!(a, device_id("scooter-1"));
        assert_ne!(a, device_id("scooter-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    fn stored(change: &str, reason: Value, reasons: Value, to: &str) -> StoredTransition {
        StoredTransition {
            seq: 7,
            vehicle: "v1".into(),
            from: "in_service".into(),
            to: to.into(),
            change: change.into(),
            reason: Some(reason),
            reasons,
            cause: "rule".into(),
            operator: None,
            note: None,
            at: 1000,
        }
    }

    #[test]
    fn a_vehicle_without_history_reports_its_current_state_as_unspecified() {
        let v = VehicleView {
            id: "v9".into(),
            state: ServiceState::InService,
            reasons: vec![],
            last_seen: 5000,
            model: None,
            reported: None,
            battery: None,
            held: false,
            error_counts: vec![],
        };
        let e = current_state_event("p", &v);
        assert_eq!(e["event_types"], json!(["unspecified"]));
        assert_eq!(e["vehicle_state"], "available");
        assert_eq!(e["timestamp"], 5000);
        assert_eq!(e["device_id"], device_id("v9"));
        let out = VehicleView {
            reasons: vec![Reason::Maintenance {
                by: "ana".into(),
                note: "".into(),
                since: 7000,
            }],
            state: ServiceState::OutOfService,
            ..v
        };
        let e = current_state_event("p", &out);
        assert_eq!(e["vehicle_state"], "non_operational");
        assert_eq!(e["timestamp"], 7000);
    }

    #[test]
    fn stored_transitions_map_as_the_rules_say() {
        let lost = json!({"kind": "heartbeat_lost", "since": 900});
        let t = stored("set", lost.clone(), json!([lost]), "out_of_service");
        let e = event("p", &t).expect("maps");
        assert_eq!(e["event_types"], json!(["comms_lost"]));
        assert_eq!(e["vehicle_state"], "non_contactable");
        assert_eq!(e["timestamp"], 1000);
        let fault = json!({"kind": "hardware_fault", "code": "BRAKE", "since": 900});
        let t = stored("set", fault.clone(), json!([fault]), "out_of_service");
        let e = event("p", &t).expect("maps");
        assert_eq!(e["event_types"], json!(["maintenance"]));
        assert_eq!(e["vehicle_state"], "non_operational");
    }
}
