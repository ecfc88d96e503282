//! Query strings and path parameters, checked with messages that name the bad value and
//! the allowed ones (an unknown parameter is an error, so a typo does not silently widen a
//! listing).

use std::ops::RangeInclusive;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};

use super::ApiError;
use crate::contract::is_vehicle_id;

/// The query parameters of one request.
#[derive(Debug)]
pub struct Params(Vec<(String, String)>);

/// What axum hands over for `?a=b&...`.
pub type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

impl Params {
    /// Checks the names against `allowed`; a name given twice is an error too.
    pub fn parse(raw: RawParams, allowed: &[&str]) -> Result<Params, ApiError> {
        let Query(pairs) = raw.map_err(|e| {
            ApiError::bad_request("bad_query", format!("the query string is not valid: {e}"))
        })?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {name:?}: this endpoint takes {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_request(
                    "repeated_parameter",
                    format!("query parameter {name:?} is given more than once"),
                ));
            }
        }
        Ok(Params(pairs))
    }

    /// The value of `name`, if given (an empty value counts as not given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// An integer within `range`.
    pub fn integer(&self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(
                "bad_parameter",
                format!(
                    "{name}={text:?} is not valid: use a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// One of `choices`, turned into a value by `pick`.
    pub fn choice<T>(
        &self,
        name: &str,
        choices: &[&str],
        pick: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        pick(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "bad_parameter",
                format!(
                    "{name}={text:?} is not valid: use one of {}",
                    choices.join(", ")
                ),
            )
        })
    }
}

/// The `{id}` of a vehicle path, checked against the MQTT contract's id rules.
pub fn vehicle_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| {
        ApiError::bad_request(
            "bad_path",
            format!("the vehicle id in the path is not valid: {e}"),
        )
    })?;
    if is_vehicle_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "bad_vehicle_id",
            format!("{id:?} is not a vehicle id: ids are 1 to 64 of A-Z a-z 0-9 _ -"),
        ))
    }
}
