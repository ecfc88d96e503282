//! Rider journeys on the wire: a backend's lock request to a vehicle and the vehicle's
//! answer, their topics (templates with one `{id}` level) and payloads, and how a
//! simulated vehicle answers. [`crate::backend`] is the side that sends the requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The level of a topic template that stands for the vehicle id.
pub const ID_LEVEL: &str = "{id}";
/// Default request topic (backend -> vehicle).
pub const DEFAULT_REQUEST: &str = "vehicles/{id}/lock/request";
/// Default answer topic (vehicle -> backend).
pub const DEFAULT_RESPONSE: &str = "vehicles/{id}/lock/result";
/// Default time a vehicle takes to answer (the lock's mechanics).
pub const DEFAULT_ANSWER_DELAY: Duration = Duration::from_millis(20);
/// The error a vehicle with [`UnlockPolicy::Fail`] answers.
pub const LOCK_JAMMED: &str = "lock_jammed";
/// The error for a request whose `action` is neither `unlock` nor `lock`.
pub const UNKNOWN_ACTION: &str = "unknown_action";

/// Why journey settings are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JourneyError {
    /// A topic template without exactly one `{id}` level, or with wildcards.
    #[error("{which} topic template {template:?}: {problem}")]
    Template {
        /// `request` or `response`.
        which: &'static str,
        /// The template as given.
        template: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The same template for both directions: a vehicle would answer its own answers.
    #[error("request and response topic templates are both {0:?}: they must differ")]
    SameTemplates(String),
}

/// One template split around its `{id}` level.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    before: String,
    after: String,
}

impl Template {
    fn parse(which: &'static str, template: &str) -> Result<Template, JourneyError> {
        let bad = |problem| JourneyError::Template {
            which,
            template: template.to_owned(),
            problem,
        };
        if template.contains(['+', '#', '\0']) {
            return Err(bad("wildcards (+, #) and NUL are not allowed"));
        }
        let levels: Vec<&str> = template.split('/').collect();
        if levels.iter().filter(|l| **l == ID_LEVEL).count() != 1 {
            return Err(bad("needs exactly one level that is exactly {id}"));
        }
        if levels
            .iter()
            .any(|l| *l != ID_LEVEL && l.contains(['{', '}']))
        {
            return Err(bad(
                "{id} must be a whole level, e.g. vehicles/{id}/lock/request",
            ));
        }
        Ok(Template::split(template))
    }

    /// `template` around its first `{id}` (checked by `parse`).
    fn split(template: &str) -> Template {
        let (before, after) = template.split_once(ID_LEVEL).unwrap_or((template, ""));
        Template {
            before: before.to_owned(),
            after: after.to_owned(),
        }
    }

    fn fill(&self, id: &str) -> String {
        format!("{}{id}{}", self.before, self.after)
    }

    /// The id level of `topic`, if `topic` has this template's shape.
    fn id_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let id = topic
            .strip_prefix(self.before.as_str())?
            .strip_suffix(self.after.as_str())?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// Where lock requests and their answers go: two topic templates with an `{id}` level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyTopics {
    request: Template,
    response: Template,
}

impl Default for JourneyTopics {
    /// [`DEFAULT_REQUEST`] and [`DEFAULT_RESPONSE`] (valid: a unit test checks it).
    fn default() -> Self {
        JourneyTopics {
            request: Template::split(DEFAULT_REQUEST),
            response: Template::split(DEFAULT_RESPONSE),
        }
    }
}

impl JourneyTopics {
    /// Checks both templates, e.g. `vehicles/{id}/lock/request` and `vehicles/{id}/lock/result`.
    pub fn new(request: &str, response: &str) -> Result<JourneyTopics, JourneyError> {
        if request == response {
            return Err(JourneyError::SameTemplates(request.to_owned()));
        }
        Ok(JourneyTopics {
            request: Template::parse("request", request)?,
            response: Template::parse("response", response)?,
        })
    }

    /// The request topic of vehicle `id`.
    pub fn request(&self, id: &str) -> String {
        self.request.fill(id)
    }

    /// The answer topic of vehicle `id`.
    pub fn response(&self, id: &str) -> String {
        self.response.fill(id)
    }

    /// The filter matching every vehicle's answer topic (`{id}` as `+`).
    pub fn response_filter(&self) -> String {
        self.response.fill("+")
    }

    /// The vehicle whose answer topic `topic` is.
    pub fn vehicle_of_response<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.response.id_of(topic)
    }
}

/// A lock request as sent by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// Unique per request; the answer carries it back.
    pub request_id: String,
    /// `unlock` or `lock`.
    pub action: String,
}

/// A vehicle's answer to a [`LockRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockResult {
    /// The request's id.
    pub request_id: String,
    /// Done as asked.
    pub ok: bool,
    /// Why not (with `ok = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a vehicle answers lock requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum UnlockPolicy {
    /// Answer `ok = true` after the answer delay.
    #[default]
    Answer = 0,
    /// Answer `ok = false` with [`LOCK_JAMMED`].
    Fail = 1,
    /// Never answer (heartbeats go on).
    Silent = 2,
}

impl UnlockPolicy {
    pub(crate) fn from_u8(x: u8) -> UnlockPolicy {
        match x {
            1 => UnlockPolicy::Fail,
            2 => UnlockPolicy::Silent,
            _ => UnlockPolicy::Answer,
        }
    }
}

/// How simulated vehicles take part in journeys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JourneyOptions {
    /// Request and answer topics.
    pub topics: JourneyTopics,
    /// Time from a request's arrival to its answer (default [`DEFAULT_ANSWER_DELAY`]).
    pub answer_delay: Duration,
    /// How every vehicle answers at first (failure injection changes it per vehicle).
    pub policy: UnlockPolicy,
}

impl JourneyOptions {
    /// The default topics and delay with every vehicle answering `ok = true`.
    pub fn answering() -> JourneyOptions {
        JourneyOptions {
            answer_delay: DEFAULT_ANSWER_DELAY,
            ..JourneyOptions::default()
        }
    }
}

/// The answer a vehicle with `policy` publishes to the request `payload`: `Ok(None)` when
/// it stays silent, an error when the payload is not a lock request.
pub fn answer_to(
    payload: &[u8],
    policy: UnlockPolicy,
) -> Result<Option<String>, serde_json::Error> {
    let req: LockRequest = serde_json::from_slice(payload)?;
    if policy == UnlockPolicy::Silent {
        return Ok(None);
    }
    let error = match req.action.as_str() {
        "unlock" | "lock" if policy == UnlockPolicy::Answer => None,
        "unlock" | "lock" => Some(LOCK_JAMMED.to_owned()),
        _ => Some(UNKNOWN_ACTION.to_owned()),
    };
    let result = LockResult {
        request_id: req.request_id,
        ok: error.is_none(),
        error,
    };
    serde_json::to_string(&result).map(Some)
}

/// Answers (or anything) waiting for their due time; see [`deliver_when_due`].
pub(crate) type DueQueue<T> = mpsc::Sender<(Instant, T)>;

/// Hands each queued item to `deliver` once its due time has come, in queue order (one
/// delay for every item, so queue order is due order). Ends when every sender is gone.
pub(crate) async fn deliver_when_due<T>(
    mut queue: mpsc::Receiver<(Instant, T)>,
    mut deliver: impl FnMut(T),
) {
    while let Some((due, item)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        deliver(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_templates_are_valid() {
        let t = JourneyTopics::new(DEFAULT_REQUEST, DEFAULT_RESPONSE).unwrap();
        assert_eq!(t, JourneyTopics::default());
        assert_eq!(t.request("v-1"), "vehicles/v-1/lock/request");
        assert_eq!(t.response("v-1"), "vehicles/v-1/lock/result");
        assert_eq!(t.response_filter(), "vehicles/+/lock/result");
    }

    #[test]
    fn the_vehicle_is_read_back_from_an_answer_topic() {
        let t = JourneyTopics::new("fleet/{id}/unlock", "{id}/unlocked").unwrap();
        assert_eq!(t.response_filter(), "+/unlocked");
        assert_eq!(t.vehicle_of_response("v7/unlocked"), Some("v7"));
        assert_eq!(t.vehicle_of_response("a/b/unlocked"), None);
        assert_eq!(t.vehicle_of_response("/unlocked"), None);
        assert_eq!(t.vehicle_of_response("v7/locked"), None);
    }

    #[test]
    fn templates_without_one_whole_id_level_are_refused() {
        for (req, problem) in [
            ("vehicles/lock/request", "exactly one"),
            ("vehicles/{id}/{id}/request", "exactly one"),
            ("vehicles/x{id}/request", "exactly one"),
            ("vehicles/{id}/{ids}", "whole level"),
            ("vehicles/+/{id}", "wildcards"),
        ] {
            let err = JourneyTopics::new(req, DEFAULT_RESPONSE).expect_err(req);
            assert!(err.to_string().contains(problem), "{req}: {err}");
            assert!(err.to_string().contains(req), "{req}: {err}");
        }
        assert!(matches!(
            JourneyTopics::new(DEFAULT_RESPONSE, DEFAULT_RESPONSE),
            Err(JourneyError::SameTemplates(_))
        ));
    }

    #[test]
    fn a_vehicle_answers_by_its_policy_with_the_request_id() {
        let req = br#"{"request_id":"r-\"1","action":"unlock"}"#;
        assert_eq!(
            answer_to(req, UnlockPolicy::Answer).unwrap().as_deref(),
            Some(r#"{"request_id":"r-\"1","ok":true}"#)
        );
        assert_eq!(
            answer_to(req, UnlockPolicy::Fail).unwrap().as_deref(),
            Some(r#"{"request_id":"r-\"1","ok":false,"error":"lock_jammed"}"#)
        );
        assert_eq!(answer_to(req, UnlockPolicy::Silent).unwrap(), None);
    }

    #[test]
    fn an_unknown_action_is_answered_as_a_failure_and_garbage_is_an_error() {
        let a = answer_to(
            br#"{"request_id":"r","action":"fly"}"#,
            UnlockPolicy::Answer,
        );
        let r: LockResult = serde_json::from_str(&a.unwrap().unwrap()).unwrap();
        assert_eq!((r.ok, r.error.as_deref()), (false, Some(UNKNOWN_ACTION)));
        assert!(answer_to(b"{not json", UnlockPolicy::Answer).is_err());
        assert!(answer_to(br#"{"action":"unlock"}"#, UnlockPolicy::Answer).is_err());
    }
}
