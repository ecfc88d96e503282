//! Rider journeys on the fleet's own traffic (`[[journeys]]`): which topics carry a
//! journey's requests (backend to vehicle) and answers (vehicle to backend), and what the
//! broker reads from them: the key that matches an answer to its request (a JSON field of
//! both payloads, or MQTT 5 correlation data, or none: the vehicle's next answer) and
//! whether an answer is a success (a JSON field equal to a value). The broker only looks:
//! the messages are routed (embedded) or already routed by the upstream (attach) as usual.

use std::sync::Arc;

use bytes::Bytes;

use crate::contract::Template;
use crate::ingest::Rejection;

/// Most journeys a config may define.
pub const MAX_JOURNEYS: usize = 16;
/// Longest key the broker keeps (longer ones are refused).
pub const MAX_KEY_LEN: usize = 128;

/// How an answer is matched to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No key: the vehicle's oldest pending request.
    Next,
    /// This JSON field of both payloads (a string or a number).
    Field(String),
    /// The MQTT 5 correlation data of both messages.
    CorrelationData,
}

/// What makes an answer a success: `field` equals `equals`.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    /// The JSON field.
    pub field: String,
    /// The value meaning success.
    pub equals: serde_json::Value,
}

/// One journey's topics and payload reading.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneySpec {
    /// Its name.
    pub name: String,
    /// Backend to vehicle.
    pub request: Template,
    /// Vehicle to backend.
    pub response: Template,
    /// How answers are matched.
    pub key: KeySource,
    /// What a successful answer says.
    pub success: Success,
}

/// A request or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Backend to vehicle.
    Request,
    /// Vehicle to backend.
    Response,
}

/// What the MQTT side found out about a message on a journey topic.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyTap {
    /// The journey's index.
    pub journey: usize,
    /// Which way.
    pub direction: Direction,
    /// Its MQTT 5 correlation data, when the journey matches by it.
    pub correlation: Option<Bytes>,
}

/// A journey message as the rules take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyMessage<'t> {
    /// The vehicle in the topic.
    pub vehicle: &'t str,
    /// The matching key, if the journey uses one.
    pub key: Option<String>,
    /// An answer's verdict (false for a request).
    pub success: bool,
}

/// The configured journeys (cheap to clone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journeys(Arc<[JourneySpec]>);

impl Journeys {
    /// These journeys, in config order.
    pub fn new(specs: Vec<JourneySpec>) -> Journeys {
        Journeys(specs.into())
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The journeys in config order.
    pub fn specs(&self) -> &[JourneySpec] {
        &self.0
    }

    /// The journey and direction `topic` belongs to, if any.
    pub fn classify(&self, topic: &str) -> Option<(usize, Direction)> {
        self.0.iter().enumerate().find_map(|(i, j)| {
            if j.request.vehicle(topic).is_some() {
                Some((i, Direction::Request))
            } else if j.response.vehicle(topic).is_some() {
                Some((i, Direction::Response))
            } else {
                None
            }
        })
    }

    /// What the MQTT side passes on for `topic`, with the message's correlation data.
    pub fn tap(&self, topic: &str, correlation: Option<&Bytes>) -> Option<JourneyTap> {
        let (journey, direction) = self.classify(topic)?;
        let by_correlation = self.0[journey].key == KeySource::CorrelationData;
        Some(JourneyTap {
            journey,
            direction,
            correlation: correlation.filter(|_| by_correlation).cloned(),
        })
    }

    /// The filters an attached broker subscribes to: every journey's two topics.
    pub fn filters(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|j| [j.request.any_vehicle(), j.response.any_vehicle()])
            .collect()
    }
}

impl JourneySpec {
    /// Reads a message on one of this journey's topics.
    pub fn read<'t>(
        &self,
        direction: Direction,
        topic: &'t str,
        payload: &[u8],
        correlation: Option<&[u8]>,
    ) -> Result<JourneyMessage<'t>, Rejection> {
        let template = match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        };
        let vehicle = template
            .vehicle(topic)
            .ok_or_else(|| Rejection::UnknownTopic(topic.to_owned()))?;
        if !crate::contract::is_vehicle_id(vehicle) {
            return Err(Rejection::BadVehicleId(topic.to_owned()));
        }
        let needs_json =
            matches!(self.key, KeySource::Field(_)) || direction == Direction::Response;
        let json: serde_json::Value = if needs_json {
            serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?
        } else {
            serde_json::Value::Null
        };
        let key = match &self.key {
            KeySource::Next => None,
            KeySource::Field(field) => Some(match &json[field.as_str()] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => {
                    return Err(Rejection::Invalid(format!("no {field:?} to match by")))
                }
                _ => {
                    return Err(Rejection::Invalid(format!(
                        "{field:?} must be a string or a number"
                    )))
                }
            }),
            KeySource::CorrelationData => Some(match correlation {
                Some(data) => match std::str::from_utf8(data) {
                    Ok(s) => s.to_owned(),
                    Err(_) => data.iter().map(|b| format!("{b:02x}")).collect(),
                },
                None => return Err(Rejection::Invalid("no correlation data to match by".into())),
            }),
        };
        if let Some(k) = &key {
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(Rejection::Invalid(format!(
                    "the matching key must be 1 to {MAX_KEY_LEN} bytes"
                )));
            }
        }
        let success = direction == Direction::Response
            && json.get(self.success.field.as_str()) == Some(&self.success.equals);
        Ok(JourneyMessage {
            vehicle,
            key,
            success,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::TemplateKind;

    fn unlock(key: KeySource) -> Journeys {
        let t = |s: &str| Template::parse(s, TemplateKind::Vehicle).unwrap();
        Journeys::new(vec![JourneySpec {
            name: "unlock".into(),
            request: t("vehicles/{id}/lock/request"),
            response: t("vehicles/{id}/lock/result"),
            key,
            success: Success {
                field: "result".into(),
                equals: json!("unlocked"),
            },
        }])
    }

    fn read(j: &Journeys, topic: &str, payload: &str) -> Result<JourneyMessage<'static>, String> {
        let topic: &'static str = Box::leak(topic.to_owned().into_boxed_str());
        let (i, dir) = j.classify(topic).ok_or("not a journey topic")?;
        j.specs()[i]
            .read(dir, topic, payload.as_bytes(), None)
            .map_err(|e| e.label().to_owned())
    }

    #[test]
    fn requests_and_answers_are_told_apart_and_read() {
        let j = unlock(KeySource::Field("request_id".into()));
        let r = read(&j, "vehicles/sc-1/lock/request", r#"{"request_id":"r1"}"#).unwrap();
        assert_eq!(
            (r.vehicle, r.key.as_deref(), r.success),
            ("sc-1", Some("r1"), false)
        );
        let a = read(
            &j,
            "vehicles/sc-1/lock/result",
            r#"{"request_id":7,"result":"unlocked"}"#,
        )
        .unwrap();
        assert_eq!((a.key.as_deref(), a.success), (Some("7"), true));
        let a = read(
            &j,
            "vehicles/sc-1/lock/result",
            r#"{"request_id":"7","result":"jammed"}"#,
        )
        .unwrap();
        assert!(!a.success);
        assert_eq!(j.classify("vehicles/sc-1/heartbeat"), None);
        assert_eq!(j.classify("vehicles/sc-1/lock/result/x"), None);
    }

    #[test]
    fn bad_journey_messages_are_refused_with_a_reason() {
        let j = unlock(KeySource::Field("request_id".into()));
        assert_eq!(
            read(&j, "vehicles/sc-1/lock/request", "{}"),
            Err("invalid".into())
        );
        assert_eq!(
            read(&j, "vehicles/sc-1/lock/request", "nope"),
            Err("malformed".into())
        );
        assert_eq!(
            read(&j, "vehicles/sc-1/lock/request", r#"{"request_id":[1]}"#),
            Err("invalid".into())
        );
        assert_eq!(
            read(&j, "vehicles/a.b/lock/request", r#"{"request_id":"x"}"#),
            Err("bad_vehicle_id".into())
        );
        let long = format!(r#"{{"request_id":"{}"}}"#, "x".repeat(MAX_KEY_LEN + 1));
        assert_eq!(
            read(&j, "vehicles/sc-1/lock/request", &long),
            Err("invalid".into())
        );
    }

    #[test]
    fn without_a_key_a_request_payload_is_not_read_and_correlation_data_keys_both() {
        let j = unlock(KeySource::Next);
        let r = read(&j, "vehicles/sc-1/lock/request", "\u{0}binary").unwrap();
        assert_eq!(r.key, None);
        let j = unlock(KeySource::CorrelationData);
        let tap = j
            .tap(
                "vehicles/sc-1/lock/result",
                Some(&Bytes::from_static(b"\xff\x01")),
            )
            .unwrap();
        let m = j.specs()[0]
            .read(
                tap.direction,
                "vehicles/sc-1/lock/result",
                br#"{"result":"unlocked"}"#,
                tap.correlation.as_deref(),
            )
            .unwrap();
        assert_eq!(m.key.as_deref(), Some("ff01"));
        assert!(m.success);
        // Correlation data is only passed on for a journey that matches by it.
        let j = unlock(KeySource::Next);
        let tap = j
            .tap("vehicles/sc-1/lock/result", Some(&Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(tap.correlation, None);
    }
}
