//! `[[journeys]]`: rider journeys (an unlock) measured on the fleet's own request and
//! answer topics, checked and turned into what the MQTT side taps and the rules track.

use serde::Deserialize;

use super::duration::HumanDuration;
use super::validate::Checker;
use crate::contract::{Template, TemplateKind, Topic, Topics};
use crate::journeys::{JourneySpec, Journeys, KeySource, Success, MAX_JOURNEYS};

/// `key` value that matches answers by MQTT 5 correlation data.
pub const CORRELATION_DATA: &str = "$correlation_data";

/// `[[journeys]]`: one journey.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JourneySection {
    /// Its name, e.g. `unlock` (1 to 32 of a-z 0-9 _ -).
    pub name: String,
    /// The request topic (backend to vehicle), e.g. `vehicles/{id}/lock/request`.
    pub request: String,
    /// The answer topic (vehicle to backend), e.g. `vehicles/{id}/lock/result`.
    pub response: String,
    /// How an answer is matched to its request: a JSON field of both payloads (e.g.
    /// `request_id`), `"$correlation_data"` (MQTT 5), or absent: the vehicle's next answer.
    pub key: Option<String>,
    /// What a successful answer says.
    pub success: SuccessSection,
    /// An answer later than this is too late: the request timed out.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// SLO target: share of requests answered with success in time.
    #[serde(default = "default_target")]
    pub target: f64,
    /// SLO window (default: `slo.window`).
    pub window: Option<HumanDuration>,
    /// Requests pending for one vehicle at most (more are refused and counted).
    #[serde(default = "default_per_vehicle")]
    pub max_pending_per_vehicle: usize,
    /// Requests pending in all at most.
    #[serde(default = "default_pending")]
    pub max_pending: usize,
    /// Failed or timed-out requests within `failures_window` that take an in-service
    /// vehicle out with `journey_failures{name}`; 0 (the default) only measures.
    #[serde(default)]
    pub failures: u32,
    /// The rule's sliding window.
    #[serde(default = "default_failures_window")]
    pub failures_window: HumanDuration,
    /// `"auto"`: the vehicle's next success brings it back; `"manual"`: only a person.
    #[serde(default)]
    pub recovery: RecoverySection,
}

/// `journeys[].success`: `field` equals `equals`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuccessSection {
    /// A JSON field of the answer.
    pub field: String,
    /// The value that means success: a boolean, a string or an integer.
    pub equals: toml::Value,
}

/// `journeys[].recovery`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecoverySection {
    /// The next success.
    #[default]
    Auto,
    /// A person.
    Manual,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_target() -> f64 {
    0.99
}
fn default_per_vehicle() -> usize {
    4
}
fn default_pending() -> usize {
    100_000
}
fn default_failures_window() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

fn is_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The journeys, checked against the layout: each problem named by its key.
pub(super) fn journeys(
    sections: &[JourneySection],
    layout: Option<&Topics>,
    k: &mut Checker,
) -> Journeys {
    k.check(
        sections.len() <= MAX_JOURNEYS,
        "journeys",
        format!("{} journeys; at most {MAX_JOURNEYS}", sections.len()),
    );
    let mut specs: Vec<JourneySpec> = Vec::new();
    for (i, j) in sections.iter().enumerate() {
        let key = format!("journeys[{i}]");
        k.check(
            is_name(&j.name),
            format!("{key}.name"),
            format!("{:?} is not a name: 1 to 32 of a-z 0-9 _ -", j.name),
        );
        k.check(
            !sections[..i].iter().any(|o| o.name == j.name),
            format!("{key}.name"),
            format!("{:?} names two journeys", j.name),
        );
        let mut template = |text: &str, field: &str| -> Option<Template> {
            let t = match Template::parse(text, TemplateKind::Vehicle) {
                Ok(t) => t,
                Err(e) => {
                    k.check(false, format!("{key}.{field}"), e.to_string());
                    return None;
                }
            };
            let sample = t.with_id("sample-vehicle");
            let contract = layout.is_some_and(|l| !matches!(l.classify(&sample), Topic::Other));
            k.check(
                !contract,
                format!("{key}.{field}"),
                format!("{text:?} is a topic of the contract layout ([topics]): a journey's topics are the fleet's own"),
            );
            let taken = specs.iter().any(|s| {
                s.request.vehicle(&sample).is_some() || s.response.vehicle(&sample).is_some()
            });
            k.check(
                !taken,
                format!("{key}.{field}"),
                format!("{text:?} is a topic of another journey"),
            );
            Some(t)
        };
        let request = template(&j.request, "request");
        let response = template(&j.response, "response");
        if let (Some(req), Some(resp)) = (&request, &response) {
            k.check(
                req.vehicle(&resp.with_id("sample-vehicle")).is_none(),
                format!("{key}.response"),
                "must differ from the request topic",
            );
        }
        let key_source = match j.key.as_deref() {
            None => KeySource::Next,
            Some(CORRELATION_DATA) => KeySource::CorrelationData,
            Some(field) => {
                k.check(
                    (1..=64).contains(&field.len()),
                    format!("{key}.key"),
                    "a JSON field name of 1 to 64 bytes, or \"$correlation_data\"",
                );
                KeySource::Field(field.to_owned())
            }
        };
        let equals = match &j.success.equals {
            toml::Value::Boolean(b) => Some(serde_json::Value::Bool(*b)),
            toml::Value::String(s) => Some(serde_json::Value::String(s.clone())),
            toml::Value::Integer(n) => Some(serde_json::Value::from(*n)),
            _ => None,
        };
        k.check(
            equals.is_some(),
            format!("{key}.success.equals"),
            "must be a boolean, a string or an integer",
        );
        k.check(
            !j.success.field.is_empty(),
            format!("{key}.success.field"),
            "must name a JSON field of the answer",
        );
        k.positive(j.timeout.0, format!("{key}.timeout"));
        k.check(
            j.timeout.0.as_secs() <= 3600,
            format!("{key}.timeout"),
            "at most 1h",
        );
        k.check(
            j.target > 0.0 && j.target < 1.0,
            format!("{key}.target"),
            format!("{} must be between 0 and 1, e.g. 0.99", j.target),
        );
        if let Some(w) = j.window {
            k.check(
                w.0.as_secs() >= 3600,
                format!("{key}.window"),
                "at least 1h",
            );
        }
        k.check(
            (1..=1000).contains(&j.max_pending_per_vehicle),
            format!("{key}.max_pending_per_vehicle"),
            "1 to 1000",
        );
        k.check(
            (1..=10_000_000).contains(&j.max_pending),
            format!("{key}.max_pending"),
            "1 to 10000000",
        );
        k.check(
            j.failures <= 1000,
            format!("{key}.failures"),
            "0 (measure only) to 1000",
        );
        k.positive(j.failures_window.0, format!("{key}.failures_window"));
        if let (Some(request), Some(response), Some(equals)) = (request, response, equals) {
            specs.push(JourneySpec {
                name: j.name.clone(),
                request,
                response,
                key: key_source,
                success: Success {
                    field: j.success.field.clone(),
                    equals,
                },
            });
        }
    }
    Journeys::new(specs)
}

/// What the rules take of each journey (already checked).
pub(super) fn rules(
    sections: &[JourneySection],
    slo_window: std::time::Duration,
) -> Vec<fleet_rules::JourneyConfig> {
    sections
        .iter()
        .map(|j| fleet_rules::JourneyConfig {
            name: j.name.clone(),
            timeout: j.timeout.0,
            max_pending_per_vehicle: j.max_pending_per_vehicle,
            max_pending: j.max_pending,
            target: j.target,
            window: j.window.map_or(slo_window, |w| w.0),
            rule: (j.failures > 0).then_some(fleet_rules::JourneyRule {
                failures: j.failures,
                window: j.failures_window.0,
                recovery: match j.recovery {
                    RecoverySection::Auto => fleet_rules::Recovery::Auto,
                    RecoverySection::Manual => fleet_rules::Recovery::Manual,
                },
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const UNLOCK: &str = r#"
[[journeys]]
name = "unlock"
request = "vehicles/{id}/lock/request"
response = "vehicles/{id}/lock/result"
key = "request_id"
success = { field = "ok", equals = true }
failures = 3
recovery = "manual"
"#;

    #[test]
    fn a_journey_reaches_the_rules_and_the_taps() {
        let s = Config::parse(UNLOCK).unwrap().settings().unwrap();
        let j = &s.rules.journeys[0];
        assert_eq!((j.name.as_str(), j.timeout.as_secs()), ("unlock", 10));
        assert_eq!(
            j.rule.as_ref().map(|r| (r.failures, r.recovery)),
            Some((3, fleet_rules::Recovery::Manual))
        );
        assert_eq!(
            s.engine.journeys.classify("vehicles/v1/lock/result"),
            Some((0, crate::journeys::Direction::Response))
        );
        assert_eq!(
            s.engine.journeys.filters(),
            ["vehicles/+/lock/request", "vehicles/+/lock/result"]
        );
    }

    /// The README's "Measure unlocks" config is valid as printed, once its password hash
    /// placeholder is a real one and a fleet key is set (the README's auth section).
    #[test]
    fn the_readme_unlock_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("### Measure unlocks")
            .nth(1)
            .and_then(|s| s.split("```toml\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("the README has a Measure unlocks config");
        let text = format!(
            "[auth]\nmode = \"hmac\"\nfleet_key = \"0123456789abcdef0123456789abcdef\"\n{}",
            block.replace(
                "$pbkdf2-sha256$...",
                "$pbkdf2-sha256$i=10$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            )
        );
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.rules.journeys[0].name, "unlock");
        assert_eq!(
            s.rules.journeys[0].rule.as_ref().map(|r| r.failures),
            Some(3)
        );
    }

    #[test]
    fn every_problem_of_a_journey_is_named_by_its_key() {
        let bad = r#"
[[journeys]]
name = "Unlock!"
request = "vehicles/{id}/heartbeat"
response = "vehicles/{id}/lock/+"
success = { field = "", equals = 1.5 }
timeout = "0s"
target = 1.0
max_pending = 0
"#;
        let errors = Config::parse(bad).unwrap().settings().unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "journeys[0].name",
            "journeys[0].request",
            "journeys[0].response",
            "journeys[0].success.field",
            "journeys[0].success.equals",
            "journeys[0].timeout",
            "journeys[0].target",
            "journeys[0].max_pending",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let twice = format!("{UNLOCK}{UNLOCK}");
        let errors = Config::parse(&twice).unwrap().settings().unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"journeys[1].name") && keys.contains(&"journeys[1].request"));
    }
}
