//! The configuration parsed into what each component takes. Parse, don't validate: the
//! only way to get [`Settings`] is [`Config::settings`], which checks every value once and
//! reports every problem with its key path, so a component never sees an unchecked value
//! and never parses a config string again.

use std::time::Duration;

use super::validate::{self, Checker, ConfigErrors, Problem};
use super::{journeys, security, slack, topics, Config};
use crate::api::{ApiSettings, SloSettings};
use crate::engine::{CommandSlo, EngineOptions, PersistOptions};
use crate::mqtt::acl::Acl;
use crate::mqtt::MqttOptions;
use crate::slack::SlackSettings;
use crate::store::StoreOptions;

/// The MDS `provider_id` used when none is configured.
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// Every component's settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The embedded MQTT broker.
    pub mqtt: MqttOptions,
    /// Attach mode: the upstream broker (the embedded one is not started).
    pub attach: Option<crate::mqtt::upstream::AttachSettings>,
    /// The ops HTTP API.
    pub api: ApiSettings,
    /// The database.
    pub store: StoreOptions,
    /// The engine around the rules.
    pub engine: EngineOptions,
    /// The rules.
    pub rules: fleet_rules::RulesConfig,
    /// Slack, when a webhook or bot token is configured.
    pub slack: Option<SlackSettings>,
    /// Count the broker's own downtime found at a restart as bad fleet-time.
    pub downtime_counts_as_bad: bool,
    /// The role names of `[[auth.users]]` (for `check-config`'s table).
    pub roles: topics::Roles,
    /// Active/standby: the lease this engine leads by (its store is fenced by it).
    pub ha: Option<super::HaSettings>,
}

impl Config {
    /// The settings of every component, or every problem at once.
    pub fn settings(&self) -> Result<Settings, ConfigErrors> {
        let mut k = Checker::default();
        validate::ranges(self, &mut k);
        let slack = slack::settings(&self.slack, &mut k);
        let layout = topics::topics(&self.topics, &mut k);
        let user_roles: Vec<&str> = self.auth.users.iter().map(|u| u.role.as_str()).collect();
        let (roles, rules) = topics::acl(&self.acl, &user_roles, &mut k);
        let named: Vec<_> = rules.iter().map(|r| r.who).collect();
        let auth = security::auth(&self.auth, &roles, &named, &mut k);
        security::tls_and_limits(self.tls.as_ref(), &self.limits, &mut k);
        let attach = match self.mqtt.mode {
            super::MqttMode::Embedded => None,
            super::MqttMode::Attach => self
                .mqtt
                .attach
                .settings(self.slo.downtime_counts_as_bad, &mut k),
        };
        let ha = super::ha::settings(self, &mut k);
        let journeys = journeys::journeys(&self.journeys, layout.as_ref(), &mut k);
        k.finish(&self.from_env)?;
        let (Some(auth), Some(layout)) = (auth, layout) else {
            // Only reachable if a section failed without recording why: say so.
            return Err(ConfigErrors(vec![Problem {
                key: "auth".to_owned(),
                message: "could not be read".to_owned(),
            }]));
        };
        let sli_history = self.slo.window.0.max(Duration::from_secs(3 * 24 * 3600));
        Ok(Settings {
            attach,
            mqtt: MqttOptions {
                listen: self.mqtt.listen,
                max_payload: self.mqtt.max_payload,
                max_connections: self.mqtt.max_connections,
                max_queued_messages: self.mqtt.max_queued_messages,
                max_keepalive: u16::try_from(self.mqtt.max_keepalive.0.as_secs())
                    .unwrap_or(u16::MAX),
                handshake_timeout: self.limits.handshake_timeout.0,
                auth,
                tls: self.tls.as_ref().map(super::TlsSection::options),
                limits: self.limits.options(),
                acl: Acl::new(layout.clone(), rules),
                journeys: journeys.clone(),
                ..MqttOptions::default()
            },
            api: ApiSettings {
                listen: self.http.listen,
                token: self.http.token.clone(),
                slo: SloSettings {
                    target: self.slo.target,
                    window: self.slo.window.0,
                    maintenance_counts_as_bad: self.slo.maintenance_counts_as_bad,
                    command_ack_target: self.slo.command_ack_target,
                    command_ack_within: self.slo.command_ack_within.0,
                    alerts_topic: layout.alerts().to_owned(),
                    journeys: self.rules().journeys,
                },
                mds_provider_id: self
                    .mds
                    .provider_id
                    .clone()
                    .unwrap_or_else(|| NIL_UUID.to_owned()),
                page: crate::api::page::PageSettings {
                    enabled: self.http.page,
                    utc_offset_min: slack::utc_offset_min(&self.slack),
                },
            },
            store: StoreOptions {
                location: self.store.location(),
                synchronous: self.store.synchronous,
                fence: ha.as_ref().map(|ha| crate::store::Fence {
                    node: ha.target.node.clone(),
                    epoch: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
                }),
            },
            engine: EngineOptions {
                topics: layout,
                max_payload: self.mqtt.max_payload,
                sli_interval: self.slo.publish_interval.0,
                persist: PersistOptions {
                    checkpoint_interval: self.store.checkpoint_interval.0,
                    sli_history,
                    command_log_retention: self.store.command_log_retention.0,
                },
                command_slo: CommandSlo {
                    ack_within: self.slo.command_ack_within.0,
                    target: self.slo.command_ack_target,
                    window: self.slo.window.0,
                },
                epoch: None, // set for each term an active/standby engine leads
                journeys,
            },
            rules: self.rules(),
            slack,
            downtime_counts_as_bad: self.slo.downtime_counts_as_bad,
            roles,
            ha,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_settings_that_run_out_of_the_box() {
        let s = Config::default()
            .settings()
            .expect("the defaults are valid");
        assert_eq!(s.mqtt.listen.port(), 1883);
        assert_eq!(s.api.listen.to_string(), "127.0.0.1:8080");
        assert!(s.slack.is_none());
        assert_eq!(s.api.mds_provider_id, NIL_UUID);
        // The SLI history covers the longest burn window even for a short SLO window.
        let c = Config::parse("[slo]\nwindow = \"1h\"\n").expect("parses");
        let history = c.settings().expect("valid").engine.persist.sli_history;
        assert_eq!(history, Duration::from_secs(3 * 24 * 3600));
    }

    #[test]
    fn slack_settings_carry_the_parsed_schedule_and_offset() {
        let c = Config::parse(
            "[slack]\nbot_token = \"xoxb-1-2\"\nchannel = \"#fleet-ops\"\n\
             digest_at = \"09:30\"\nutc_offset = \"+09:00\"\nlanguage = \"ja\"\n",
        )
        .expect("parses");
        let slack = c.settings().expect("valid").slack.expect("configured");
        assert_eq!(slack.digest_at, Some((9, 30)));
        assert_eq!(slack.style.utc_offset_min, 540);
        assert_eq!(slack.language(), crate::slack::Language::Ja);
    }
}
