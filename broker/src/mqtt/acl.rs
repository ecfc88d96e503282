//! Topic rules of MQTT contract v1 ("Identity and access" in DESIGN.md), as pure functions.
//!
//! A vehicle's client id is its vehicle id. It may publish only its own uplink topics and
//! subscribe only its own downlink topics; observer users read `fleet/#` and every
//! vehicle's service state and publish nothing. With authentication off (`Role::Anonymous`)
//! everyone may also read the observer topics. Everything else is denied with a reason, so
//! the broker can count and log each kind of refusal. What the topics are comes from
//! [`crate::contract`].

use std::fmt;

use crate::contract::{
    classify, is_vehicle_id, DownlinkKind, Topic, UplinkKind, FLEET_ALERTS, FLEET_EVENTS, FLEET_SLI,
};

/// Which topic rules apply to a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `auth.mode = "none"`: nobody proved anything; a client whose id is a vehicle id
    /// acts for that vehicle and everyone may read the observer topics.
    Anonymous,
    /// An authenticated vehicle: its own uplinks, its own command and service topics.
    Vehicle,
    /// An authenticated backend or ops user: reads `fleet/#` and `vehicles/+/service`,
    /// publishes nothing.
    Observer,
}

/// Whether the broker itself may publish to `topic`: a non-empty topic name without
/// wildcards, NUL or a leading `$`, within MQTT's 65,535-byte limit.
pub fn is_publishable_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= usize::from(u16::MAX)
        && !topic.starts_with('$')
        && !topic.contains(['+', '#', '\0'])
}

/// Why a client's PUBLISH was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishDenied {
    /// The payload is larger than the configured maximum.
    Oversize,
    /// The topic name contains `+` or `#`.
    Wildcard,
    /// A topic only the broker publishes: `vehicles/{id}/command|service`, `fleet/...`.
    BrokerOnly,
    /// An uplink topic of a vehicle other than the publishing client.
    OtherVehicle,
    /// The client id is not a vehicle id, so the client owns no uplink topic.
    NotAVehicle,
    /// Not a topic of the contract.
    UnknownTopic,
    /// An observer user publishes nothing.
    ReadOnly,
}

impl PublishDenied {
    /// Every reason, in a fixed order (for counters and metrics labels).
    pub const ALL: [PublishDenied; 7] = [
        PublishDenied::Oversize,
        PublishDenied::Wildcard,
        PublishDenied::BrokerOnly,
        PublishDenied::OtherVehicle,
        PublishDenied::NotAVehicle,
        PublishDenied::UnknownTopic,
        PublishDenied::ReadOnly,
    ];

    /// A short snake_case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishDenied::Oversize => "oversize",
            PublishDenied::Wildcard => "wildcard",
            PublishDenied::BrokerOnly => "broker_only",
            PublishDenied::OtherVehicle => "other_vehicle",
            PublishDenied::NotAVehicle => "not_a_vehicle",
            PublishDenied::UnknownTopic => "unknown_topic",
            PublishDenied::ReadOnly => "read_only",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PublishDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client's SUBSCRIBE to one topic filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeDenied {
    /// A `$`-topic (`$SYS/...`, `$share/...`).
    SystemTopic,
    /// A wildcard filter that would read other vehicles' commands or uplinks
    /// (`#`, `+/...`, `vehicles/#`, `vehicles/+/command`).
    TooBroad,
    /// A filter that matches vehicle uplink topics (heartbeat, error, ack).
    Uplink,
    /// Another vehicle's command topic.
    OtherVehicle,
    /// The client id is not a vehicle id, so the client owns no command topic.
    NotAVehicle,
    /// Not a topic of the contract.
    UnknownTopic,
    /// A topic only observer users may read (with authentication on): `fleet/...`.
    ObserversOnly,
}

impl SubscribeDenied {
    /// Every reason, in a fixed order (for counters and metrics labels).
    pub const ALL: [SubscribeDenied; 7] = [
        SubscribeDenied::SystemTopic,
        SubscribeDenied::TooBroad,
        SubscribeDenied::Uplink,
        SubscribeDenied::OtherVehicle,
        SubscribeDenied::NotAVehicle,
        SubscribeDenied::UnknownTopic,
        SubscribeDenied::ObserversOnly,
    ];

    /// A short snake_case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscribeDenied::SystemTopic => "system_topic",
            SubscribeDenied::TooBroad => "too_broad",
            SubscribeDenied::Uplink => "uplink",
            SubscribeDenied::OtherVehicle => "other_vehicle",
            SubscribeDenied::NotAVehicle => "not_a_vehicle",
            SubscribeDenied::UnknownTopic => "unknown_topic",
            SubscribeDenied::ObserversOnly => "observers_only",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SubscribeDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether client `client_id` may publish `payload_len` bytes to `topic`, with
/// authentication off (`Role::Anonymous`).
///
/// Allowed: `vehicles/{client_id}/heartbeat|error|ack`, when `client_id` is a vehicle id
/// and the payload is at most `max_payload` bytes.
pub fn check_publish(
    client_id: &str,
    topic: &str,
    payload_len: usize,
    max_payload: usize,
) -> Result<UplinkKind, PublishDenied> {
    check_publish_as(Role::Anonymous, client_id, topic, payload_len, max_payload)
}

/// Decides whether a client of `role` may publish: vehicles (and anonymous clients) as
/// `check_publish`; observer users never.
pub fn check_publish_as(
    role: Role,
    client_id: &str,
    topic: &str,
    payload_len: usize,
    max_payload: usize,
) -> Result<UplinkKind, PublishDenied> {
    if payload_len > max_payload {
        return Err(PublishDenied::Oversize);
    }
    if topic.contains(['+', '#']) {
        return Err(PublishDenied::Wildcard);
    }
    match classify(topic) {
        Topic::Fleet(_) | Topic::Downlink { .. } => Err(PublishDenied::BrokerOnly),
        Topic::Uplink { vehicle, kind } => {
            if role == Role::Observer {
                Err(PublishDenied::ReadOnly)
            } else if !is_vehicle_id(client_id) {
                Err(PublishDenied::NotAVehicle)
            } else if vehicle != client_id {
                Err(PublishDenied::OtherVehicle)
            } else {
                Ok(kind)
            }
        }
        Topic::Vehicle { .. } | Topic::Other => Err(PublishDenied::UnknownTopic),
    }
}

/// Decides whether client `client_id` may subscribe to `filter`, with authentication off
/// (`Role::Anonymous`).
///
/// Allowed: `vehicles/{client_id}/command`, `vehicles/{client_id}/service`, and, for
/// everyone while authentication is off, the read-only observer filters
/// `vehicles/+/service`, `vehicles/{any id}/service`, `fleet/events`, `fleet/sli`,
/// `fleet/alerts`, `fleet/+` and `fleet/#`.
pub fn check_subscribe(client_id: &str, filter: &str) -> Result<(), SubscribeDenied> {
    check_subscribe_as(Role::Anonymous, client_id, filter)
}

/// Decides whether a client of `role` may subscribe to `filter`.
///
/// - `Vehicle`: `vehicles/{client_id}/command` and `vehicles/{client_id}/service` only.
/// - `Observer`: the observer filters (`fleet/...`, `vehicles/+/service`,
///   `vehicles/{any id}/service`), never a command topic.
/// - `Anonymous`: both of the above, as `check_subscribe`.
pub fn check_subscribe_as(
    role: Role,
    client_id: &str,
    filter: &str,
) -> Result<(), SubscribeDenied> {
    if filter.starts_with('$') {
        return Err(SubscribeDenied::SystemTopic);
    }
    let observer_topic = |broad: SubscribeDenied| match role {
        Role::Anonymous | Role::Observer => Ok(()),
        Role::Vehicle => Err(broad),
    };
    match classify(filter) {
        Topic::Fleet(_) => {
            let observed = [FLEET_EVENTS, FLEET_SLI, FLEET_ALERTS, "fleet/+", "fleet/#"];
            if observed.contains(&filter) {
                observer_topic(SubscribeDenied::ObserversOnly)
            } else {
                Err(SubscribeDenied::UnknownTopic)
            }
        }
        Topic::Downlink {
            vehicle: "+",
            kind: DownlinkKind::Service,
        } => observer_topic(SubscribeDenied::TooBroad),
        Topic::Downlink {
            vehicle,
            kind: DownlinkKind::Service,
        } if is_vehicle_id(vehicle) => {
            if role == Role::Vehicle && vehicle != client_id {
                Err(SubscribeDenied::OtherVehicle)
            } else {
                Ok(())
            }
        }
        Topic::Downlink {
            vehicle,
            kind: DownlinkKind::Command,
        } if is_vehicle_id(vehicle) => {
            if role == Role::Observer || !is_vehicle_id(client_id) {
                Err(SubscribeDenied::NotAVehicle)
            } else if vehicle != client_id {
                Err(SubscribeDenied::OtherVehicle)
            } else {
                Ok(())
            }
        }
        Topic::Uplink { .. }
        | Topic::Vehicle {
            level: "+" | "#", ..
        } => Err(SubscribeDenied::Uplink),
        _ if reaches_every_vehicle(filter) => Err(SubscribeDenied::TooBroad),
        _ => Err(SubscribeDenied::UnknownTopic),
    }
}

/// `#`, `+/...`, `vehicles/+/...`, `vehicles/#`: a wildcard at the vehicle level or above.
fn reaches_every_vehicle(filter: &str) -> bool {
    let mut levels = filter.split('/');
    matches!(
        (levels.next(), levels.next()),
        (Some("#" | "+"), _) | (Some("vehicles"), Some("+" | "#"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn publish(client: &str, topic: &str) -> Result<UplinkKind, PublishDenied> {
        check_publish(client, topic, 10, MAX)
    }

    #[test]
    fn a_vehicle_may_publish_its_own_heartbeat_error_and_ack() {
        assert_eq!(
            publish("v1", "vehicles/v1/heartbeat"),
            Ok(UplinkKind::Heartbeat)
        );
        assert_eq!(publish("v1", "vehicles/v1/error"), Ok(UplinkKind::Error));
        assert_eq!(publish("v1", "vehicles/v1/ack"), Ok(UplinkKind::Ack));
    }

    #[test]
    fn a_vehicle_may_not_publish_on_another_vehicles_uplink_topics() {
        assert_eq!(
            publish("v1", "vehicles/v2/heartbeat"),
            Err(PublishDenied::OtherVehicle)
        );
        assert_eq!(
            publish("v1", "vehicles/v2/error"),
            Err(PublishDenied::OtherVehicle)
        );
        assert_eq!(
            publish("v1", "vehicles/v10/ack"),
            Err(PublishDenied::OtherVehicle)
        );
    }

    #[test]
    fn nobody_may_publish_commands_service_state_or_fleet_topics() {
        assert_eq!(
            publish("v1", "vehicles/v1/command"),
            Err(PublishDenied::BrokerOnly)
        );
        assert_eq!(
            publish("v1", "vehicles/v1/service"),
            Err(PublishDenied::BrokerOnly)
        );
        assert_eq!(
            publish("v1", "vehicles/v2/command"),
            Err(PublishDenied::BrokerOnly)
        );
        assert_eq!(publish("v1", "fleet/sli"), Err(PublishDenied::BrokerOnly));
        assert_eq!(
            publish("v1", "fleet/events"),
            Err(PublishDenied::BrokerOnly)
        );
        assert_eq!(publish("v1", "fleet"), Err(PublishDenied::BrokerOnly));
    }

    #[test]
    fn unknown_topics_are_denied() {
        for topic in [
            "",
            "/",
            "vehicles",
            "vehicles/v1",
            "vehicles/v1/",
            "vehicles/v1/status",
            "vehicles/v1/heartbeat/extra",
            "vehicles//heartbeat",
            "/vehicles/v1/heartbeat",
            "Vehicles/v1/heartbeat",
            "$SYS/broker",
            "anything",
        ] {
            let denied = publish("v1", topic);
            assert!(
                matches!(
                    denied,
                    Err(PublishDenied::UnknownTopic) | Err(PublishDenied::OtherVehicle)
                ),
                "{topic:?} gave {denied:?}"
            );
        }
        assert_eq!(
            publish("v1", "vehicles/v1/status"),
            Err(PublishDenied::UnknownTopic)
        );
    }

    #[test]
    fn publishing_to_a_wildcard_topic_is_denied() {
        assert_eq!(
            publish("v1", "vehicles/+/heartbeat"),
            Err(PublishDenied::Wildcard)
        );
        assert_eq!(publish("v1", "vehicles/v1/#"), Err(PublishDenied::Wildcard));
        assert_eq!(
            publish("+", "vehicles/+/heartbeat"),
            Err(PublishDenied::Wildcard)
        );
    }

    #[test]
    fn a_client_whose_id_is_not_a_vehicle_id_owns_no_uplink_topic() {
        assert_eq!(
            publish("a b", "vehicles/a b/heartbeat"),
            Err(PublishDenied::NotAVehicle)
        );
        assert_eq!(
            publish("", "vehicles//heartbeat"),
            Err(PublishDenied::NotAVehicle)
        );
        let long = "a".repeat(65);
        assert_eq!(
            publish(&long, &format!("vehicles/{long}/heartbeat")),
            Err(PublishDenied::NotAVehicle)
        );
    }

    #[test]
    fn a_payload_over_the_limit_is_denied_even_on_an_allowed_topic() {
        assert_eq!(
            check_publish("v1", "vehicles/v1/heartbeat", MAX + 1, MAX),
            Err(PublishDenied::Oversize)
        );
        assert_eq!(
            check_publish("v1", "vehicles/v1/heartbeat", MAX, MAX),
            Ok(UplinkKind::Heartbeat)
        );
        assert_eq!(
            check_publish("v1", "vehicles/v1/heartbeat", 0, MAX),
            Ok(UplinkKind::Heartbeat)
        );
    }

    #[test]
    fn a_vehicle_may_subscribe_to_its_own_command_and_service_topics() {
        assert_eq!(check_subscribe("v1", "vehicles/v1/command"), Ok(()));
        assert_eq!(check_subscribe("v1", "vehicles/v1/service"), Ok(()));
    }

    #[test]
    fn anyone_may_subscribe_to_the_read_only_observer_topics() {
        for filter in [
            "vehicles/+/service",
            "vehicles/v2/service",
            "fleet/events",
            "fleet/sli",
            "fleet/alerts",
            "fleet/+",
            "fleet/#",
        ] {
            assert_eq!(check_subscribe("v1", filter), Ok(()), "{filter}");
            assert_eq!(check_subscribe("ops dashboard", filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn a_vehicle_may_not_subscribe_to_another_vehicles_command_topic() {
        assert_eq!(
            check_subscribe("v1", "vehicles/v2/command"),
            Err(SubscribeDenied::OtherVehicle)
        );
        assert_eq!(
            check_subscribe("v1", "vehicles/v10/command"),
            Err(SubscribeDenied::OtherVehicle)
        );
    }

    #[test]
    fn wildcards_that_reach_other_vehicles_commands_are_too_broad() {
        for filter in [
            "#",
            "+",
            "+/v1/command",
            "+/+/+",
            "vehicles/#",
            "vehicles/+",
            "vehicles/+/command",
            "vehicles/+/#",
            "vehicles/+/+",
        ] {
            let denied = check_subscribe("v1", filter);
            assert!(
                matches!(
                    denied,
                    Err(SubscribeDenied::TooBroad) | Err(SubscribeDenied::Uplink)
                ),
                "{filter:?} gave {denied:?}"
            );
        }
        assert_eq!(check_subscribe("v1", "#"), Err(SubscribeDenied::TooBroad));
        assert_eq!(
            check_subscribe("v1", "vehicles/+/command"),
            Err(SubscribeDenied::TooBroad)
        );
        assert_eq!(
            check_subscribe("v1", "vehicles/#"),
            Err(SubscribeDenied::TooBroad)
        );
    }

    #[test]
    fn nobody_may_read_vehicle_uplinks() {
        for filter in [
            "vehicles/v1/heartbeat",
            "vehicles/v2/heartbeat",
            "vehicles/v1/error",
            "vehicles/v1/ack",
            "vehicles/v1/+",
            "vehicles/v1/#",
            "vehicles/+/heartbeat",
        ] {
            assert_eq!(
                check_subscribe("v1", filter),
                Err(SubscribeDenied::Uplink),
                "{filter}"
            );
        }
    }

    #[test]
    fn system_and_shared_subscription_topics_are_refused() {
        assert_eq!(
            check_subscribe("v1", "$SYS/#"),
            Err(SubscribeDenied::SystemTopic)
        );
        assert_eq!(
            check_subscribe("v1", "$share/g/vehicles/v1/command"),
            Err(SubscribeDenied::SystemTopic)
        );
    }

    #[test]
    fn a_client_whose_id_is_not_a_vehicle_id_owns_no_command_topic() {
        assert_eq!(
            check_subscribe("a b", "vehicles/v1/command"),
            Err(SubscribeDenied::NotAVehicle)
        );
        // A client id such as "+" must not turn a wildcard into "its own" topic.
        assert_eq!(
            check_subscribe("+", "vehicles/+/command"),
            Err(SubscribeDenied::TooBroad)
        );
    }

    #[test]
    fn unknown_filters_are_refused() {
        for filter in [
            "",
            "fleet",
            "fleet/other",
            "fleet/+/x",
            "fleet/sli/x",
            "vehicles",
            "vehicles/v1/status",
            "vehicles/a b/service",
            "other/topic",
        ] {
            assert_eq!(
                check_subscribe("v1", filter),
                Err(SubscribeDenied::UnknownTopic),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn the_broker_may_publish_any_concrete_topic_but_no_wildcard_or_system_topic() {
        assert!(is_publishable_topic("vehicles/v1/command"));
        assert!(is_publishable_topic("fleet/sli"));
        assert!(!is_publishable_topic(""));
        assert!(!is_publishable_topic("vehicles/+/command"));
        assert!(!is_publishable_topic("fleet/#"));
        assert!(!is_publishable_topic("$SYS/x"));
        assert!(!is_publishable_topic("a\0b"));
    }

    #[test]
    fn every_reason_has_a_distinct_index_matching_its_position_in_all() {
        for (i, r) in PublishDenied::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, r) in SubscribeDenied::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn with_auth_on_a_vehicle_may_subscribe_only_to_its_own_command_and_service() {
        let v = Role::Vehicle;
        assert_eq!(check_subscribe_as(v, "v1", "vehicles/v1/command"), Ok(()));
        assert_eq!(check_subscribe_as(v, "v1", "vehicles/v1/service"), Ok(()));
        for (filter, reason) in [
            ("#", SubscribeDenied::TooBroad),
            ("+/+/+", SubscribeDenied::TooBroad),
            ("vehicles/#", SubscribeDenied::TooBroad),
            ("vehicles/+/service", SubscribeDenied::TooBroad),
            ("vehicles/+/command", SubscribeDenied::TooBroad),
            ("vehicles/+/+", SubscribeDenied::Uplink),
            ("vehicles/v2/service", SubscribeDenied::OtherVehicle),
            ("vehicles/v2/command", SubscribeDenied::OtherVehicle),
            ("vehicles/v2/heartbeat", SubscribeDenied::Uplink),
            ("fleet/#", SubscribeDenied::ObserversOnly),
            ("fleet/events", SubscribeDenied::ObserversOnly),
            ("fleet/sli", SubscribeDenied::ObserversOnly),
            ("fleet/+", SubscribeDenied::ObserversOnly),
            ("$SYS/#", SubscribeDenied::SystemTopic),
        ] {
            assert_eq!(check_subscribe_as(v, "v1", filter), Err(reason), "{filter}");
        }
    }

    #[test]
    fn with_auth_on_an_observer_reads_fleet_topics_and_service_states_and_nothing_else() {
        let o = Role::Observer;
        for filter in [
            "fleet/#",
            "fleet/+",
            "fleet/events",
            "fleet/sli",
            "fleet/alerts",
            "vehicles/+/service",
            "vehicles/v1/service",
        ] {
            assert_eq!(check_subscribe_as(o, "ops", filter), Ok(()), "{filter}");
        }
        for (filter, reason) in [
            ("#", SubscribeDenied::TooBroad),
            ("vehicles/#", SubscribeDenied::TooBroad),
            ("vehicles/+/command", SubscribeDenied::TooBroad),
            ("vehicles/v1/command", SubscribeDenied::NotAVehicle),
            ("vehicles/ops/command", SubscribeDenied::NotAVehicle),
            ("vehicles/+/heartbeat", SubscribeDenied::Uplink),
            ("vehicles/v1/error", SubscribeDenied::Uplink),
            ("$share/g/fleet/events", SubscribeDenied::SystemTopic),
        ] {
            assert_eq!(
                check_subscribe_as(o, "ops", filter),
                Err(reason),
                "{filter}"
            );
        }
    }

    #[test]
    fn with_auth_on_an_observer_may_not_publish_even_on_its_own_named_topics() {
        for topic in [
            "vehicles/ops/heartbeat",
            "vehicles/v1/heartbeat",
            "vehicles/v1/error",
            "vehicles/v1/ack",
        ] {
            assert_eq!(
                check_publish_as(Role::Observer, "ops", topic, 2, MAX),
                Err(PublishDenied::ReadOnly),
                "{topic}"
            );
        }
        assert_eq!(
            check_publish_as(Role::Observer, "ops", "fleet/sli", 2, MAX),
            Err(PublishDenied::BrokerOnly)
        );
    }

    #[test]
    fn with_auth_on_a_vehicle_publishes_exactly_as_without() {
        for topic in [
            "vehicles/v1/heartbeat",
            "vehicles/v2/heartbeat",
            "vehicles/v1/command",
            "fleet/sli",
            "vehicles/v1/status",
            "vehicles/+/heartbeat",
        ] {
            assert_eq!(
                check_publish_as(Role::Vehicle, "v1", topic, 2, MAX),
                check_publish("v1", topic, 2, MAX),
                "{topic}"
            );
        }
    }
}
