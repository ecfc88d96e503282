//! Errors as JSON a person can act on: `{"error": "<code>", "message": "<what happened and
//! what to do>", ...details}` with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a sentence.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            www_authenticate: None,
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a vehicle the fleet does not know.
    pub fn unknown_vehicle(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_vehicle",
            format!(
                "vehicle {id:?} is not in the fleet: check the id (a vehicle registers with \
                 its first MQTT message), or list vehicles with GET /api/v1/vehicles"
            ),
        )
        .with("vehicle", Value::from(id))
    }

    /// 410 for a decommissioned vehicle.
    pub fn decommissioned(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::GONE,
            "decommissioned",
            format!(
                "vehicle {id:?} was decommissioned: it is no longer part of the fleet and \
                 its messages are refused"
            ),
        )
        .with("vehicle", Value::from(id))
    }

    /// 503 when the audit log cannot be read.
    pub fn history_unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_unavailable",
            format!("the audit log could not be read: {cause}; retry later"),
        )
    }

    /// 503 while the engine is stopping.
    pub fn engine_gone() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the broker is shutting down: retry in a few seconds",
        )
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.www_authenticate = Some("Bearer realm=\"fleet-broker\"");
        e
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.details.insert(key.to_owned(), value);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        body.extend(self.details);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<crate::engine::EngineGone> for ApiError {
    fn from(_: crate::engine::EngineGone) -> ApiError {
        ApiError::engine_gone()
    }
}
