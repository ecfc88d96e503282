//! `[ha]`: this engine as one of an active/standby pair on the PostgreSQL store.

use serde::Deserialize;

use super::validate::Checker;
use super::{Config, HumanDuration};
use crate::ha::{LeaseTarget, LeaseTimings};

/// `[ha]`. Present with a `node`: this engine leads only while it holds the lease in the
/// store's PostgreSQL database, and stands by otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaSection {
    /// This engine's name, unique among the engines sharing the database; unset: no
    /// active/standby, the engine runs alone.
    pub node: Option<String>,
    /// This engine's ops API as operators reach it (shown by the others); default
    /// `http://` + `[http] listen` (set it when that is `0.0.0.0`).
    pub address: Option<String>,
    /// Lifetime of a lease grant: a dead leader is replaced within `ttl` + `renew_every`.
    pub ttl: HumanDuration,
    /// How often the leader renews and a standby tries.
    pub renew_every: HumanDuration,
    /// In attach mode, a standby watches the uplinks (its own clean session, publishing
    /// nothing) to keep last-seen times warm for a takeover.
    pub watch: bool,
    /// The watch's upstream username (default `[mqtt.attach] username`). Needed when the
    /// upstream takes the username as the client id (`use_username_as_clientid`).
    pub watch_username: Option<String>,
    /// Its password (or env `FLEET_HA_WATCH_PASSWORD`).
    pub watch_password: Option<String>,
}

impl Default for HaSection {
    fn default() -> Self {
        let timings = LeaseTimings::default();
        HaSection {
            node: None,
            address: None,
            ttl: HumanDuration(timings.ttl),
            renew_every: HumanDuration(timings.renew_every),
            watch: true,
            watch_username: None,
            watch_password: None,
        }
    }
}

/// Active/standby settings, checked.
#[derive(Debug, Clone)]
pub struct HaSettings {
    /// Where the lease is and who this engine is.
    pub target: LeaseTarget,
    /// The lease's timings.
    pub timings: LeaseTimings,
    /// A standby watches the uplinks (attach mode only).
    pub watch: bool,
    /// The watch's own upstream credentials (else the broker's).
    pub watch_credentials: Option<(String, String)>,
}

/// Environment variable for `[ha] watch_password`.
pub const WATCH_PASSWORD_ENV: &str = "FLEET_HA_WATCH_PASSWORD";

/// Longest node name (it is stored and shown, not parsed).
const MAX_NODE: usize = 64;

/// The settings, or `None` without `[ha] node` (problems go to `k`).
pub(super) fn settings(c: &Config, k: &mut Checker) -> Option<HaSettings> {
    let ha = &c.ha;
    let node = ha.node.as_ref()?;
    let mut ok = true;
    let mut check = |good: bool, key: &str, message: String| {
        ok &= good;
        k.check(good, key, message);
    };
    check(
        !node.is_empty()
            && node.len() <= MAX_NODE
            && node
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')),
        "ha.node",
        format!("{node:?} must be 1 to {MAX_NODE} letters, digits, '-', '_' or '.'"),
    );
    check(
        c.store.url.is_some(),
        "ha.node",
        "active/standby needs the store on PostgreSQL: set [store] url (or FLEET_STORE_URL)".into(),
    );
    let timings = LeaseTimings {
        ttl: ha.ttl.0,
        renew_every: ha.renew_every.0,
    };
    if let Err(problem) = timings.check() {
        check(false, "ha.renew_every", problem);
    }
    let address = ha
        .address
        .clone()
        .unwrap_or_else(|| format!("http://{}", c.http.listen));
    let url = c.store.url.clone()?;
    ok.then(|| HaSettings {
        target: LeaseTarget {
            url,
            node: node.clone(),
            address,
        },
        timings,
        watch: ha.watch && c.mqtt.mode == super::MqttMode::Attach,
        watch_credentials: ha
            .watch_username
            .clone()
            .map(|user| (user, ha.watch_password.clone().unwrap_or_default())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::problems;

    #[test]
    fn an_engine_of_a_pair_names_itself_and_needs_the_postgres_store() {
        let pg = "[store]\nurl = \"postgres://fleet@db.example/fleet\"\n";
        let c = Config::parse(&format!("{pg}[ha]\nnode = \"engine-a\"\n")).expect("parses");
        let s = c.settings().expect("valid");
        let ha = s.ha.expect("active/standby");
        assert_eq!(ha.target.node, "engine-a");
        assert_eq!(ha.target.address, "http://127.0.0.1:8080");
        assert_eq!(ha.timings, LeaseTimings::default());
        assert!(s.store.fence.is_some(), "the store is fenced by the lease");
        assert!(Config::default().settings().expect("valid").ha.is_none());

        assert_eq!(problems("[ha]\nnode = \"engine-a\"\n"), ["ha.node"]);
        assert_eq!(
            problems(&format!("{pg}[ha]\nnode = \"engine a!\"\n")),
            ["ha.node"]
        );
        assert_eq!(
            problems(&format!(
                "{pg}[ha]\nnode = \"a\"\nttl = \"2s\"\nrenew_every = \"1s\"\n"
            )),
            ["ha.renew_every"]
        );
    }
}
