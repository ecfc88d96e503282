//! Bearer-token check for the writing endpoints. Without a configured token every write is
//! refused (403) with a message saying how to set one: the API never accepts an
//! unauthenticated change. A missing or wrong token is 401.

use axum::http::{header, HeaderMap, StatusCode};

use super::ApiError;

/// Checks `Authorization: Bearer <token>` against `expected`.
pub fn authorize(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes_disabled",
            "manual service-in and service-out are disabled because no API token is \
             configured: set [http] token in the broker's config file (16+ characters) or \
             FLEET_API_TOKEN in its environment, restart it, and send \
             'Authorization: Bearer <token>'",
        ));
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this endpoint needs the API token: send 'Authorization: Bearer <token>' \
             (the CLI reads it from --token or FLEET_API_TOKEN)",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "the API token is not the one configured on the broker: check --token or \
             FLEET_API_TOKEN",
        )),
        None => Err(ApiError::unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        )),
    }
}

/// Compares without returning early on the first difference, so the time taken does not
/// tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn no_configured_token_refuses_every_write_with_403() {
        let e = authorize(None, &with_auth("Bearer anything")).expect_err("refused");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_missing_wrong_or_malformed_token_is_401_and_the_right_one_passes() {
        let token = Some("0123456789abcdef");
        assert_eq!(
            authorize(token, &HeaderMap::new()).map_err(|e| e.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            authorize(token, &with_auth("Bearer 0123456789abcdeX")).map_err(|e| e.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            authorize(token, &with_auth("Basic 0123456789abcdef")).map_err(|e| e.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(authorize(token, &with_auth("Bearer 0123456789abcdef")).is_ok());
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
