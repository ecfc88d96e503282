//! `[slack]`: where notifications go, checked and turned into [`SlackSettings`]. A wrong
//! URL, token or schedule is reported with its key before anything starts; the secrets are
//! never repeated in a message.

use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use super::HumanDuration;
use crate::slack::{Language, RetryPolicy, SlackSettings, Style, Target};

/// Environment variable for the webhook URL when the config file has none.
pub const WEBHOOK_ENV: &str = "SLACK_WEBHOOK_URL";
/// Environment variable for the bot token when the config file has none.
pub const BOT_TOKEN_ENV: &str = "SLACK_BOT_TOKEN";

/// `[slack]`: where notifications go. Without `webhook_url` or `bot_token` (nor their
/// environment variables) notifications go to the log only.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSection {
    /// Incoming webhook URL (or env `SLACK_WEBHOOK_URL`). A secret: never logged.
    pub webhook_url: Option<String>,
    /// Bot token, `xoxb-…` (or env `SLACK_BOT_TOKEN`), with `channel`. A secret.
    pub bot_token: Option<String>,
    /// Channel id or name for the bot token.
    pub channel: Option<String>,
    /// Base URL of the Slack Web API (a local endpoint for tests and staging).
    pub api_url: String,
    /// Message language.
    pub language: Language,
    /// Faults, flaps and manual changes arriving within this window of the first one go
    /// out as one message.
    pub group_window: HumanDuration,
    /// At most one message per this interval (Slack allows about one per second per
    /// channel).
    pub min_interval: HumanDuration,
    /// One request's limit; a slower answer counts as a failure and is retried.
    pub request_timeout: HumanDuration,
    /// A message not delivered this long after it was written is given up (logged with
    /// its content, counted).
    pub give_up_after: HumanDuration,
    /// Tell the channel when a person takes a vehicle out or puts it back.
    pub notify_manual: bool,
    /// Post the SLO burn-rate alerts (off when Alertmanager already pages from
    /// `/metrics`; they stay on `fleet/alerts` either way).
    pub notify_alerts: bool,
    /// Notifications waiting in the outbox at most; beyond, new ones are dropped and
    /// counted (they still go to the log).
    pub max_outbox: usize,
    /// Daily SLO digest at this local time, `"HH:MM"` (absent: no digest).
    pub digest_at: Option<String>,
    /// The local time zone of message timestamps and `digest_at`, as `"+09:00"`.
    pub utc_offset: String,
}

impl Default for SlackSection {
    fn default() -> Self {
        SlackSection {
            webhook_url: None,
            bot_token: None,
            channel: None,
            api_url: "https://slack.com/api".to_owned(),
            language: Language::En,
            group_window: HumanDuration::from_secs(10),
            min_interval: HumanDuration::from_secs(1),
            request_timeout: HumanDuration::from_secs(10),
            give_up_after: HumanDuration::from_secs(6 * 3600),
            notify_manual: true,
            notify_alerts: true,
            max_outbox: 100_000,
            digest_at: None,
            utc_offset: "+00:00".to_owned(),
        }
    }
}

impl std::fmt::Debug for SlackSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("SlackSection")
            .field("webhook_url", &redacted(&self.webhook_url))
            .field("bot_token", &redacted(&self.bot_token))
            .field("channel", &self.channel)
            .field("api_url", &self.api_url)
            .field("language", &self.language)
            .field("group_window", &self.group_window)
            .field("min_interval", &self.min_interval)
            .field("request_timeout", &self.request_timeout)
            .field("give_up_after", &self.give_up_after)
            .field("notify_manual", &self.notify_manual)
            .field("notify_alerts", &self.notify_alerts)
            .field("max_outbox", &self.max_outbox)
            .field("digest_at", &self.digest_at)
            .field("utc_offset", &self.utc_offset)
            .finish()
    }
}

/// `[slack]`: a wrong URL or token is reported before anything starts.
pub(super) fn settings(s: &SlackSection, k: &mut Checker) -> Option<SlackSettings> {
    let http_url = |text: &str| {
        url::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .is_some()
    };
    if s.bot_token.is_some() && s.channel.is_none() {
        k.check(
            false,
            "slack.channel",
            "a bot token needs a channel (its id, like \"C0123456789\", or \"#fleet-ops\")",
        );
    }
    if s.webhook_url.is_some() && s.bot_token.is_some() {
        k.check(
            false,
            "slack.webhook_url",
            "set either webhook_url or bot_token + channel, not both",
        );
    }
    if let Some(url) = &s.webhook_url {
        // The URL is a secret: the message does not repeat it.
        k.check(
            http_url(url),
            "slack.webhook_url",
            "is not an http(s) URL; copy it from the Slack app's Incoming Webhooks page (https://hooks.slack.com/services/...)",
        );
    }
    if let Some(token) = &s.bot_token {
        k.check(
            token.starts_with("xoxb-") || token.starts_with("xoxp-"),
            "slack.bot_token",
            "does not look like a Slack token: a bot token starts with \"xoxb-\" (OAuth & Permissions page of the Slack app)",
        );
    }
    k.check(
        http_url(&s.api_url),
        "slack.api_url",
        format!("{:?} is not an http(s) URL", s.api_url),
    );
    k.check(
        s.group_window.0 <= Duration::from_secs(600),
        "slack.group_window",
        format!("{} is too long: use at most 10m", s.group_window),
    );
    k.check(
        s.min_interval.0 <= Duration::from_secs(60),
        "slack.min_interval",
        format!("{} is too long: use at most 1m", s.min_interval),
    );
    k.check(
        s.request_timeout.0 >= Duration::from_millis(100)
            && s.request_timeout.0 <= Duration::from_secs(120),
        "slack.request_timeout",
        format!("{} is out of range: use 100ms to 2m", s.request_timeout),
    );
    k.check(
        s.give_up_after.0 >= Duration::from_secs(1),
        "slack.give_up_after",
        format!("{} is too short", s.give_up_after),
    );
    k.check(
        s.max_outbox >= 100,
        "slack.max_outbox",
        format!("{} is too small: keep at least 100", s.max_outbox),
    );
    if let Some(at) = &s.digest_at {
        k.check(
            parse_time_of_day(at).is_some(),
            "slack.digest_at",
            format!("{at:?} is not a time of day: write it like \"09:00\""),
        );
    }
    k.check(
        parse_utc_offset(&s.utc_offset).is_some(),
        "slack.utc_offset",
        format!(
            "{:?} is not an offset: write it like \"+09:00\" or \"-05:00\"",
            s.utc_offset
        ),
    );
    let target = match (&s.webhook_url, &s.bot_token, &s.channel) {
        (Some(url), None, _) => Target::Webhook(url::Url::parse(url).ok()?),
        (None, Some(token), Some(channel)) => Target::Bot {
            token: token.clone(),
            channel: channel.clone(),
        },
        (None, None, Some(_)) => {
            tracing::warn!("[slack] channel is set but there is no bot token ([slack] bot_token or SLACK_BOT_TOKEN): notifications go to the log only");
            return None;
        }
        _ => return None,
    };
    Some(SlackSettings {
        target,
        api_url: s.api_url.clone(),
        style: Style {
            lang: s.language,
            utc_offset_min: parse_utc_offset(&s.utc_offset)?,
        },
        group_window: s.group_window.0,
        min_interval: s.min_interval.0,
        request_timeout: s.request_timeout.0,
        policy: RetryPolicy {
            give_up_after: s.give_up_after.0,
        },
        notify_manual: s.notify_manual,
        notify_alerts: s.notify_alerts,
        max_outbox: s.max_outbox as u64,
        digest_at: match &s.digest_at {
            Some(at) => Some(parse_time_of_day(at)?),
            None => None,
        },
    })
}

/// Parses `"HH:MM"`.
fn parse_time_of_day(text: &str) -> Option<(u32, u32)> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some((h, m))
}

/// Parses `"+09:00"` / `"-05:30"` into minutes.
/// `[slack] utc_offset` in minutes (0 when it does not parse: the check reports it).
pub(super) fn utc_offset_min(s: &SlackSection) -> i32 {
    parse_utc_offset(&s.utc_offset).unwrap_or(0)
}

fn parse_utc_offset(text: &str) -> Option<i32> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = parse_time_of_day(text.get(1..)?)?;
    (h <= 14).then_some(sign * (h * 60 + m) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_offsets_parse_strictly() {
        assert_eq!(parse_time_of_day("09:30"), Some((9, 30)));
        assert_eq!(parse_time_of_day("9:30"), None);
        assert_eq!(parse_time_of_day("24:00"), None);
        assert_eq!(parse_utc_offset("+09:00"), Some(540));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("09:00"), None);
    }
}
