//! Uplink decoding: topic and payload per the MQTT contract v1, into typed messages.
//! A payload is JSON, or the compact binary encoding for cellular firmware: the format
//! byte [`POSTCARD_V1`] followed by the postcard encoding of the same message (a JSON
//! payload starts with `{` or white space, so one topic carries both unambiguously).
//! Anything else is a [`Rejection`] with a reason label for the counters.

use fleet_rules::ServiceState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::contract::{is_error_code, is_vehicle_id, Topic, Topics, UplinkKind};

/// Leading byte of a compact binary payload: postcard encoding, version 1. Never `{`.
pub const POSTCARD_V1: u8 = 0x01;

/// Most error entries one report may carry.
pub const MAX_ERRORS_PER_REPORT: usize = 32;
/// Largest `count` one entry may claim.
pub const MAX_ERROR_COUNT: u32 = 1000;

/// A decoded uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `vehicles/{id}/heartbeat`
    Heartbeat(Heartbeat),
    /// `vehicles/{id}/error`
    Error(ErrorReport),
    /// `vehicles/{id}/ack`
    Ack(Ack),
    /// A message on one of the vehicle's liveness topics (`[topics] liveness`): it proves
    /// the vehicle alive; its payload is the fleet's, not decoded.
    Liveness,
}

/// A heartbeat. Every field is optional; an empty payload is a bare heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sequence number.
    pub seq: Option<u64>,
    /// Battery percent, 0 to 100.
    pub battery: Option<u8>,
    /// Model: selects per-model timeouts.
    pub model: Option<String>,
    /// Firmware version.
    pub fw: Option<String>,
    /// The state the vehicle is applying now.
    pub service: Option<ReportedState>,
    /// Device clock, informational only.
    pub ts: Option<u64>,
}

/// `service` as the firmware writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedState {
    /// `"in_service"`
    InService,
    /// `"out_of_service"`
    OutOfService,
}

impl From<ReportedState> for ServiceState {
    fn from(s: ReportedState) -> ServiceState {
        match s {
            ReportedState::InService => ServiceState::InService,
            ReportedState::OutOfService => ServiceState::OutOfService,
        }
    }
}

/// An error report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The codes seen.
    pub errors: Vec<ErrorEntry>,
    /// Device clock, informational only.
    pub ts: Option<u64>,
}

/// One code in an error report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// `[A-Z0-9_]{1,64}`
    pub code: String,
    /// Reports of it (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A command acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The command id.
    pub id: String,
    /// Applied or not.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Why an uplink was refused. Nothing it carried was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Payload larger than the limit.
    #[error("payload of {0} bytes exceeds the {1}-byte limit")]
    Oversize(usize, usize),
    /// Not a vehicle uplink topic.
    #[error("unknown topic {0:?}: not an uplink or liveness topic of the configured layout")]
    UnknownTopic(String),
    /// The id in the topic is not a valid vehicle id.
    #[error("invalid vehicle id in topic {0:?}: ids are 1 to 64 of A-Z a-z 0-9 _ -")]
    BadVehicleId(String),
    /// A client published on another vehicle's topic.
    #[error("client {client:?} published on vehicle {vehicle:?}'s topic")]
    NotOwnTopic {
        /// The sending client id.
        client: String,
        /// The vehicle the topic names.
        vehicle: String,
    },
    /// Not JSON, or a field of the wrong type or range.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// Valid JSON with a value the contract does not allow.
    #[error("invalid payload: {0}")]
    Invalid(String),
}

impl Rejection {
    /// A short label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Oversize(..) => "oversize",
            Rejection::UnknownTopic(_) => "unknown_topic",
            Rejection::BadVehicleId(_) => "bad_vehicle_id",
            Rejection::NotOwnTopic { .. } => "not_own_topic",
            Rejection::Malformed(_) => "malformed",
            Rejection::Invalid(_) => "invalid",
        }
    }

    /// Every label, for pre-registering counters.
    pub const LABELS: [&'static str; 6] = [
        "oversize",
        "unknown_topic",
        "bad_vehicle_id",
        "not_own_topic",
        "malformed",
        "invalid",
    ];
}

/// Decodes one uplink from `client_id` on the layout `topics`. Returns the vehicle id and
/// the message.
pub fn decode<'t>(
    topics: &Topics,
    client_id: &str,
    topic: &'t str,
    payload: &[u8],
    max_payload: usize,
) -> Result<(&'t str, Message), Rejection> {
    if payload.len() > max_payload {
        return Err(Rejection::Oversize(payload.len(), max_payload));
    }
    let (vehicle, kind) = match topics.classify(topic) {
        Topic::Uplink { vehicle, kind } => (vehicle, Some(kind)),
        Topic::Liveness { vehicle } => (vehicle, None),
        _ => return Err(Rejection::UnknownTopic(topic.to_owned())),
    };
    if !is_vehicle_id(vehicle) {
        return Err(Rejection::BadVehicleId(topic.to_owned()));
    }
    if vehicle != client_id {
        return Err(Rejection::NotOwnTopic {
            client: client_id.to_owned(),
            vehicle: vehicle.to_owned(),
        });
    }
    let message = match kind {
        Some(UplinkKind::Heartbeat) => Message::Heartbeat(decode_heartbeat(payload)?),
        Some(UplinkKind::Error) => Message::Error(decode_error_report(payload)?),
        Some(UplinkKind::Ack) => Message::Ack(decode_ack(payload)?),
        None => Message::Liveness,
    };
    Ok((vehicle, message))
}

/// JSON or postcard v1, told apart by the first byte.
fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    match payload.first() {
        Some(&POSTCARD_V1) => {
            let (value, rest) = postcard::take_from_bytes(&payload[1..])
                .map_err(|e| Rejection::Malformed(format!("postcard v1: {e}")))?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(Rejection::Malformed(format!(
                    "postcard v1: {} trailing bytes after the message",
                    rest.len()
                )))
            }
        }
        Some(&b) if b != b'{' && !b.is_ascii_whitespace() => Err(Rejection::Malformed(format!(
            "unknown payload format byte 0x{b:02x}: JSON starts with '{{', postcard v1 with 0x01"
        ))),
        _ => serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string())),
    }
}

fn decode_heartbeat(payload: &[u8]) -> Result<Heartbeat, Rejection> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Heartbeat::default());
    }
    let hb: Heartbeat = parse(payload)?;
    if let Some(b) = hb.battery {
        if b > 100 {
            return Err(Rejection::Invalid(format!(
                "battery {b} is above 100 (percent)"
            )));
        }
    }
    if let Some(model) = &hb.model {
        if model.is_empty() || model.len() > 64 {
            return Err(Rejection::Invalid(
                "model must be 1 to 64 characters".into(),
            ));
        }
    }
    Ok(hb)
}

fn decode_error_report(payload: &[u8]) -> Result<ErrorReport, Rejection> {
    let report: ErrorReport = parse(payload)?;
    if report.errors.is_empty() {
        return Err(Rejection::Invalid("errors is empty".into()));
    }
    if report.errors.len() > MAX_ERRORS_PER_REPORT {
        return Err(Rejection::Invalid(format!(
            "{} errors in one report; at most {MAX_ERRORS_PER_REPORT}",
            report.errors.len()
        )));
    }
    for e in &report.errors {
        if !is_error_code(&e.code) {
            return Err(Rejection::Invalid(format!(
                "error code {:?} is not 1 to 64 of A-Z 0-9 _",
                e.code
            )));
        }
        if e.count == 0 || e.count > MAX_ERROR_COUNT {
            return Err(Rejection::Invalid(format!(
                "count {} for {} is out of range 1..={MAX_ERROR_COUNT}",
                e.count, e.code
            )));
        }
    }
    Ok(report)
}

fn decode_ack(payload: &[u8]) -> Result<Ack, Rejection> {
    let ack: Ack = parse(payload)?;
    if ack.id.is_empty() || ack.id.len() > 128 {
        return Err(Rejection::Invalid(
            "ack id must be 1 to 128 characters".into(),
        ));
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(topic: &str, payload: &str) -> Message {
        decode(&Topics::default(), "v1", topic, payload.as_bytes(), 1024)
            .expect("accepted")
            .1
    }

    fn rejected(topic: &str, payload: &str) -> &'static str {
        decode(&Topics::default(), "v1", topic, payload.as_bytes(), 1024)
            .expect_err("rejected")
            .label()
    }

    #[test]
    fn an_empty_payload_is_a_bare_heartbeat() {
        assert_eq!(
            ok("vehicles/v1/heartbeat", ""),
            Message::Heartbeat(Heartbeat::default())
        );
    }

    #[test]
    fn a_full_heartbeat_decodes_every_field_and_ignores_unknown_ones() {
        let m = ok(
            "vehicles/v1/heartbeat",
            r#"{"seq":7,"battery":80,"model":"e-bike","fw":"1.2","service":"out_of_service","ts":1,"extra":{"x":1}}"#,
        );
        assert_eq!(
            m,
            Message::Heartbeat(Heartbeat {
                seq: Some(7),
                battery: Some(80),
                model: Some("e-bike".into()),
                fw: Some("1.2".into()),
                service: Some(ReportedState::OutOfService),
                ts: Some(1),
            })
        );
    }

    #[test]
    fn error_count_defaults_to_one() {
        let Message::Error(r) = ok(
            "vehicles/v1/error",
            r#"{"errors":[{"code":"BRAKE_SENSOR"},{"code":"MOTOR","count":2}]}"#,
        ) else {
            panic!("not an error report")
        };
        assert_eq!(r.errors[0].count, 1);
        assert_eq!(r.errors[1].count, 2);
    }

    #[test]
    fn acks_decode() {
        assert_eq!(
            ok(
                "vehicles/v1/ack",
                r#"{"id":"c1","ok":false,"error":"busy"}"#
            ),
            Message::Ack(Ack {
                id: "c1".into(),
                ok: false,
                error: Some("busy".into())
            })
        );
    }

    #[test]
    fn bad_input_is_rejected_with_its_reason() {
        assert_eq!(rejected("vehicles/v1/heartbeat", "{"), "malformed");
        assert_eq!(rejected("vehicles/v1/heartbeat", "[1,2]"), "malformed");
        assert_eq!(
            rejected("vehicles/v1/heartbeat", r#"{"battery":"full"}"#),
            "malformed"
        );
        assert_eq!(
            rejected("vehicles/v1/heartbeat", r#"{"battery":101}"#),
            "invalid"
        );
        assert_eq!(
            rejected("vehicles/v1/heartbeat", r#"{"service":"broken"}"#),
            "malformed"
        );
        assert_eq!(rejected("vehicles/v1/error", r#"{"errors":[]}"#), "invalid");
        assert_eq!(
            rejected("vehicles/v1/error", r#"{"errors":[{"code":"brake"}]}"#),
            "invalid"
        );
        assert_eq!(
            rejected(
                "vehicles/v1/error",
                r#"{"errors":[{"code":"B","count":0}]}"#
            ),
            "invalid"
        );
        assert_eq!(rejected("vehicles/v1/ack", r#"{"ok":true}"#), "malformed");
        assert_eq!(rejected("vehicles/v1/status", "{}"), "unknown_topic");
        assert_eq!(rejected("vehicles/v1/heartbeat/x", "{}"), "unknown_topic");
        assert_eq!(rejected("fleet/sli", "{}"), "unknown_topic");
        assert_eq!(rejected("vehicles/v 1/heartbeat", "{}"), "bad_vehicle_id");
        assert_eq!(rejected("vehicles/v2/heartbeat", "{}"), "not_own_topic");
    }

    #[test]
    fn oversize_payloads_are_rejected_before_parsing() {
        let big = vec![b' '; 2000];
        let err = decode(
            &Topics::default(),
            "v1",
            "vehicles/v1/heartbeat",
            &big,
            1024,
        )
        .expect_err("too big");
        assert_eq!(err, Rejection::Oversize(2000, 1024));
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn encode(m: &Message) -> Vec<u8> {
        let body = match m {
            Message::Heartbeat(hb) => postcard::to_stdvec(hb),
            Message::Error(r) => postcard::to_stdvec(r),
            Message::Ack(a) => postcard::to_stdvec(a),
            Message::Liveness => postcard::to_stdvec(&()),
        };
        let mut out = vec![POSTCARD_V1];
        out.extend(body.expect("encodes"));
        out
    }

    #[test]
    fn the_published_postcard_test_vectors_decode_to_their_json_and_encode_back() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/contract/postcard-v1-vectors.json"))
                .expect("vectors file is JSON");
        let vectors = doc["vectors"].as_array().expect("vectors");
        assert!(vectors.len() >= 6);
        for v in vectors {
            let topic = v["topic"].as_str().expect("topic").replace("{id}", "v1");
            let bytes = unhex(v["hex"].as_str().expect("hex"));
            let json = serde_json::to_vec(&v["json"]).expect("json");
            let from_binary = decode(&Topics::default(), "v1", &topic, &bytes, 1024)
                .expect("binary decodes")
                .1;
            let from_json = decode(&Topics::default(), "v1", &topic, &json, 1024)
                .expect("json decodes")
                .1;
            assert_eq!(from_binary, from_json, "vector {}", v["hex"]);
            assert_eq!(encode(&from_json), bytes, "encoding of {}", v["json"]);
        }
    }

    #[test]
    fn binary_payloads_are_validated_like_json_ones() {
        // battery 101: postcard decodes it, the range check refuses it.
        let hb = [POSTCARD_V1, 0, 1, 101, 0, 0, 0, 0];
        assert_eq!(rejected_bytes("vehicles/v1/heartbeat", &hb), "invalid");
        // Truncated: Some(seq) without the value.
        assert_eq!(
            rejected_bytes("vehicles/v1/heartbeat", &[POSTCARD_V1, 1]),
            "malformed"
        );
        // Trailing garbage after a complete message.
        let mut bare = vec![POSTCARD_V1, 0, 0, 0, 0, 0, 0];
        bare.push(9);
        assert_eq!(rejected_bytes("vehicles/v1/heartbeat", &bare), "malformed");
        // An unknown format byte.
        assert_eq!(
            rejected_bytes("vehicles/v1/heartbeat", &[0x02, 0]),
            "malformed"
        );
    }

    fn rejected_bytes(topic: &str, payload: &[u8]) -> &'static str {
        decode(&Topics::default(), "v1", topic, payload, 1024)
            .expect_err("rejected")
            .label()
    }
}
