//! Slack notifications ops can trust. The engine writes each notification into a durable
//! outbox in the same store transaction as the transition behind it ([`EngineOutbox`]);
//! one sender task ([`sender`]) groups bursts into few messages, stores each message with
//! its idempotency key before the first attempt, and posts at Slack's pace, obeying
//! `Retry-After` and backing off on errors. Ingest never waits on Slack: a full outbox
//! drops new notifications (counted, logged) rather than slowing the engine.

mod client;
mod compose;
pub mod digest;
pub mod notice;
pub mod outbox;
mod policy;
pub mod render;
mod sender;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{Cause, Notification, Reason, ReasonChange, ServiceState, SliReport, Transition};
use tokio::sync::Notify;
use tracing::error;

pub use client::{Poster, Target};
pub use notice::Notice;
pub use outbox::OutboxRecord;
pub use policy::{Outcome, RetryPolicy};
pub use sender::{spawn, SenderHandle};

use crate::config::{SlackLanguage, SlackSection};
use crate::metrics::Metrics;
use crate::store::Record;

/// Environment variable for the webhook URL when the config file has none.
pub const WEBHOOK_ENV: &str = "SLACK_WEBHOOK_URL";
/// Environment variable for the bot token when the config file has none.
pub const BOT_TOKEN_ENV: &str = "SLACK_BOT_TOKEN";

/// Room beyond `max_outbox` kept for incidents and SLO alerts.
const ALONE_RESERVE: u64 = 1000;

/// The notifier's counters.
#[derive(Debug, Default)]
pub struct SlackMetrics {
    /// 1 when Slack is configured.
    pub configured: AtomicU64,
    /// Notifications waiting for delivery (in no message yet, or in a pending one).
    pub depth: AtomicU64,
    /// Messages composed and not yet delivered.
    pub messages_pending: AtomicU64,
    /// Messages Slack accepted.
    pub sent: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Of those, answered with 429.
    pub rate_limited: AtomicU64,
    /// Notifications dropped because the outbox was full.
    pub dropped_full: AtomicU64,
    /// Messages given up (too old, or never acceptable).
    pub gave_up: AtomicU64,
    /// Unix ms of the last accepted message (0: none yet).
    pub last_success_ms: AtomicU64,
    /// 1 while the latest attempt failed.
    pub failing: AtomicU64,
}

/// `[slack]` resolved: where and how to post.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// Webhook or bot token + channel.
    pub target: Target,
    /// Base URL of the Web API.
    pub api_url: String,
    /// Language and time zone.
    pub style: render::Style,
    /// Grouping window.
    pub group_window: Duration,
    /// At most one message per this interval.
    pub min_interval: Duration,
    /// One request's time limit.
    pub request_timeout: Duration,
    /// When to give up.
    pub policy: RetryPolicy,
    /// Tell manual service changes.
    pub notify_manual: bool,
    /// Outbox bound (notifications).
    pub max_outbox: u64,
    /// Daily digest time of day, local.
    pub digest_at: Option<(u32, u32)>,
}

impl SlackSettings {
    /// The settings of a validated `[slack]` section; `None` when no webhook or token is
    /// configured (notifications then go to the log only).
    pub fn from_config(s: &SlackSection) -> Result<Option<SlackSettings>, String> {
        let target = if let Some(url) = &s.webhook_url {
            let url = url::Url::parse(url)
                .map_err(|e| format!("[slack] webhook_url is not a URL: {e}"))?;
            Target::Webhook(url)
        } else if let (Some(token), Some(channel)) = (&s.bot_token, &s.channel) {
            Target::Bot {
                token: slack_morphism::prelude::SlackApiToken::new(token.clone().into()),
                channel: channel.clone().into(),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(SlackSettings {
            target,
            api_url: s.api_url.clone(),
            style: render::Style {
                lang: s.language,
                utc_offset_min: digest::parse_utc_offset(&s.utc_offset).unwrap_or(0),
            },
            group_window: s.group_window.0,
            min_interval: s.min_interval.0,
            request_timeout: s.request_timeout.0,
            policy: RetryPolicy {
                give_up_after: s.give_up_after.0,
            },
            notify_manual: s.notify_manual,
            max_outbox: s.max_outbox as u64,
            digest_at: s.digest_at.as_deref().and_then(digest::parse_time_of_day),
        }))
    }

    /// The language.
    pub fn language(&self) -> SlackLanguage {
        self.style.lang
    }
}

/// The engine's end of the outbox: turns notifications (and manual transitions) into
/// outbox records, bounded by `max_outbox`.
pub struct EngineOutbox {
    threads: notice::Threads,
    wake: Arc<Notify>,
    max: u64,
    notify_manual: bool,
    metrics: Arc<Metrics>,
    dropped_logged: u64,
}

impl EngineOutbox {
    /// The engine side of a sender.
    pub fn new(settings: &SlackSettings, wake: Arc<Notify>, metrics: Arc<Metrics>) -> EngineOutbox {
        EngineOutbox {
            threads: notice::Threads::default(),
            wake,
            max: settings.max_outbox,
            notify_manual: settings.notify_manual,
            metrics,
            dropped_logged: 0,
        }
    }

    /// The record for a rules notification, or `None` when the outbox is full.
    pub fn notification(
        &mut self,
        n: &Notification,
        report: impl FnOnce() -> SliReport,
    ) -> Option<Record> {
        let notice = self.threads.notice(n, report);
        self.admit(notice)
    }

    /// The record for a person's service change, when the channel hears about those.
    pub fn transition(&mut self, t: &Transition) -> Option<Record> {
        let Cause::Operator { name, note } = &t.cause else {
            return None;
        };
        if !self.notify_manual {
            return None;
        }
        let out = match &t.change {
            ReasonChange::Set(Reason::Maintenance { .. }) => true,
            // A service-in clears one reason per transition: tell the last one.
            ReasonChange::Cleared(_)
                if t.reasons
                    .iter()
                    .all(|r| matches!(r, Reason::HeartbeatLost { .. })) =>
            {
                false
            }
            _ => return None,
        };
        let still_out_for = if t.to == ServiceState::OutOfService && !out {
            vec!["heartbeat_lost".to_owned()]
        } else {
            Vec::new()
        };
        self.admit(Notice::Manual {
            vehicle: t.vehicle.clone(),
            out,
            operator: name.clone(),
            note: note.clone(),
            still_out_for,
            at: t.at,
        })
    }

    /// Wakes the sender once the records are stored.
    pub fn waker(&self) -> impl FnOnce() + Send + 'static {
        let wake = self.wake.clone();
        move || wake.notify_one()
    }

    fn admit(&mut self, notice: Notice) -> Option<Record> {
        let s = &self.metrics.slack;
        // Incidents and SLO alerts get a reserve: a full outbox of faults must not hide a
        // mass heartbeat loss.
        let limit = match notice.grouping() {
            notice::Grouping::Alone => self.max + ALONE_RESERVE,
            notice::Grouping::Vehicles(_) => self.max,
        };
        if s.depth.load(Ordering::Relaxed) >= limit {
            let dropped = s.dropped_full.fetch_add(1, Ordering::Relaxed) + 1;
            // The first drop, then every thousandth: the notice itself is in the log.
            if self.dropped_logged == 0 || dropped >= self.dropped_logged + 1000 {
                self.dropped_logged = dropped;
                error!(
                    max_outbox = self.max,
                    dropped,
                    "Slack outbox full: new notifications are dropped (they are still logged); Slack has not accepted messages for a while — check fleet_slack_* metrics"
                );
            }
            return None;
        }
        s.depth.fetch_add(1, Ordering::Relaxed);
        let json = serde_json::to_string(&notice).unwrap_or_default();
        Some(Record::Slack(OutboxRecord::Notice {
            kind: notice.kind(),
            json,
            at: notice.at(),
        }))
    }
}
