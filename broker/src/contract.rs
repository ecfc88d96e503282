//! MQTT contract v1, the firmware's API, in one place: what a vehicle id and an error code
//! are, which topics exist and what each one is. Every other module (the ACL, ingest, the
//! engine's publishes, the ops API) asks here instead of spelling topics itself. A leaf:
//! it depends on nothing else in the crate.

/// Longest vehicle id the contract allows.
pub const MAX_VEHICLE_ID_LEN: usize = 64;
/// Longest error code the contract allows.
pub const MAX_ERROR_CODE_LEN: usize = 64;

/// The topic of every fleet event (one JSON object per change of a vehicle's reasons).
pub const FLEET_EVENTS: &str = "fleet/events";
/// The retained CMC SLI.
pub const FLEET_SLI: &str = "fleet/sli";
/// The retained SLO burn-rate alert state.
pub const FLEET_ALERTS: &str = "fleet/alerts";

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

/// What a topic name (or the literal levels of a filter) is in the contract. The vehicle
/// level is given as written: it may be a wildcard or not a valid vehicle id, so callers
/// check it with [`is_vehicle_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'t> {
    /// `vehicles/{vehicle}/heartbeat|error|ack`
    Uplink {
        /// The vehicle level.
        vehicle: &'t str,
        /// Which uplink.
        kind: UplinkKind,
    },
    /// `vehicles/{vehicle}/command|service`
    Downlink {
        /// The vehicle level.
        vehicle: &'t str,
        /// Which downlink.
        kind: DownlinkKind,
    },
    /// `fleet` or `fleet/...`: the broker's own topics.
    Fleet(&'t str),
    /// `vehicles/{vehicle}/{level}` with a last level that is none of the above
    /// (for a filter: `+` or `#`).
    Vehicle {
        /// The vehicle level.
        vehicle: &'t str,
        /// The last level.
        level: &'t str,
    },
    /// Anything else.
    Other,
}

impl UplinkKind {
    /// Every uplink, in a fixed order.
    pub const ALL: [UplinkKind; 3] = [UplinkKind::Heartbeat, UplinkKind::Error, UplinkKind::Ack];

    /// The topic's last level.
    pub fn level(self) -> &'static str {
        match self {
            UplinkKind::Heartbeat => "heartbeat",
            UplinkKind::Error => "error",
            UplinkKind::Ack => "ack",
        }
    }

    fn from_level(level: &str) -> Option<UplinkKind> {
        UplinkKind::ALL.into_iter().find(|k| k.level() == level)
    }
}

impl DownlinkKind {
    /// The topic's last level.
    pub fn level(self) -> &'static str {
        match self {
            DownlinkKind::Command => "command",
            DownlinkKind::Service => "service",
        }
    }

    fn from_level(level: &str) -> Option<DownlinkKind> {
        [DownlinkKind::Command, DownlinkKind::Service]
            .into_iter()
            .find(|k| k.level() == level)
    }
}

/// Sorts a topic name (or filter) into the contract's topics.
pub fn classify(topic: &str) -> Topic<'_> {
    let mut levels = topic.split('/');
    match (levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some("fleet"), ..) => Topic::Fleet(topic),
        (Some("vehicles"), Some(vehicle), Some(level), None) => {
            if let Some(kind) = UplinkKind::from_level(level) {
                Topic::Uplink { vehicle, kind }
            } else if let Some(kind) = DownlinkKind::from_level(level) {
                Topic::Downlink { vehicle, kind }
            } else {
                Topic::Vehicle { vehicle, level }
            }
        }
        _ => Topic::Other,
    }
}

/// `vehicles/{vehicle}/{kind}`: where the vehicle publishes that uplink.
pub fn uplink_topic(vehicle: &str, kind: UplinkKind) -> String {
    format!("vehicles/{vehicle}/{}", kind.level())
}

/// `vehicles/{vehicle}/command`: the vehicle's commands.
pub fn command_topic(vehicle: &str) -> String {
    format!("vehicles/{vehicle}/{}", DownlinkKind::Command.level())
}

/// `vehicles/{vehicle}/service`: the vehicle's retained desired state.
pub fn service_topic(vehicle: &str) -> String {
    format!("vehicles/{vehicle}/{}", DownlinkKind::Service.level())
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

    #[test]
    fn topics_are_sorted_into_uplinks_downlinks_fleet_topics_and_the_rest() {
        assert_eq!(
            classify("vehicles/v1/heartbeat"),
            Topic::Uplink {
                vehicle: "v1",
                kind: UplinkKind::Heartbeat
            }
        );
        assert_eq!(
            classify("vehicles/+/service"),
            Topic::Downlink {
                vehicle: "+",
                kind: DownlinkKind::Service
            }
        );
        assert_eq!(classify("fleet/sli"), Topic::Fleet("fleet/sli"));
        assert_eq!(classify("fleet"), Topic::Fleet("fleet"));
        assert_eq!(
            classify("vehicles/v1/#"),
            Topic::Vehicle {
                vehicle: "v1",
                level: "#"
            }
        );
        for other in [
            "",
            "vehicles",
            "vehicles/v1",
            "vehicles/v1/heartbeat/x",
            "x/y/z",
        ] {
            assert_eq!(classify(other), Topic::Other, "{other:?}");
        }
    }

    #[test]
    fn the_builders_write_the_topics_classify_reads() {
        for kind in UplinkKind::ALL {
            let topic = uplink_topic("v1", kind);
            assert_eq!(
                classify(&topic),
                Topic::Uplink {
                    vehicle: "v1",
                    kind
                }
            );
        }
        assert_eq!(command_topic("v1"), "vehicles/v1/command");
        assert_eq!(service_topic("v1"), "vehicles/v1/service");
        for fleet in [FLEET_EVENTS, FLEET_SLI, FLEET_ALERTS] {
            assert!(matches!(classify(fleet), Topic::Fleet(_)));
        }
    }
}
