//! The MQTT contract, the firmware's API, in one place: what a vehicle id and an error code
//! are, which topics exist and what each one is ([`Topics`]: contract v1 by default, or the
//! layout of `[topics]`), and MQTT filter arithmetic. Every other module (the ACL, ingest,
//! the engine's publishes, the ops API) asks here instead of spelling topics itself. A
//! crate of its own, shared by the broker and the simulated fleet.
#![deny(missing_docs)]

pub mod filter;
mod layout;
mod topics;

pub use layout::{LayoutProblem, LayoutSection};
pub use topics::{Overlap, Template, TemplateError, TemplateKind, Topic, Topics, VehicleTopic};

/// Longest vehicle id the contract allows.
pub const MAX_VEHICLE_ID_LEN: usize = 64;
/// Longest error code the contract allows.
pub const MAX_ERROR_CODE_LEN: usize = 64;

/// Whether `id` is a vehicle id: `[A-Za-z0-9_-]{1,64}`.
pub fn is_vehicle_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_VEHICLE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `code` is an error code: `[A-Z0-9_]{1,64}`.
pub fn is_error_code(code: &str) -> bool {
    (1..=MAX_ERROR_CODE_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The topics a vehicle publishes on: `vehicles/{id}/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UplinkKind {
    /// `vehicles/{id}/heartbeat`
    Heartbeat,
    /// `vehicles/{id}/error`
    Error,
    /// `vehicles/{id}/ack`
    Ack,
}

/// The per-vehicle topics only the broker publishes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownlinkKind {
    /// `vehicles/{id}/command`
    Command,
    /// `vehicles/{id}/service` (retained desired state)
    Service,
}

impl UplinkKind {
    /// Every uplink, in a fixed order.
    pub const ALL: [UplinkKind; 3] = [UplinkKind::Heartbeat, UplinkKind::Error, UplinkKind::Ack];

    /// The name of the uplink (its last level in contract v1).
    pub fn name(self) -> &'static str {
        match self {
            UplinkKind::Heartbeat => "heartbeat",
            UplinkKind::Error => "error",
            UplinkKind::Ack => "ack",
        }
    }
}

impl DownlinkKind {
    /// The name of the downlink (its last level in contract v1).
    pub fn name(self) -> &'static str {
        match self {
            DownlinkKind::Command => "command",
            DownlinkKind::Service => "service",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vehicle_ids_are_ascii_letters_digits_underscore_and_dash_up_to_64() {
        assert!(is_vehicle_id("v1"));
        assert!(is_vehicle_id("SC-0042_b"));
        assert!(is_vehicle_id(&"a".repeat(64)));
        for bad in ["", "a/b", "+", "#", "a b", "scooter.1", "vé"] {
            assert!(!is_vehicle_id(bad), "{bad:?}");
        }
        assert!(!is_vehicle_id(&"a".repeat(65)));
    }

    #[test]
    fn error_codes_are_upper_case_letters_digits_and_underscore_up_to_64() {
        assert!(is_error_code("BRAKE_SENSOR"));
        assert!(is_error_code("E42"));
        assert!(is_error_code(&"A".repeat(64)));
        for bad in ["", "brake", "BRAKE-SENSOR", "BRAKE SENSOR"] {
            assert!(!is_error_code(bad), "{bad:?}");
        }
        assert!(!is_error_code(&"A".repeat(65)));
    }
}
