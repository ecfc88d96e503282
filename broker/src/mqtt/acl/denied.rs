//! Why a client's PUBLISH or SUBSCRIBE was refused: one reason each, with a stable label
//! for the counters, the metrics and the log.

use std::fmt;

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
    /// Not a topic of the contract, and no `[[acl]]` entry lets this client write it.
    UnknownTopic,
    /// A user publishes no contract topic (only what `[[acl]]` entries allow).
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
    /// A wildcard at or above the vehicle level that would read other vehicles' topics
    /// (`#`, `+/...`, `vehicles/#`, `vehicles/+/command`), or a filter that mixes contract
    /// topics with others.
    TooBroad,
    /// A filter that matches vehicle uplink topics (heartbeat, error, ack).
    Uplink,
    /// Another vehicle's command topic.
    OtherVehicle,
    /// The client id is not a vehicle id, so the client owns no command topic.
    NotAVehicle,
    /// Not a topic of the contract, and no `[[acl]]` entry lets this client read all of
    /// it.
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
