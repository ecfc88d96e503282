//! Who may publish and subscribe to what ("Identity and access" in DESIGN.md), as pure
//! decisions over the configured topic layout ([`crate::contract::Topics`]).
//!
//! The contract's topics follow built-in rules: a vehicle (client id = vehicle id)
//! publishes only its own uplinks and liveness topics and reads only its own command and
//! service topics; users read the fleet topics and every vehicle's service state; nobody
//! but the broker publishes commands, service state or fleet topics; nobody reads uplinks.
//! With authentication off (`Role::Anonymous`) everyone may also read what users read.
//! Every other topic is the fleet's own traffic, allowed only by `[[acl]]` entries
//! ([`Rule`]). Everything refused has a reason, so each kind is counted and logged.

mod denied;
mod rules;

pub use denied::{PublishDenied, SubscribeDenied};
pub use rules::{Access, Client, RoleId, Rule, Who};

use crate::contract::{
    filter, is_vehicle_id, DownlinkKind, Template, Topic, Topics, UplinkKind, VehicleTopic,
};

/// Whether the broker itself may publish to `topic`: a non-empty topic name without
/// wildcards, NUL or a leading `$`, within MQTT's 65,535-byte limit.
pub fn is_publishable_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= usize::from(u16::MAX)
        && !topic.starts_with('$')
        && !topic.contains(['+', '#', '\0'])
}

/// Which built-in rules apply to a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `auth.mode = "none"`: nobody proved anything; a client whose id is a vehicle id
    /// acts for that vehicle and everyone may read what users read.
    Anonymous,
    /// An authenticated vehicle: its own uplinks, its own command and service topics.
    Vehicle,
    /// A user of role `observer`: reads the fleet topics and every service state.
    Observer,
    /// A user of another role: reads what observers read, and what `[[acl]]` entries for
    /// its role allow.
    User(RoleId),
}

impl Role {
    /// Users and anonymous clients read the fleet topics and every service state.
    fn observes(self) -> bool {
        !matches!(self, Role::Vehicle)
    }
}

/// What an allowed publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// The client's own heartbeat, error report or ack: for the engine.
    Uplink(UplinkKind),
    /// One of the client's liveness topics: routed, and proves the vehicle alive.
    Liveness,
    /// The fleet's own traffic, through `[[acl]]` entry number N.
    PassThrough(usize),
}

/// What an allowed subscription reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// Contract topics (at most QoS 1).
    Contract,
    /// The fleet's own topics, through `[[acl]]` entry number N (any QoS).
    PassThrough(usize),
}

/// The topic layout and the `[[acl]]` entries, and the decisions over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    topics: Topics,
    rules: Vec<Rule>,
}

impl Default for Acl {
    /// Contract v1, no entries.
    fn default() -> Acl {
        Acl::new(Topics::default(), Vec::new())
    }
}

/// How a filter meets a per-vehicle template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape<'f> {
    /// No topic fits both.
    Apart,
    /// The template's levels exactly, with this vehicle level (maybe `+`).
    Exact(&'f str),
    /// A wildcard at the vehicle level with more after it, or after the vehicle level.
    Under,
    /// A wildcard above the vehicle level, or `#` at it: other vehicles' topics.
    Broad,
}

fn shape<'f>(template: &Template, filter: &'f str) -> Shape<'f> {
    let Some(id_at) = template.id_level() else {
        return Shape::Apart;
    };
    if !filter::overlaps(filter, &template.any_vehicle()) {
        return Shape::Apart;
    }
    let mut parts = filter.split('/');
    let mut id = None;
    let mut wild_after = false;
    for (i, level) in template.as_str().split('/').enumerate() {
        let Some(part) = parts.next() else {
            return Shape::Apart;
        };
        if part == "#" {
            return if i <= id_at {
                Shape::Broad
            } else {
                Shape::Under
            };
        }
        if i == id_at {
            id = Some(part);
        } else if part == "+" {
            if i < id_at {
                return Shape::Broad;
            }
            wild_after = true;
        } else if part != level {
            return Shape::Apart;
        }
    }
    if parts.next().is_some() {
        return Shape::Apart;
    }
    match id {
        Some(id) if !wild_after => Shape::Exact(id),
        Some(_) => Shape::Under,
        None => Shape::Apart,
    }
}

impl Acl {
    /// The decisions over `topics` and `rules`.
    pub fn new(topics: Topics, rules: Vec<Rule>) -> Acl {
        Acl { topics, rules }
    }

    /// The topic layout.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The `[[acl]]` entries, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `client` may publish to `topic` (the payload's size is the MQTT front's
    /// check).
    pub fn publish(&self, client: &Client<'_>, topic: &str) -> Result<Allowed, PublishDenied> {
        if topic.contains(['+', '#']) {
            return Err(PublishDenied::Wildcard);
        }
        let own = |vehicle: &str| {
            if matches!(client.role, Role::Observer | Role::User(_)) {
                Err(PublishDenied::ReadOnly)
            } else if !is_vehicle_id(client.id) {
                Err(PublishDenied::NotAVehicle)
            } else if vehicle != client.id {
                Err(PublishDenied::OtherVehicle)
            } else {
                Ok(())
            }
        };
        match self.topics.classify(topic) {
            Topic::Fleet | Topic::Downlink { .. } => Err(PublishDenied::BrokerOnly),
            Topic::Uplink { vehicle, kind } => own(vehicle).map(|()| Allowed::Uplink(kind)),
            Topic::Liveness { vehicle } => own(vehicle).map(|()| Allowed::Liveness),
            Topic::Other if self.rules.iter().any(|r| r.denies_topic(client, topic)) => {
                Err(PublishDenied::UnknownTopic)
            }
            Topic::Other => self
                .rules
                .iter()
                .position(|r| r.lets_write(client, topic))
                .map(Allowed::PassThrough)
                .ok_or(PublishDenied::UnknownTopic),
        }
    }

    /// Whether `client` may subscribe to `filter`.
    pub fn subscribe(&self, client: &Client<'_>, filter: &str) -> Result<Granted, SubscribeDenied> {
        // A shared subscription reads what its filter reads, shared with its group.
        if let Some(shared) = filter.strip_prefix("$share/") {
            return match shared.split_once('/') {
                Some((group, inner))
                    if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() =>
                {
                    self.subscribe(client, inner)
                }
                _ => Err(SubscribeDenied::SystemTopic),
            };
        }
        if filter.starts_with('$') {
            return Err(SubscribeDenied::SystemTopic);
        }
        let observed = |broad: SubscribeDenied| {
            if client.role.observes() {
                Ok(Granted::Contract)
            } else {
                Err(broad)
            }
        };
        let fleet = self.topics.fleet_topics();
        let root_filter = |wild: &str| {
            self.topics
                .fleet_root()
                .is_some_and(|r| filter.strip_prefix(r) == Some(wild))
        };
        if fleet.contains(&filter) || root_filter("/+") || root_filter("/#") {
            return observed(SubscribeDenied::ObserversOnly);
        }
        let mut broad = false;
        let mut uplink = false;
        let mut downlink = false;
        for (template, kind) in self.topics.vehicle_templates() {
            match (shape(template, filter), kind) {
                (Shape::Apart, _) => {}
                (Shape::Exact(id), VehicleTopic::Downlink(kind)) => {
                    return self.own_downlink(client, kind, id)
                }
                (Shape::Exact(_) | Shape::Under, VehicleTopic::Uplink(_)) => uplink = true,
                (Shape::Under, VehicleTopic::Downlink(_)) => downlink = true,
                (Shape::Broad, _) => broad = true,
            }
        }
        let reaches_fleet = fleet.iter().any(|t| filter::overlaps(filter, t))
            || self
                .topics
                .fleet_root()
                .is_some_and(|r| filter::overlaps(filter, &format!("{r}/#")));
        // A wide filter an entry covers is allowed: the contract topics it would match are
        // held back at delivery unless the client may read them (`may_receive`).
        let by_entry = (!self.rules.iter().any(|r| r.denies_filter(client, filter)))
            .then(|| self.rules.iter().position(|r| r.lets_read(client, filter)))
            .flatten();
        match by_entry {
            Some(rule) => Ok(Granted::PassThrough(rule)),
            None if broad => Err(SubscribeDenied::TooBroad),
            None if uplink => Err(SubscribeDenied::Uplink),
            None if downlink => Err(SubscribeDenied::TooBroad),
            None if reaches_fleet && !client.role.observes() => Err(SubscribeDenied::ObserversOnly),
            None => Err(SubscribeDenied::UnknownTopic),
        }
    }

    /// Whether a message on `topic` goes to `client` through a subscription an entry
    /// allowed: a contract topic only when the built-in rules let the client read it, any
    /// other unless an entry denies it.
    pub fn may_receive(&self, client: &Client<'_>, topic: &str) -> bool {
        match self.topics.classify(topic) {
            Topic::Uplink { .. } => false,
            Topic::Downlink {
                vehicle,
                kind: DownlinkKind::Command,
            } => {
                matches!(client.role, Role::Vehicle | Role::Anonymous)
                    && is_vehicle_id(client.id)
                    && vehicle == client.id
            }
            Topic::Downlink {
                vehicle,
                kind: DownlinkKind::Service,
            } => client.role.observes() || vehicle == client.id,
            Topic::Fleet => client.role.observes(),
            Topic::Liveness { .. } | Topic::Other => {
                !self.rules.iter().any(|r| r.denies_topic(client, topic))
            }
        }
    }

    /// Whether any entry lets some client read: only then can a delivery need
    /// [`Acl::may_receive`].
    pub fn has_read_entries(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.access, Access::Read | Access::ReadWrite))
    }

    /// A subscription to exactly one downlink template, for vehicle level `id`.
    fn own_downlink(
        &self,
        client: &Client<'_>,
        kind: DownlinkKind,
        id: &str,
    ) -> Result<Granted, SubscribeDenied> {
        let observes = client.role.observes();
        match kind {
            DownlinkKind::Service if id == "+" => {
                if observes {
                    Ok(Granted::Contract)
                } else {
                    Err(SubscribeDenied::TooBroad)
                }
            }
            _ if !is_vehicle_id(id) && id != "+" => Err(SubscribeDenied::UnknownTopic),
            DownlinkKind::Service => {
                if client.role == Role::Vehicle && id != client.id {
                    Err(SubscribeDenied::OtherVehicle)
                } else {
                    Ok(Granted::Contract)
                }
            }
            DownlinkKind::Command if id == "+" => Err(SubscribeDenied::TooBroad),
            DownlinkKind::Command => {
                if matches!(client.role, Role::Observer | Role::User(_))
                    || !is_vehicle_id(client.id)
                {
                    Err(SubscribeDenied::NotAVehicle)
                } else if id != client.id {
                    Err(SubscribeDenied::OtherVehicle)
                } else {
                    Ok(Granted::Contract)
                }
            }
        }
    }

    /// The effective rules, built-in then configured, one row each:
    /// `(who, access, topic filter, note)`.
    pub fn table(&self, role_name: impl Fn(RoleId) -> String) -> Vec<[String; 4]> {
        let t = &self.topics;
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |who: &str, access: &str, topic: String, note: &str| {
            rows.push([who.to_owned(), access.to_owned(), topic, note.to_owned()]);
        };
        for kind in UplinkKind::ALL {
            row(
                "vehicles",
                "write",
                t.uplink("%c", kind),
                "built in: own uplink, to the engine",
            );
        }
        for l in t.liveness() {
            row(
                "vehicles",
                "write",
                l.with_id("%c"),
                "built in: own liveness topic, routed and proves the vehicle alive",
            );
        }
        row(
            "vehicles",
            "read",
            t.command("%c"),
            "built in: own commands",
        );
        row(
            "vehicles",
            "read",
            t.service("%c"),
            "built in: own service state",
        );
        row(
            "observers",
            "read",
            t.service_template().any_vehicle(),
            "built in: every service state",
        );
        for f in t.fleet_topics() {
            row("observers", "read", f.to_owned(), "built in: fleet topic");
        }
        if let Some(root) = t.fleet_root() {
            row(
                "observers",
                "read",
                format!("{root}/#"),
                "built in: fleet topics",
            );
        }
        let broker_only = t
            .fleet_root()
            .map(|r| format!("{r}/#"))
            .into_iter()
            .chain([t.command("+"), t.service("+")]);
        for f in broker_only {
            row(
                "nobody",
                "write",
                f,
                "built in: only the broker publishes here",
            );
        }
        for r in &self.rules {
            let who = match r.who {
                Who::Vehicles => "vehicles".to_owned(),
                Who::Observers => "observers".to_owned(),
                Who::Anyone => "anyone".to_owned(),
                Who::Role(id) => role_name(id),
            };
            rows.push([
                who,
                r.access.as_str().to_owned(),
                r.filter.clone(),
                format!("{}: fleet traffic (contract topics excepted)", r.name),
            ]);
        }
        rows
    }
}

#[cfg(test)]
mod tests;
