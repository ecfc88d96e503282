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
pub use policy::{Outcome, RetryPolicy};
pub use render::{Language, Style};
pub use sender::{spawn, SenderError, SenderHandle, SenderLinks};

use crate::metrics::{Kind, TextWriter};
use crate::store::{OutboxRecord, Record};

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
    /// Messages whose delivery was unknown and that were found in the channel (not posted
    /// again).
    pub found_posted: AtomicU64,
}

impl SlackMetrics {
    /// Writes the notifier's families.
    pub fn render(&self, w: &mut TextWriter) {
        let sl = self;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        w.single(
            "fleet_slack_configured",
            Kind::Gauge,
            "1 when notifications go to Slack (else to the log only).",
            load(&sl.configured),
        );
        w.single(
            "fleet_slack_outbox_depth",
            Kind::Gauge,
            "Notifications in the outbox waiting for delivery.",
            load(&sl.depth),
        );
        w.single(
            "fleet_slack_messages_pending",
            Kind::Gauge,
            "Messages composed and not yet accepted by Slack.",
            load(&sl.messages_pending),
        );
        w.single(
            "fleet_slack_sent_total",
            Kind::Counter,
            "Messages Slack accepted.",
            load(&sl.sent),
        );
        w.single(
            "fleet_slack_retried_total",
            Kind::Counter,
            "Failed attempts that are retried (429, 5xx, timeouts, refused credentials).",
            load(&sl.retried),
        );
        w.single(
            "fleet_slack_rate_limited_total",
            Kind::Counter,
            "Attempts answered with 429 (Retry-After obeyed).",
            load(&sl.rate_limited),
        );
        w.by_label(
            "fleet_slack_dropped_total",
            Kind::Counter,
            "Notifications dropped because the outbox was full, and messages given up.",
            "reason",
            [
                ("outbox_full", load(&sl.dropped_full)),
                ("gave_up", load(&sl.gave_up)),
            ],
        );
        w.single(
            "fleet_slack_last_success_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last message Slack accepted (0: none since start).",
            load(&sl.last_success_ms) / 1e3,
        );
        w.single(
            "fleet_slack_found_posted_total",
            Kind::Counter,
            "Messages whose delivery was unknown (timeout, crash) found already in the channel and not posted again (bot token).",
            load(&sl.found_posted),
        );
        w.single(
            "fleet_slack_failing",
            Kind::Gauge,
            "1 while the latest attempt failed.",
            load(&sl.failing),
        );
    }
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
    /// Post the SLO burn-rate alerts.
    pub notify_alerts: bool,
    /// Outbox bound (notifications).
    pub max_outbox: u64,
    /// Daily digest time of day, local.
    pub digest_at: Option<(u32, u32)>,
}

impl SlackSettings {
    /// The language.
    pub fn language(&self) -> Language {
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
    notify_alerts: bool,
    metrics: Arc<SlackMetrics>,
    dropped_logged: u64,
}

impl EngineOutbox {
    /// The engine side of a sender; `open` is what was open at the last stop (their ends
    /// are threaded under their starts).
    pub fn new(
        settings: &SlackSettings,
        wake: Arc<Notify>,
        metrics: Arc<SlackMetrics>,
        open: &crate::store::OpenIncidents,
    ) -> EngineOutbox {
        EngineOutbox {
            threads: notice::Threads::reopened(open),
            wake,
            max: settings.max_outbox,
            notify_manual: settings.notify_manual,
            notify_alerts: settings.notify_alerts,
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
        if !self.notify_alerts && matches!(n, Notification::SloAlert { .. }) {
            return None;
        }
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
        let s = &self.metrics;
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
        Some(Record::Outbox(OutboxRecord::Notice {
            kind: notice.kind(),
            json,
            at: notice.at(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_rules::{AlertSeverity, AlertState, BurnRates};

    fn outbox(extra: &str) -> EngineOutbox {
        let text = format!("[slack]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n{extra}");
        let settings = crate::config::Config::parse(&text)
            .expect("parses")
            .settings()
            .expect("valid")
            .slack
            .expect("slack configured");
        EngineOutbox::new(
            &settings,
            Arc::new(Notify::new()),
            Arc::new(SlackMetrics::default()),
            &crate::store::OpenIncidents::default(),
        )
    }

    fn report() -> SliReport {
        SliReport {
            at: 0,
            in_service: 0,
            fleet: 1,
            fraction: 0.0,
            window_sli: 0.0,
            target: 0.995,
            window_ms: 1,
            error_budget_remaining: 0.0,
            burn: BurnRates::default(),
            alerts_firing: vec![AlertSeverity::Page],
            downtime_ms: 0,
            covered_ms: 0,
        }
    }

    #[test]
    fn burn_rate_alerts_are_posted_unless_turned_off() {
        let alert = Notification::SloAlert {
            severity: AlertSeverity::Page,
            state: AlertState::Firing,
            burn: BurnRates::default(),
            at: 1,
        };
        assert!(outbox("").notification(&alert, report).is_some());
        assert!(outbox("notify_alerts = false")
            .notification(&alert, report)
            .is_none());
        let fault = Notification::HardwareFault {
            vehicle: "v1".into(),
            code: "BRAKE".into(),
            reports: 1,
            window_ms: 60_000,
            model: None,
            battery: None,
            at: 1,
        };
        assert!(outbox("notify_alerts = false")
            .notification(&fault, report)
            .is_some());
    }
}
