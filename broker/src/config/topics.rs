//! `[topics]` and `[[acl]]`: the topic layout (contract v1 by default) and the entries that
//! open the fleet's own topics, checked and turned into the ACL the MQTT front enforces.

use serde::Deserialize;

use super::validate::Checker;
use crate::contract::{LayoutSection, Topics};
use crate::mqtt::acl::{Access, Role, RoleId, Rule, Who};

/// `[[acl]]`: one entry for the fleet's own topics.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AclSection {
    /// A name for metrics and `check-config` (default `acl[N]`).
    pub name: Option<String>,
    /// An MQTT filter; a level `%c` is the client id, `%u` the username.
    pub topic: String,
    /// `read`, `write`, `readwrite`, or `deny` (refused whatever other entries say).
    pub access: AccessSection,
    /// `vehicles`, `observers` (every user), `anyone`, or the `role` of some `[[auth.users]]`.
    pub who: String,
}

/// `acl[].access`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessSection {
    /// Subscribe.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Refused whatever other entries say.
    Deny,
}

/// The role names of `[[auth.users]]` other than `observer`, numbered for [`RoleId`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(Vec<String>);

impl Roles {
    /// The role of a user named `role` in the config.
    pub fn role(&self, role: &str) -> Option<Role> {
        if role == "observer" {
            return Some(Role::Observer);
        }
        let i = self.0.iter().position(|r| r == role)?;
        Some(Role::User(RoleId(u16::try_from(i).ok()?)))
    }

    /// The name of role `id`.
    pub fn name(&self, id: RoleId) -> String {
        self.0
            .get(usize::from(id.0))
            .cloned()
            .unwrap_or_else(|| format!("role#{}", id.0))
    }
}

/// A role name: what `who` and `role` may say.
fn is_role_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The layout, checked: every template's problem named by its key.
pub(super) fn topics(t: &LayoutSection, k: &mut Checker) -> Option<Topics> {
    match t.topics() {
        Ok(topics) => Some(topics),
        Err(problems) => {
            for p in problems {
                k.check(false, p.key, p.message);
            }
            None
        }
    }
}

/// The roles users name, each problem of `[[acl]]` named by its key, and the entries.
pub(super) fn acl(
    entries: &[AclSection],
    user_roles: &[&str],
    k: &mut Checker,
) -> (Roles, Vec<Rule>) {
    let mut roles = Roles::default();
    for role in user_roles {
        if *role != "observer" && !roles.0.iter().any(|r| r == role) {
            roles.0.push((*role).to_owned());
        }
    }
    let mut rules = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = format!("acl[{i}]");
        let levels_ok = !e.topic.is_empty()
            && !e.topic.starts_with('$')
            && e.topic.split('/').enumerate().all(|(n, l)| {
                let last = n + 1 == e.topic.split('/').count();
                match l {
                    "+" | "%c" | "%u" => true,
                    "#" => last,
                    l => !l.contains(['+', '#', '%']),
                }
            });
        k.check(
            levels_ok,
            format!("{key}.topic"),
            format!(
                "{:?} is not a filter: `+`, `%c`, `%u` fill whole levels, `#` only last, no leading `$`",
                e.topic
            ),
        );
        let who = match e.who.as_str() {
            "vehicles" => Some(Who::Vehicles),
            "observers" => Some(Who::Observers),
            "anyone" => Some(Who::Anyone),
            name => match roles.role(name) {
                Some(Role::User(id)) => Some(Who::Role(id)),
                _ => {
                    k.check(
                        false,
                        format!("{key}.who"),
                        format!(
                            "{name:?} is no role of [[auth.users]]: use vehicles, observers, anyone or a user's role"
                        ),
                    );
                    None
                }
            },
        };
        if let (true, Some(who)) = (levels_ok, who) {
            rules.push(Rule {
                name: e.name.clone().unwrap_or_else(|| key.clone()),
                filter: e.topic.clone(),
                access: match e.access {
                    AccessSection::Read => Access::Read,
                    AccessSection::Write => Access::Write,
                    AccessSection::ReadWrite => Access::ReadWrite,
                    AccessSection::Deny => Access::Deny,
                },
                who,
            });
        }
    }
    (roles, rules)
}

/// Checks a user's role name.
pub(super) fn check_role(role: &str, key: String, k: &mut Checker) {
    k.check(
        is_role_name(role),
        key,
        format!("{role:?} is not a role: 1 to 64 of a-z 0-9 _ - (\"observer\" reads the fleet topics only)"),
    );
}

#[cfg(test)]
mod tests {
    use crate::config::validate::problems;
    use crate::config::Config;

    #[test]
    fn a_custom_layout_with_liveness_topics_is_valid_and_reaches_the_engine_and_the_acl() {
        let text = "[topics]\nheartbeat = \"scooters/{id}/hb\"\nerror = \"scooters/{id}/err\"\n\
                    ack = \"scooters/{id}/ack\"\ncommand = \"scooters/{id}/cmd\"\n\
                    service = \"scooters/{id}/state\"\nevents = \"ops/events\"\n\
                    sli = \"ops/sli\"\nalerts = \"ops/alerts\"\n\
                    liveness = [\"scooters/{id}/telemetry/#\"]\n";
        assert_eq!(problems(text), Vec::<String>::new());
        let s = Config::parse(text)
            .expect("parses")
            .settings()
            .expect("valid");
        assert_eq!(s.engine.topics.command("s1"), "scooters/s1/cmd");
        assert_eq!(s.mqtt.acl.topics(), &s.engine.topics);
        assert_eq!(s.api.slo.alerts_topic, "ops/alerts");
    }

    #[test]
    fn every_bad_template_is_named_by_its_key() {
        let keys = problems(
            "[topics]\nheartbeat = \"scooters/hb\"\nerror = \"s/{id}/+\"\n\
             command = \"s/v{id}/cmd\"\nevents = \"ops/{id}\"\nliveness = [\"s/#/{id}\"]\n",
        );
        assert_eq!(
            keys,
            vec![
                "topics.heartbeat",
                "topics.error",
                "topics.command",
                "topics.events",
                "topics.liveness[0]"
            ]
        );
    }

    #[test]
    fn templates_that_can_name_the_same_topic_are_refused() {
        let keys = problems("[topics]\nliveness = [\"vehicles/{id}/#\"]\n");
        assert!(keys.iter().all(|k| k == "topics"), "{keys:?}");
        assert_eq!(keys.len(), 5, "one per vehicle template the filter covers");
    }

    #[test]
    fn acl_entries_are_checked_and_their_roles_must_exist() {
        let keys = problems(
            "[[acl]]\ntopic = \"a/#/b\"\naccess = \"read\"\nwho = \"vehicles\"\n\
             [[acl]]\ntopic = \"a/%x\"\naccess = \"write\"\nwho = \"anyone\"\n\
             [[acl]]\ntopic = \"a/b\"\naccess = \"read\"\nwho = \"backend\"\n",
        );
        assert_eq!(keys, vec!["acl[0].topic", "acl[1].topic", "acl[2].who"]);
        assert!(
            Config::parse("[[acl]]\ntopic = \"a\"\naccess = \"all\"\nwho = \"anyone\"\n").is_err()
        );
    }
}
