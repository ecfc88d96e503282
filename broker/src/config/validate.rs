//! Range and consistency checks that report every problem, each with its key path.

use std::fmt;
use std::time::Duration;

use super::{Config, FaultRuleSection};

/// One problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `faults.codes.BRAKE_SENSOR.threshold`
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl ConfigErrors {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// Collects problems while the configuration is read.
#[derive(Debug, Default)]
pub(super) struct Checker(Vec<Problem>);

impl Checker {
    /// Every problem found, or none. A problem with a value that came from the
    /// environment says so (`from_env`: key path, variable).
    pub(super) fn finish(self, from_env: &[(&str, &str)]) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut problems = self.0;
        for p in &mut problems {
            if let Some((_, var)) = from_env.iter().find(|(key, _)| p.key == *key) {
                p.message
                    .push_str(&format!(" (the value comes from env {var})"));
            }
        }
        Err(ConfigErrors(problems))
    }

    pub(super) fn check(&mut self, ok: bool, key: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.0.push(Problem {
                key: key.into(),
                message: message.into(),
            });
        }
    }

    pub(super) fn positive(&mut self, d: Duration, key: impl Into<String>) {
        self.check(!d.is_zero(), key, "must be longer than zero");
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The checks of single values and ranges that need no conversion.
pub(super) fn ranges(c: &Config, k: &mut Checker) {
    k.check(
        (128..=1024 * 1024).contains(&c.mqtt.max_payload),
        "mqtt.max_payload",
        format!(
            "{} is out of range: use 128 to 1048576 bytes",
            c.mqtt.max_payload
        ),
    );
    k.check(
        (1..=u64::from(u16::MAX)).contains(&c.mqtt.max_keepalive.0.as_secs()),
        "mqtt.max_keepalive",
        format!(
            "{} is out of range: use 1s to 65535s (MQTT's limit)",
            c.mqtt.max_keepalive
        ),
    );
    k.check(
        c.mqtt.max_connections >= 1,
        "mqtt.max_connections",
        "must be at least 1",
    );
    k.check(
        (16..=10_000_000).contains(&c.mqtt.max_queued_messages),
        "mqtt.max_queued_messages",
        format!(
            "{} is out of range: use 16 to 10000000 (above the fleet size for backends reading vehicles/+/service)",
            c.mqtt.max_queued_messages
        ),
    );
    if let Some(token) = &c.http.token {
        k.check(
            token.len() >= 16,
            "http.token",
            "is shorter than 16 characters: use a long random string",
        );
    }

    k.positive(c.heartbeat.timeout.0, "heartbeat.timeout");
    k.check(
        c.heartbeat.recover_after >= 1,
        "heartbeat.recover_after",
        "must be at least 1 (the number of heartbeats that bring a vehicle back)",
    );
    for (model, m) in &c.heartbeat.models {
        k.positive(m.timeout.0, format!("heartbeat.models.{model}.timeout"));
    }

    let mut fault_rule = |key: String, r: &FaultRuleSection| {
        if !r.informational {
            k.check(
                (1..=1000).contains(&r.threshold),
                format!("{key}.threshold"),
                format!("{} is out of range: use 1 to 1000 reports", r.threshold),
            );
            k.positive(r.window.0, format!("{key}.window"));
        }
    };
    fault_rule("faults.default".into(), &c.faults.default);
    for (code, r) in &c.faults.codes {
        fault_rule(format!("faults.codes.{code}"), r);
    }
    for code in c.faults.codes.keys() {
        k.check(
            crate::contract::is_error_code(code),
            format!("faults.codes.{code}"),
            "error codes are 1 to 64 of A-Z, 0-9 and _ (as the firmware sends them)",
        );
    }

    k.check(
        c.mass_loss.fraction > 0.0 && c.mass_loss.fraction <= 1.0,
        "mass_loss.fraction",
        format!(
            "{} is out of range: use a fraction in (0, 1], e.g. 0.2",
            c.mass_loss.fraction
        ),
    );
    k.positive(c.mass_loss.window.0, "mass_loss.window");

    k.check(
        c.flap.threshold >= 2,
        "flap.threshold",
        "must be at least 2 (one timeout is not flapping)",
    );
    k.positive(c.flap.window.0, "flap.window");
    k.positive(c.commands.resend_interval.0, "commands.resend_interval");
    k.check(
        c.fleet.max_vehicles >= 1,
        "fleet.max_vehicles",
        "must be at least 1",
    );

    k.check(
        c.slo.target > 0.0 && c.slo.target < 1.0,
        "slo.target",
        format!(
            "{} is out of range: use a fraction below 1, e.g. 0.995",
            c.slo.target
        ),
    );
    k.check(
        c.slo.window.0 >= Duration::from_secs(3600)
            && c.slo.window.0 <= Duration::from_secs(400 * 24 * 3600),
        "slo.window",
        format!("{} is out of range: use 1h to 400d", c.slo.window),
    );
    k.positive(c.slo.publish_interval.0, "slo.publish_interval");
    k.check(
        c.slo.command_ack_target > 0.0 && c.slo.command_ack_target < 1.0,
        "slo.command_ack_target",
        format!(
            "{} is out of range: use a fraction below 1, e.g. 0.99",
            c.slo.command_ack_target
        ),
    );
    k.check(
        c.slo.command_ack_within.0 >= Duration::from_secs(1)
            && c.slo.command_ack_within.0 <= Duration::from_secs(3600),
        "slo.command_ack_within",
        format!("{} is out of range: use 1s to 1h", c.slo.command_ack_within),
    );
    if let Some(id) = &c.mds.provider_id {
        k.check(
            is_uuid(id),
            "mds.provider_id",
            format!("{id:?} is not a UUID: use the provider_id from the MDS provider list, like \"63f13c48-34ff-49d2-aca7-cf6a5b6171c3\""),
        );
    }

    k.check(
        !c.store.path.as_os_str().is_empty() && c.store.path.file_name().is_some(),
        "store.path",
        "must name a database file, e.g. \"data/fleet.db\"",
    );
    if let Some(url) = &c.store.url {
        if let Err(problem) = check_postgres_url(url) {
            k.check(false, "store.url", problem);
        }
    }
    k.check(
        c.store.checkpoint_interval.0 >= Duration::from_secs(1)
            && c.store.checkpoint_interval.0 <= Duration::from_secs(3600),
        "store.checkpoint_interval",
        format!(
            "{} is out of range: use 1s to 1h",
            c.store.checkpoint_interval
        ),
    );
    k.check(
        c.store.command_log_retention.0 >= Duration::from_secs(3600),
        "store.command_log_retention",
        format!(
            "{} is too short: keep at least 1h of commands",
            c.store.command_log_retention
        ),
    );
}

/// A PostgreSQL URL the store can use, or what is wrong with it (never repeating it: it
/// may hold a password).
fn check_postgres_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "must be a PostgreSQL URL, e.g. \"postgres://fleet:PASSWORD@db.example:5432/fleet\""
                .into(),
        );
    }
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("is not a valid PostgreSQL URL: {e}"))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err("asks for sslmode=require, but the store connects without TLS: use a network where plain connections are safe (sslmode=disable) or a TLS-terminating proxy".into());
    }
    Ok(())
}

/// The keys of the problems `toml` has, in order (for the config tests).
#[cfg(test)]
pub(super) fn problems(toml: &str) -> Vec<String> {
    let config = super::Config::parse(toml).expect("test toml parses");
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.0.into_iter().map(|p| p.key).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_valid_default() {
        assert!(problems("").is_empty());
    }

    #[test]
    fn the_docker_compose_config_is_valid() {
        assert_eq!(
            problems(include_str!("../../../deploy/compose.toml")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_design_example_is_valid() {
        let text = r#"
[mqtt]
listen = "0.0.0.0:1883"
[http]
listen = "127.0.0.1:8080"
token = "0123456789abcdef0123"
[store]
path = "data/fleet.db"
[heartbeat]
timeout = "5m"
recover_after = 1
restart_grace = "5m"
[heartbeat.models.e-bike]
timeout = "10m"
[faults.default]
threshold = 3
window = "10m"
[faults.codes.BRAKE_SENSOR]
threshold = 1
window = "1m"
[faults.codes.LOW_TIRE_PRESSURE]
informational = true
[mass_loss]
fraction = 0.2
min_vehicles = 50
window = "2m"
action = "hold"
[slo]
target = 0.995
window = "30d"
"#;
        assert_eq!(problems(text), Vec::<String>::new());
        let rules = Config::parse(text).expect("parses").rules();
        assert_eq!(rules.heartbeat.models["e-bike"], Duration::from_secs(600));
        assert_eq!(
            rules.faults.codes["LOW_TIRE_PRESSURE"],
            fleet_rules::FaultRule::Informational
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let keys = problems(
            r#"
[heartbeat]
timeout = "0s"
recover_after = 0
[faults.codes.brake]
threshold = 0
[mass_loss]
fraction = 1.5
[slo]
target = 1.0
"#,
        );
        assert_eq!(
            keys,
            vec![
                "heartbeat.timeout",
                "heartbeat.recover_after",
                "faults.codes.brake.threshold",
                "faults.codes.brake",
                "mass_loss.fraction",
                "slo.target",
            ]
        );
    }

    #[test]
    fn a_bad_slack_url_token_or_schedule_is_named_by_its_key() {
        let keys = problems(
            "[slack]\nwebhook_url = \"hooks.slack.com/services/T/B/X\"\nlanguage = \"ja\"\n\
             digest_at = \"9am\"\nutc_offset = \"JST\"\nmax_outbox = 10\n",
        );
        assert_eq!(
            keys,
            vec![
                "slack.webhook_url",
                "slack.max_outbox",
                "slack.digest_at",
                "slack.utc_offset"
            ]
        );
        let keys = problems("[slack]\nbot_token = \"hunter2\"\n");
        assert_eq!(keys, vec!["slack.channel", "slack.bot_token"]);
        let both = "[slack]\nwebhook_url = \"https://hooks.slack.com/services/T/B/X\"\n\
                    bot_token = \"xoxb-1\"\nchannel = \"C1\"\n";
        assert_eq!(problems(both), vec!["slack.webhook_url"]);
        let good = "[slack]\nbot_token = \"xoxb-1-2\"\nchannel = \"#fleet-ops\"\n\
                    digest_at = \"09:00\"\nutc_offset = \"+09:00\"\n";
        assert!(problems(good).is_empty());
        assert!(Config::parse("[slack]\nlanguage = \"fr\"\n").is_err());
    }

    #[test]
    fn secrets_in_slack_settings_never_show_in_debug_output() {
        let config = Config::parse(
            "[slack]\nwebhook_url = \"https://hooks.slack.com/services/T/B/SECRET\"\n",
        )
        .expect("parses");
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_command_ack_slo_and_the_mds_provider_id_are_checked() {
        let keys = problems(
            "[slo]\ncommand_ack_target = 1.0\ncommand_ack_within = \"0s\"\n\
             [mds]\nprovider_id = \"not-a-uuid\"\n",
        );
        assert_eq!(
            keys,
            vec![
                "slo.command_ack_target",
                "slo.command_ack_within",
                "mds.provider_id"
            ]
        );
        let ok = "[slo]\ncommand_ack_target = 0.95\ncommand_ack_within = \"10s\"\n\
                  [mds]\nprovider_id = \"63f13c48-34ff-49d2-aca7-cf6a5b6171c3\"\n";
        assert_eq!(problems(ok), Vec::<String>::new());
    }

    #[test]
    fn a_postgres_store_url_is_checked_without_repeating_it() {
        let c = Config::parse("[store]\nurl = \"postgres://fleet:pw@db.example:5433/fleet\"\n")
            .expect("parses");
        assert!(c.validate().is_ok());
        assert_eq!(
            c.store.location(),
            crate::store::Location::Postgres("postgres://fleet:pw@db.example:5433/fleet".into())
        );
        let shown = format!("{:?} {}", c.store, c.store.location());
        assert!(shown.contains("db.example:5433"), "{shown}");
        assert!(!shown.contains("pw@"), "{shown}");
        for bad in [
            "mysql://fleet:s3cret@db/fleet",
            "postgres://fleet:s3cret@db/fleet?sslmode=require",
            "postgres://fleet:s3cret@db:notaport/fleet",
        ] {
            let c = Config::parse(&format!("[store]\nurl = \"{bad}\"\n")).expect("parses");
            let err = c.validate().expect_err(bad);
            assert_eq!(err.0.len(), 1, "{bad}: {err}");
            assert_eq!(err.0[0].key, "store.url");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn store_settings_are_checked() {
        let keys = problems(
            "[store]\npath = \"\"\ncheckpoint_interval = \"0s\"\ncommand_log_retention = \"1m\"\n",
        );
        assert_eq!(
            keys,
            vec![
                "store.path",
                "store.checkpoint_interval",
                "store.command_log_retention"
            ]
        );
        let c = Config::parse("[store]\nsynchronous = \"normal\"\n").expect("parses");
        assert_eq!(c.store.synchronous, crate::store::Synchronous::Normal);
        assert!(Config::parse("[store]\nsynchronous = \"sometimes\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::parse("[heartbeat]\ntimeuot = \"5m\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("timeuot"), "{err}");
    }

    #[test]
    fn a_bad_duration_says_how_to_write_one() {
        let err = Config::parse("[heartbeat]\ntimeout = \"five minutes\"\n")
            .expect_err("bad")
            .to_string();
        assert!(err.contains("timeout") && err.contains("\"5m\""), "{err}");
    }
}
