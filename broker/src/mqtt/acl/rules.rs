//! `[[acl]]` entries: the fleet's own topics, in the style of Mosquitto's ACL patterns. A
//! filter whose levels `%c` and `%u` stand for the client id and the username, an access
//! (read, write or both) and who it is for. They open topics outside the contract only:
//! the contract's own topics follow the built-in rules, which no entry loosens.

use super::Role;

/// What an entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other entries say: a publish the filter matches and a
    /// subscription it covers are refused (as Mosquitto's `topic deny`).
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }

    /// `read`, `write`, `readwrite` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
            Access::Deny => "deny",
        }
    }
}

/// A named group of `[[auth.users]]` (their `role`), other than `observer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleId(pub u16);

/// Whom an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Vehicles (with authentication off: clients whose id is a vehicle id).
    Vehicles,
    /// Every user of `[[auth.users]]`, whatever its role (with authentication off: every
    /// client).
    Observers,
    /// Users of this role.
    Role(RoleId),
    /// Every client.
    Anyone,
}

/// One `[[acl]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The name in metrics and `check-config` (default `acl[N]`).
    pub name: String,
    /// An MQTT filter; levels `%c` and `%u` are the client id and the username.
    pub filter: String,
    /// Read, write or both.
    pub access: Access,
    /// For whom.
    pub who: Who,
}

/// The client a decision is for.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// How it authenticated.
    pub role: Role,
    /// Its MQTT client id.
    pub id: &'a str,
    /// Its MQTT username.
    pub username: Option<&'a str>,
}

impl Client<'_> {
    fn is(&self, who: Who) -> bool {
        match (who, self.role) {
            (Who::Anyone, _) => true,
            (Who::Vehicles, Role::Vehicle) => true,
            (Who::Vehicles, Role::Anonymous) => crate::contract::is_vehicle_id(self.id),
            (Who::Observers, Role::Observer | Role::User(_) | Role::Anonymous) => true,
            (Who::Role(r), Role::User(mine)) => r == mine,
            _ => false,
        }
    }
}

/// A level value that may stand in a filter: not empty, no separator, no wildcard.
fn plain_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

impl Rule {
    /// The filter for `client`, or `None` when the entry is not for it (or `%c`/`%u` cannot
    /// be filled with a plain level).
    pub fn filter_for(&self, client: &Client<'_>) -> Option<String> {
        if !client.is(self.who) {
            return None;
        }
        if !self.filter.contains('%') {
            return Some(self.filter.clone());
        }
        let mut out = Vec::new();
        for level in self.filter.split('/') {
            out.push(match level {
                "%c" => plain_level(client.id).then_some(client.id)?,
                "%u" => client.username.filter(|u| plain_level(u))?,
                other => other,
            });
        }
        Some(out.join("/"))
    }

    /// Whether `client` may publish `topic` through this entry.
    pub(super) fn lets_write(&self, client: &Client<'_>, topic: &str) -> bool {
        self.access.writes()
            && self
                .filter_for(client)
                .is_some_and(|f| crate::contract::filter::matches(&f, topic))
    }

    /// Whether this entry refuses `client` the publish to `topic`.
    pub(super) fn denies_topic(&self, client: &Client<'_>, topic: &str) -> bool {
        self.access == Access::Deny
            && self
                .filter_for(client)
                .is_some_and(|f| crate::contract::filter::matches(&f, topic))
    }

    /// Whether this entry refuses `client` the subscription to `filter`.
    pub(super) fn denies_filter(&self, client: &Client<'_>, filter: &str) -> bool {
        self.access == Access::Deny
            && self
                .filter_for(client)
                .is_some_and(|f| crate::contract::filter::covers(&f, filter))
    }

    /// Whether `client` may subscribe to all of `filter` through this entry.
    pub(super) fn lets_read(&self, client: &Client<'_>, filter: &str) -> bool {
        self.access.reads()
            && self
                .filter_for(client)
                .is_some_and(|f| crate::contract::filter::covers(&f, filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, access: Access, who: Who) -> Rule {
        Rule {
            name: "t".into(),
            filter: filter.into(),
            access,
            who,
        }
    }

    const V1: Client<'static> = Client {
        role: Role::Vehicle,
        id: "v1",
        username: Some("v1"),
    };

    #[test]
    fn client_id_and_username_fill_whole_levels() {
        let r = rule("vehicles/%c/lock", Access::Read, Who::Vehicles);
        assert_eq!(r.filter_for(&V1).as_deref(), Some("vehicles/v1/lock"));
        let r = rule("users/%u/#", Access::Read, Who::Anyone);
        assert_eq!(r.filter_for(&V1).as_deref(), Some("users/v1/#"));
        let no_user = Client {
            username: None,
            ..V1
        };
        assert_eq!(r.filter_for(&no_user), None);
        let sneaky = Client {
            role: Role::Anonymous,
            id: "+",
            username: None,
        };
        let r = rule("vehicles/%c/lock", Access::Read, Who::Anyone);
        assert_eq!(
            r.filter_for(&sneaky),
            None,
            "a client id must not become a wildcard"
        );
    }

    #[test]
    fn an_entry_is_only_for_whom_it_names() {
        let backend = Client {
            role: Role::User(RoleId(0)),
            id: "backend-1",
            username: Some("backend"),
        };
        let r = rule("vehicles/+/lock", Access::Write, Who::Role(RoleId(0)));
        assert!(r.lets_write(&backend, "vehicles/v1/lock"));
        assert!(!r.lets_write(&V1, "vehicles/v1/lock"));
        assert!(!r.lets_read(&backend, "vehicles/v1/lock"), "write only");
        let r = rule("vehicles/+/lock/result", Access::Read, Who::Observers);
        assert!(r.lets_read(&backend, "vehicles/+/lock/result"));
        assert!(!r.lets_read(&backend, "vehicles/#"), "not all of it");
        assert!(!r.lets_read(&V1, "vehicles/v1/lock/result"));
    }
}
