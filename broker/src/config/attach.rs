//! `[mqtt] mode` and `[mqtt.attach]`: the broker as a client of the fleet's own MQTT
//! broker. Parsed into [`AttachSettings`], with every problem under its key path.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use super::HumanDuration;
use crate::mqtt::upstream::{AttachSettings, Protocol, UpstreamTls, UpstreamUrl};

/// Environment variable for `[mqtt.attach] password`.
pub const UPSTREAM_PASSWORD_ENV: &str = "FLEET_UPSTREAM_PASSWORD";

/// `[mqtt] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// The broker is the fleet's MQTT server (`[mqtt] listen`).
    #[default]
    Embedded,
    /// The broker is a client of the fleet's MQTT server (`[mqtt.attach]`).
    Attach,
}

/// One URL or several (tried in turn).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMore {
    /// `url = "mqtt://host:1883"`
    One(String),
    /// `url = ["mqtt://a:1883", "mqtt://b:1883"]`
    More(Vec<String>),
}

impl Default for OneOrMore {
    fn default() -> Self {
        OneOrMore::More(Vec::new())
    }
}

/// `protocol = 5` or `protocol = "3.1.1"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProtocolValue {
    /// `5` (also `4` for 3.1.1).
    Number(i64),
    /// `"5"`, `"3.1.1"`.
    Text(String),
}

impl Default for ProtocolValue {
    fn default() -> Self {
        ProtocolValue::Text("3.1.1".to_owned())
    }
}

/// `[mqtt.attach]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachSection {
    /// `mqtt://host:port` or `mqtts://host:port`; several are tried in turn.
    pub url: OneOrMore,
    /// The broker's client id upstream (unique per engine).
    pub client_id: String,
    /// Username upstream.
    pub username: Option<String>,
    /// Password upstream (or env `FLEET_UPSTREAM_PASSWORD`).
    pub password: Option<String>,
    /// PEM CA certificates that sign the upstream's certificate (`mqtts://`; else the
    /// system roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate (with `client_key`) for upstreams that want one.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// `5` or `"3.1.1"`.
    pub protocol: ProtocolValue,
    /// Subscribe as `$share/GROUP/...` (several engines share the uplinks).
    pub shared_group: Option<String>,
    /// QoS of the uplink subscriptions (0 or 1; the broker publishes as in embedded mode).
    pub qos: u8,
    /// MQTT keep-alive upstream: how soon a dead link is noticed at the latest.
    pub keep_alive: HumanDuration,
    /// A blind stretch (link down) longer than this is notified once.
    pub blind_alert_after: HumanDuration,
    /// How long the upstream keeps the broker's session (and queues its uplinks) while
    /// the link is down.
    pub session_expiry: HumanDuration,
    /// When a QoS 1 uplink is acknowledged upstream: `"received"` (on receipt) or
    /// `"stored"` (once what it caused is stored, so an engine that dies first leaves it
    /// in the session for its successor; the upstream's in-flight window for the broker's
    /// client then has to cover the uplink rate times the commit latency).
    pub ack: AckPolicy,
}

/// `[mqtt.attach] ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// On receipt.
    #[default]
    Received,
    /// Once what the uplink caused is stored.
    Stored,
}

impl Default for AttachSection {
    fn default() -> Self {
        AttachSection {
            url: OneOrMore::default(),
            client_id: "fleet-broker".to_owned(),
            username: None,
            password: None,
            ca: None,
            client_cert: None,
            client_key: None,
            protocol: ProtocolValue::default(),
            shared_group: None,
            qos: 1,
            keep_alive: HumanDuration::from_secs(10),
            blind_alert_after: HumanDuration::from_secs(60),
            session_expiry: HumanDuration::from_secs(10 * 60),
            ack: AckPolicy::Received,
        }
    }
}

impl AttachSection {
    /// The settings, or the problems recorded in `k`.
    pub(super) fn settings(
        &self,
        downtime_is_bad: bool,
        k: &mut Checker,
    ) -> Option<AttachSettings> {
        let urls: Vec<String> = match &self.url {
            OneOrMore::One(url) => vec![url.clone()],
            OneOrMore::More(urls) => urls.clone(),
        };
        k.check(
            !urls.is_empty(),
            "mqtt.attach.url",
            "is required with [mqtt] mode = \"attach\": the upstream broker, e.g. \"mqtt://127.0.0.1:1883\"",
        );
        let mut parsed = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let key = if urls.len() == 1 {
                "mqtt.attach.url".to_owned()
            } else {
                format!("mqtt.attach.url[{i}]")
            };
            match UpstreamUrl::parse(url) {
                Ok(u) => parsed.push(u),
                Err(why) => k.check(false, key, why),
            }
        }
        let protocol = match &self.protocol {
            ProtocolValue::Number(5) => Some(Protocol::V5),
            ProtocolValue::Number(4) => Some(Protocol::V311),
            ProtocolValue::Text(t) if t == "5" || t == "5.0" => Some(Protocol::V5),
            ProtocolValue::Text(t) if t == "3.1.1" || t == "4" => Some(Protocol::V311),
            _ => None,
        };
        k.check(
            protocol.is_some(),
            "mqtt.attach.protocol",
            "must be 5 or \"3.1.1\"",
        );
        k.check(
            !self.client_id.is_empty()
                && self.client_id.len() <= 128
                && !self.client_id.contains(['/', '+', '#']),
            "mqtt.attach.client_id",
            "must be 1 to 128 characters without '/', '+' or '#'",
        );
        k.check(self.qos <= 1, "mqtt.attach.qos", "must be 0 or 1");
        if let Some(group) = &self.shared_group {
            k.check(
                !group.is_empty() && !group.contains(['/', '+', '#']),
                "mqtt.attach.shared_group",
                "must be a non-empty name without '/', '+' or '#'",
            );
        }
        k.check(
            self.password.is_none() || self.username.is_some(),
            "mqtt.attach.password",
            "needs mqtt.attach.username",
        );
        k.check(
            self.client_cert.is_some() == self.client_key.is_some(),
            "mqtt.attach.client_cert",
            "client_cert and client_key go together",
        );
        k.check(
            self.client_cert.is_none() || self.ca.is_some(),
            "mqtt.attach.ca",
            "is needed with client_cert: the CA that signs the upstream's certificate",
        );
        let keep_alive = self.keep_alive.0;
        k.check(
            (Duration::from_secs(1)..=Duration::from_secs(u64::from(u16::MAX)))
                .contains(&keep_alive),
            "mqtt.attach.keep_alive",
            "must be between 1s and 65535s",
        );
        k.positive(self.blind_alert_after.0, "mqtt.attach.blind_alert_after");
        let tls = (self.ca.is_some() || self.client_cert.is_some()).then(|| UpstreamTls {
            ca: self.ca.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
        });
        Some(AttachSettings {
            urls: parsed,
            client_id: self.client_id.clone(),
            credentials: self
                .username
                .clone()
                .map(|u| (u, self.password.clone().unwrap_or_default())),
            tls,
            protocol: protocol?,
            shared_group: self.shared_group.clone(),
            qos1: self.qos == 1,
            keep_alive,
            session_expiry: self.session_expiry.0,
            ack_when_stored: self.ack == AckPolicy::Stored && self.qos == 1,
            blindness: fleet_rules::Blindness {
                downtime_is_bad,
                alert_after: self.blind_alert_after.0,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::mqtt::upstream::Protocol;

    fn problems(text: &str) -> Vec<(String, String)> {
        match Config::parse(text).expect("parses").settings() {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    #[test]
    fn an_attach_section_becomes_the_upstream_settings() {
        let c = Config::parse(
            "[mqtt]\nmode = \"attach\"\n[mqtt.attach]\nurl = [\"mqtt://a:1884\", \"mqtts://b\"]\n\
             username = \"fb\"\npassword = \"pw\"\nprotocol = 5\nshared_group = \"fleet\"\nqos = 0\n",
        )
        .expect("parses");
        let a = c.settings().expect("valid").attach.expect("attach mode");
        assert_eq!(a.urls.len(), 2);
        assert_eq!(
            (a.urls[0].port, a.urls[1].port, a.urls[1].tls),
            (1884, 8883, true)
        );
        assert_eq!(a.protocol, Protocol::V5);
        assert_eq!(a.credentials, Some(("fb".into(), "pw".into())));
        assert!(!a.qos1);
        assert_eq!(a.shared_group.as_deref(), Some("fleet"));
        // Embedded mode ignores the section.
        let e = Config::parse("[mqtt.attach]\nurl = \"mqtt://a\"\n").expect("parses");
        assert!(e.settings().expect("valid").attach.is_none());
    }

    #[test]
    fn every_problem_of_an_attach_section_is_named_by_its_key() {
        let found = problems(
            "[mqtt]\nmode = \"attach\"\n[mqtt.attach]\nurl = [\"tcp://x\", \"mqtt://y:0\"]\n\
             protocol = \"4.0\"\nqos = 2\npassword = \"pw\"\nclient_cert = \"c.pem\"\n\
             shared_group = \"a/b\"\n",
        );
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "mqtt.attach.url[0]",
            "mqtt.attach.url[1]",
            "mqtt.attach.protocol",
            "mqtt.attach.qos",
            "mqtt.attach.password",
            "mqtt.attach.client_cert",
            "mqtt.attach.ca",
            "mqtt.attach.shared_group",
        ] {
            assert!(keys.contains(&key), "{key} missing from {found:?}");
        }
        let missing = problems("[mqtt]\nmode = \"attach\"\n");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].0, "mqtt.attach.url");
    }

    #[test]
    fn the_upstream_password_may_come_from_the_environment() {
        let mut c = Config::parse(
            "[mqtt]\nmode = \"attach\"\n[mqtt.attach]\nurl = \"mqtt://a\"\nusername = \"fb\"\n",
        )
        .expect("parses");
        c.apply_env_from(|name| (name == super::UPSTREAM_PASSWORD_ENV).then(|| "s3cret".into()));
        let a = c.settings().expect("valid").attach.expect("attach");
        assert_eq!(a.credentials, Some(("fb".into(), "s3cret".into())));
    }
}
