//! Secrets from the environment, so they need not be written in the config file. One
//! place decides which wins when both are set; the values are then checked like any other
//! (a problem names the variable it came from).

use super::attach::UPSTREAM_PASSWORD_ENV;
use super::ha::WATCH_PASSWORD_ENV;
use super::security::FLEET_KEY_ENV;
use super::slack::{BOT_TOKEN_ENV, WEBHOOK_ENV};
use super::Config;

/// Environment variable for `[http] token`.
pub const API_TOKEN_ENV: &str = "FLEET_API_TOKEN";

/// Environment variable for `[store] url` (it may hold the database password).
pub const STORE_URL_ENV: &str = "FLEET_STORE_URL";

/// Every variable [`Config::apply_env`] reads.
pub const ENV_VARS: [&str; 7] = [
    FLEET_KEY_ENV,
    API_TOKEN_ENV,
    WEBHOOK_ENV,
    BOT_TOKEN_ENV,
    UPSTREAM_PASSWORD_ENV,
    STORE_URL_ENV,
    WATCH_PASSWORD_ENV,
];

impl Config {
    /// Takes the secrets from the process environment: see [`Config::apply_env_from`].
    pub fn apply_env(&mut self) {
        self.apply_env_from(|name| std::env::var(name).ok());
    }

    /// Takes the secrets from `var` (an empty value counts as unset):
    ///
    /// - `FLEET_KEY` replaces `auth.fleet_key` (the environment is the preferred place for
    ///   the key every vehicle password derives from);
    /// - `FLEET_API_TOKEN` gives `[http] token` when the file has none;
    /// - `SLACK_BOT_TOKEN`, else `SLACK_WEBHOOK_URL`, gives `[slack]` its target when the
    ///   file names neither a webhook nor a bot token;
    /// - `FLEET_UPSTREAM_PASSWORD` gives `[mqtt.attach] password` when the file has none;
    /// - `FLEET_STORE_URL` gives `[store] url` when the file has none;
    /// - `FLEET_HA_WATCH_PASSWORD` gives `[ha] watch_password` when the file has none.
    pub fn apply_env_from(&mut self, var: impl Fn(&str) -> Option<String>) {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if let Some(key) = var(FLEET_KEY_ENV) {
            self.auth.fleet_key = Some(key);
            self.from_env.push(("auth.fleet_key", FLEET_KEY_ENV));
        }
        if let Some(token) = var(API_TOKEN_ENV) {
            if self.http.token.is_some() {
                tracing::info!(
                    "{API_TOKEN_ENV} is set but [http] token in the config file is used"
                );
            } else {
                self.http.token = Some(token);
                self.from_env.push(("http.token", API_TOKEN_ENV));
            }
        }
        if let Some(password) = var(UPSTREAM_PASSWORD_ENV) {
            if self.mqtt.attach.password.is_none() {
                self.mqtt.attach.password = Some(password);
                self.from_env
                    .push(("mqtt.attach.password", UPSTREAM_PASSWORD_ENV));
            }
        }
        if let Some(url) = var(STORE_URL_ENV) {
            if self.store.url.is_none() {
                self.store.url = Some(url);
                self.from_env.push(("store.url", STORE_URL_ENV));
            }
        }
        if let Some(password) = var(WATCH_PASSWORD_ENV) {
            if self.ha.watch_password.is_none() {
                self.ha.watch_password = Some(password);
                self.from_env
                    .push(("ha.watch_password", WATCH_PASSWORD_ENV));
            }
        }
        let (bot, webhook) = (var(BOT_TOKEN_ENV), var(WEBHOOK_ENV));
        if self.slack.webhook_url.is_some() || self.slack.bot_token.is_some() {
            if bot.is_some() || webhook.is_some() {
                tracing::info!(
                    "{WEBHOOK_ENV} or {BOT_TOKEN_ENV} is set but [slack] in the config file is used"
                );
            }
        } else if let Some(token) = bot {
            self.slack.bot_token = Some(token);
            self.from_env.push(("slack.bot_token", BOT_TOKEN_ENV));
        } else if let Some(url) = webhook {
            self.slack.webhook_url = Some(url);
            self.from_env.push(("slack.webhook_url", WEBHOOK_ENV));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with_env(toml: &str, vars: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut config = Config::parse(toml).expect("parses");
        config.apply_env_from(|name| vars.get(name).cloned());
        config
    }

    #[test]
    fn the_fleet_key_from_the_environment_wins_over_the_file() {
        let c = with_env(
            "[auth]\nmode = \"hmac\"\nfleet_key = \"from-the-file-from-the-file-0123\"\n",
            &[("FLEET_KEY", "from-the-environment-0123456789ab")],
        );
        assert_eq!(
            c.auth.fleet_key.as_deref(),
            Some("from-the-environment-0123456789ab")
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_store_url_from_the_environment_is_used_only_when_the_file_has_none() {
        let env = [("FLEET_STORE_URL", "postgres://fleet@db.example/env")];
        let c = with_env("", &env);
        assert_eq!(
            c.store.url.as_deref(),
            Some("postgres://fleet@db.example/env")
        );
        let c = with_env(
            "[store]\nurl = \"postgres://fleet@db.example/file\"\n",
            &env,
        );
        assert_eq!(
            c.store.url.as_deref(),
            Some("postgres://fleet@db.example/file")
        );
    }

    #[test]
    fn the_api_token_from_the_environment_is_used_only_when_the_file_has_none() {
        let c = with_env("", &[("FLEET_API_TOKEN", "0123456789abcdef-env")]);
        assert_eq!(c.http.token.as_deref(), Some("0123456789abcdef-env"));
        let c = with_env(
            "[http]\ntoken = \"0123456789abcdef-file\"\n",
            &[("FLEET_API_TOKEN", "0123456789abcdef-env")],
        );
        assert_eq!(c.http.token.as_deref(), Some("0123456789abcdef-file"));
    }

    #[test]
    fn slack_takes_the_bot_token_then_the_webhook_from_the_environment_unless_the_file_has_one() {
        let both = [
            ("SLACK_BOT_TOKEN", "xoxb-env"),
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/ENV",
            ),
        ];
        let c = with_env("[slack]\nchannel = \"C1\"\n", &both);
        assert_eq!(c.slack.bot_token.as_deref(), Some("xoxb-env"));
        assert_eq!(c.slack.webhook_url, None);
        let c = with_env("", &both[1..]);
        assert_eq!(
            c.slack.webhook_url.as_deref(),
            Some("https://hooks.slack.com/services/T/B/ENV")
        );
        let c = with_env(
            "[slack]\nwebhook_url = \"https://hooks.slack.com/services/T/B/FILE\"\n",
            &both,
        );
        assert_eq!(c.slack.bot_token, None);
        assert!(c.slack.webhook_url.is_some_and(|u| u.ends_with("FILE")));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let c = with_env("", &[("FLEET_API_TOKEN", ""), ("SLACK_BOT_TOKEN", "")]);
        assert_eq!(c.http.token, None);
        assert_eq!(c.slack.bot_token, None);
    }

    #[test]
    fn a_bad_value_from_the_environment_is_named_with_its_variable() {
        let c = with_env("", &[("FLEET_API_TOKEN", "short")]);
        let problems = c.validate().expect_err("too short").0;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "http.token");
        assert!(
            problems[0].message.contains("env FLEET_API_TOKEN"),
            "{}",
            problems[0].message
        );
    }
}
