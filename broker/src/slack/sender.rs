//! The one task that talks to Slack. It reads new notices from the outbox, composes
//! messages when their grouping window closes, stores each message (with its idempotency
//! key) before the first attempt, then posts them in order, at most one per
//! `min_interval`, waiting out `Retry-After` and backing off after errors. Every state
//! change goes through the store writer, so after a crash or a restart the pending
//! messages are sent again as they were and delivered ones are not.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fleet_rules::SliReport;
use fleet_rules::UnixMs;
use slack_morphism::prelude::SlackMessageContent;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::compose::Grouper;
use super::digest::{self, Digest};
use super::notice::Notice;
use super::policy::{Next, Outcome};
use super::{render, Poster, SlackMetrics, SlackSettings};
use crate::clock::Clock;
use crate::store::{
    ComposedRow, Location, OutboxRecord, Record, StoreBatch, StoreError, StoreReader,
};

/// Notices read from the outbox per pass.
const READ_BATCH: usize = 10_000;
/// Looks at the outbox at least this often even without a wake-up.
const POLL_MS: UnixMs = 5_000;
/// Longest wait for the sender at shutdown (a request in flight is bounded by
/// `request_timeout`, at most 2 minutes).
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(150);
/// Pruning of old delivered messages, at most this often.
const PRUNE_EVERY_MS: UnixMs = 3_600_000;
/// Delivered and given-up messages (and their notices) are kept this long, so a late
/// resolution still finds the thread it answers.
const KEEP_DONE_MS: UnixMs = 7 * 24 * 3_600_000;

/// A message in the send queue.
struct Queued {
    row: ComposedRow,
    content: SlackMessageContent,
    attempts: u32,
    next_at: UnixMs,
    /// An earlier attempt may have been delivered (it timed out, or a crash came before
    /// its outcome was stored): with a bot token the channel is searched first.
    uncertain: bool,
}

/// The running sender.
pub struct SenderHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SenderHandle {
    /// Stops after the request in flight (bounded by the request timeout) is recorded.
    /// A sender still stuck after [`STOP_LIMIT`] (a store that cannot write) is aborted, so
    /// the store writer can finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(STOP_LIMIT, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("Slack sender ended abnormally: {e}"),
            Err(_) => {
                warn!("Slack sender did not stop in time: aborted (the outbox keeps what waits)");
                self.task.abort();
            }
        }
    }
}

struct Sender<M> {
    settings: SlackSettings,
    poster: Poster,
    reader: Arc<Mutex<StoreReader>>,
    store: mpsc::Sender<StoreBatch<M>>,
    clock: Clock,
    metrics: Arc<SlackMetrics>,
    /// The engine's latest SLI report, for the digest.
    sli: watch::Receiver<Option<SliReport>>,
    grouper: Grouper,
    queue: VecDeque<Queued>,
    read_up_to: i64,
    /// No request before this (Retry-After, min_interval).
    hold_until: UnixMs,
    next_digest: Option<UnixMs>,
    last_prune: UnixMs,
    rng: u64,
}

/// Where the sender reads, writes and learns of new notices.
pub struct SenderLinks<M> {
    /// The store, read through the sender's own read-only connection.
    pub location: Location,
    /// The store writer: every change of the outbox goes through it.
    pub store: mpsc::Sender<StoreBatch<M>>,
    /// Notified by the engine after each stored notice.
    pub wake: Arc<Notify>,
    /// The engine's latest SLI report (for the digest).
    pub sli: watch::Receiver<Option<SliReport>>,
}

/// Why the sender could not start.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The HTTPS client could not be built.
    #[error("cannot set up TLS for Slack: {0}")]
    Tls(#[from] rustls::Error),
    /// The outbox could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking read did not finish.
    #[error("reading the Slack outbox failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Opens the outbox, counts what waits in it, and starts the sender.
pub async fn spawn<M: Send + 'static>(
    settings: SlackSettings,
    links: SenderLinks<M>,
    clock: Clock,
    metrics: Arc<SlackMetrics>,
) -> Result<SenderHandle, SenderError> {
    let SenderLinks {
        location,
        store,
        wake,
        sli,
    } = links;
    let poster = Poster::new(
        settings.target.clone(),
        &settings.api_url,
        settings.request_timeout,
        clock,
    )?;
    let (reader, depth) = tokio::task::spawn_blocking(move || {
        let reader = StoreReader::open(&location)?;
        let depth = reader.outbox_depth()?;
        Ok::<_, StoreError>((reader, depth))
    })
    .await??;
    metrics.configured.store(1, Ordering::Relaxed);
    metrics.depth.store(depth, Ordering::Relaxed);
    let now = clock.now();
    let sender = Sender {
        grouper: Grouper::new(settings.group_window.as_millis() as UnixMs),
        next_digest: settings
            .digest_at
            .map(|t| digest::next_digest_at(now, t, settings.style.utc_offset_min)),
        settings,
        poster,
        reader: Arc::new(Mutex::new(reader)),
        store,
        clock,
        metrics,
        sli,
        queue: VecDeque::new(),
        read_up_to: 0,
        hold_until: 0,
        last_prune: 0,
        rng: seed(),
    };
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(sender.run(wake, stopped));
    Ok(SenderHandle { stop, task })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) | 1
}

impl<M: Send + 'static> Sender<M> {
    async fn run(mut self, wake: Arc<Notify>, mut stop: oneshot::Receiver<()>) {
        self.check_credentials().await;
        self.load_pending().await;
        loop {
            let now = self.clock.now();
            self.pull().await;
            self.compose(now).await;
            self.digest_if_due(now).await;
            self.prune_if_due(now).await;
            let send_at = self.queue.front().map(|q| q.next_at.max(self.hold_until));
            if send_at.is_some_and(|t| t <= now) {
                self.attempt().await;
                continue;
            }
            let wake_at = [
                send_at,
                self.grouper.next_due(),
                self.next_digest,
                Some(now + POLL_MS),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + POLL_MS)
            .max(now + 1);
            tokio::select! {
                _ = &mut stop => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(self.clock.instant_at(wake_at)) => {}
            }
        }
        let left = self.metrics.depth.load(Ordering::Relaxed);
        info!(
            waiting = left,
            "Slack sender stopped; what waits stays in the outbox for the next start"
        );
    }

    async fn check_credentials(&self) {
        match self.poster.check().await {
            Ok(Some(who)) => info!(target = ?self.poster.target(), "Slack bot token accepted: {who}"),
            Ok(None) => info!(target = ?self.poster.target(), "Slack notifications by incoming webhook (checked at the first message)"),
            Err(Outcome::Rejected(code)) => {
                self.metrics.failing.store(1, Ordering::Relaxed);
                error!(
                    code = %code,
                    "Slack rejects the bot token ({code}): set a valid xoxb- token in [slack] bot_token or SLACK_BOT_TOKEN; notifications wait in the outbox and are retried every minute"
                );
            }
            Err(other) => warn!(
                "cannot check the Slack bot token now ({other:?}); notifications wait in the outbox until Slack answers"
            ),
        }
    }

    /// Runs a read on the blocking pool; a failed read is logged and treated as empty.
    async fn read<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let reader = self.reader.clone();
        let result = tokio::task::spawn_blocking(move || {
            let reader = reader
                .lock()
                .map_err(|_| "outbox reader poisoned".to_owned())?;
            f(&reader).map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                error!("cannot read the Slack outbox ({what}): {e}");
                None
            }
            Err(e) => {
                error!("Slack outbox read failed ({what}): {e}");
                None
            }
        }
    }

    /// Stores records through the writer; true once committed.
    async fn write(&self, records: Vec<Record>) -> bool {
        let (done, committed) = oneshot::channel();
        let batch = StoreBatch::records(
            records,
            Box::new(move || {
                let _ = done.send(());
            }),
        );
        if self.store.send(batch).await.is_err() {
            return false;
        }
        committed.await.is_ok()
    }

    async fn load_pending(&mut self) {
        let Some(pending) = self
            .read("pending messages", |r| r.pending_messages())
            .await
        else {
            return;
        };
        let now = self.clock.now();
        for p in pending {
            let content = serde_json::from_str(&p.row.content).unwrap_or_else(|_| {
                SlackMessageContent::new().with_text(format!("(unreadable message {})", p.row.key))
            });
            // Composed before the restart: the broker may have died with a post in flight.
            self.queue.push_back(Queued {
                row: p.row,
                content,
                attempts: p.attempts,
                next_at: now,
                uncertain: true,
            });
        }
        if !self.queue.is_empty() {
            info!(
                messages = self.queue.len(),
                "Slack messages from before the restart are sent now"
            );
        }
        self.metrics
            .messages_pending
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    async fn pull(&mut self) {
        let after = self.read_up_to;
        let Some(rows) = self
            .read("new notices", move |r| r.waiting_notices(after, READ_BATCH))
            .await
        else {
            return;
        };
        let mut unreadable = Vec::new();
        for (seq, json) in rows {
            self.read_up_to = self.read_up_to.max(seq);
            match serde_json::from_str::<Notice>(&json) {
                Ok(n) => self.grouper.add(seq, n),
                Err(e) => unreadable.push((seq, e.to_string())),
            }
        }
        for (seq, e) in unreadable {
            error!(seq, "unreadable Slack notice skipped: {e}");
            let key = format!("unreadable-{seq}");
            let at = self.clock.now();
            let records = vec![
                Record::Outbox(OutboxRecord::Composed(ComposedRow {
                    key: key.clone(),
                    content: "{}".to_owned(),
                    opens: None,
                    resolves: None,
                    notices: vec![seq],
                    created_at: at,
                })),
                Record::Outbox(OutboxRecord::GaveUp {
                    key,
                    error: e,
                    attempts: 0,
                    at,
                }),
            ];
            if self.write(records).await {
                self.metrics.gave_up.fetch_add(1, Ordering::Relaxed);
                self.metrics.depth.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    async fn compose(&mut self, now: UnixMs) {
        let drafts = self.grouper.take_ready(now, &self.settings.style);
        if drafts.is_empty() {
            return;
        }
        let mut queued = Vec::with_capacity(drafts.len());
        let mut records = Vec::with_capacity(drafts.len());
        for d in drafts {
            let row = ComposedRow {
                key: d.key,
                content: serde_json::to_string(&d.content).unwrap_or_default(),
                opens: d.opens,
                resolves: d.resolves,
                notices: d.notices,
                created_at: now,
            };
            records.push(Record::Outbox(OutboxRecord::Composed(row.clone())));
            queued.push(Queued {
                row,
                content: d.content,
                attempts: 0,
                next_at: now,
                uncertain: false,
            });
        }
        // Stored before the first attempt: a restart sends these same messages.
        if self.write(records).await {
            self.queue.extend(queued);
            self.metrics
                .messages_pending
                .store(self.queue.len() as u64, Ordering::Relaxed);
        } else {
            // The writer is gone (shutdown): the notices stay waiting in the outbox.
            for q in queued {
                warn!(key = %q.row.key, "Slack message not stored (shutting down): composed again at the next start");
            }
        }
    }

    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn attempt(&mut self) {
        let Some(head) = self.queue.front() else {
            return;
        };
        let key = head.row.key.clone();
        let (content, created_at, notices, uncertain) = (
            head.content.clone(),
            head.row.created_at,
            head.row.notices.len() as u64,
            head.uncertain,
        );
        let thread = match (&head.row.resolves, self.poster.threads()) {
            (Some(t), true) => {
                let t = t.clone();
                self.read("thread", move |r| r.opened_thread(&t))
                    .await
                    .flatten()
            }
            _ => None,
        };
        let attempts = self.queue.front().map_or(1, |q| q.attempts + 1);
        if uncertain && self.poster.threads() {
            let found = self.poster.find_posted(&key, created_at).await;
            let now = self.clock.now();
            self.hold_until = now + self.settings.min_interval.as_millis() as UnixMs;
            match found {
                Ok(Some(ts)) => {
                    info!(key = %key, ts = %ts, "Slack message found in the channel: it was delivered before; not posted again");
                    self.metrics.found_posted.fetch_add(1, Ordering::Relaxed);
                    self.delivered(key, Some(ts), attempts, notices, thread, now)
                        .await;
                    return;
                }
                Ok(None) => {}
                Err(Outcome::RateLimited(wait)) => {
                    self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.hold_until = self.hold_until.max(now + wait.as_millis() as UnixMs);
                    return;
                }
                Err(other) => warn!(
                    key = %key,
                    "cannot search the Slack channel for an earlier delivery ({}): posting again, a duplicate is possible (give the bot the channels:history scope)",
                    describe(&other)
                ),
            }
            if let Some(q) = self.queue.front_mut() {
                q.uncertain = false;
            }
        }
        let outcome = self
            .poster
            .post(&content, thread.as_ref().map(|(ts, _)| ts.as_str()), &key)
            .await;
        let now = self.clock.now();
        self.hold_until = now + self.settings.min_interval.as_millis() as UnixMs;
        let jitter = self.jitter();
        let next = self
            .settings
            .policy
            .next(&outcome, attempts, created_at, now, jitter);
        let metrics = self.metrics.clone();
        let s = &*metrics;
        match next {
            Next::Done => {
                let ts = match &outcome {
                    Outcome::Sent { ts } => ts.clone(),
                    _ => None,
                };
                self.delivered(key, ts, attempts, notices, thread, now)
                    .await;
            }
            Next::RetryAt(at) => {
                let error = describe(&outcome);
                s.retried.fetch_add(1, Ordering::Relaxed);
                s.failing.store(1, Ordering::Relaxed);
                if let Outcome::RateLimited(_) = outcome {
                    s.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.hold_until = self.hold_until.max(at);
                }
                match &outcome {
                    Outcome::Rejected(code) => error!(
                        key = %key, attempts, code = %code, target = ?self.poster.target(),
                        "Slack refuses our credentials or channel ({code}): fix [slack] (webhook_url, bot_token, channel); retried every minute"
                    ),
                    _ => {
                        warn!(key = %key, attempts, retry_in_ms = at.saturating_sub(now), "Slack message not delivered: {error}; retrying")
                    }
                }
                self.write(vec![Record::Outbox(OutboxRecord::Attempt {
                    key,
                    attempts,
                    error,
                })])
                .await;
                if let Some(q) = self.queue.front_mut() {
                    q.attempts = attempts;
                    q.next_at = at;
                    q.uncertain = matches!(outcome, Outcome::Unknown(_));
                }
            }
            Next::GiveUp(why) => {
                error!(
                    key = %key, attempts,
                    message = content.text.as_deref().unwrap_or(""),
                    "Slack message given up: {why}"
                );
                self.write(vec![Record::Outbox(OutboxRecord::GaveUp {
                    key,
                    error: why,
                    attempts,
                    at: now,
                })])
                .await;
                s.gave_up.fetch_add(1, Ordering::Relaxed);
                s.depth.fetch_sub(
                    notices.min(s.depth.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                self.queue.pop_front();
            }
        }
        self.metrics
            .messages_pending
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    /// Records the head message as delivered (with Slack's ts) and, for a resolution,
    /// marks the message it answers resolved.
    async fn delivered(
        &mut self,
        key: String,
        ts: Option<String>,
        attempts: u32,
        notices: u64,
        thread: Option<(String, String)>,
        now: UnixMs,
    ) {
        self.write(vec![Record::Outbox(OutboxRecord::Sent {
            key: key.clone(),
            ts,
            attempts,
            at: now,
        })])
        .await;
        let s = &self.metrics;
        s.sent.fetch_add(1, Ordering::Relaxed);
        s.last_success_ms.store(now, Ordering::Relaxed);
        s.depth.fetch_sub(
            notices.min(s.depth.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        if s.failing.swap(0, Ordering::Relaxed) == 1 {
            info!(key = %key, attempts, "Slack accepts messages again");
        }
        self.queue.pop_front();
        if let Some((ts, original)) = thread {
            self.mark_original_resolved(&ts, &original, now).await;
        }
    }

    /// Best effort: the resolution is in the thread either way.
    async fn mark_original_resolved(&mut self, ts: &str, original: &str, at: UnixMs) {
        let Ok(original) = serde_json::from_str::<SlackMessageContent>(original) else {
            return;
        };
        let updated = render::mark_resolved(&original, at, &self.settings.style);
        let outcome = self.poster.update(ts, &updated).await;
        let now = self.clock.now();
        self.hold_until = now + self.settings.min_interval.as_millis() as UnixMs;
        match outcome {
            Outcome::Sent { .. } => {}
            // The pause holds the whole channel, whichever request met it.
            Outcome::RateLimited(wait) => {
                self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.hold_until = self.hold_until.max(now + wait.as_millis() as UnixMs);
                warn!(
                    ts,
                    "could not mark the original Slack message resolved: rate limited"
                );
            }
            other => warn!(
                ts,
                "could not mark the original Slack message resolved: {}",
                describe(&other)
            ),
        }
    }

    async fn digest_if_due(&mut self, now: UnixMs) {
        let (Some(due), Some(at)) = (self.next_digest, self.settings.digest_at) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_digest = Some(digest::next_digest_at(
            now,
            at,
            self.settings.style.utc_offset_min,
        ));
        let Some(report) = self.sli.borrow().clone() else {
            return;
        };
        let Some(d) = self
            .read("digest", move |r| Digest::compute(r, &report, now))
            .await
        else {
            return;
        };
        let notice = Notice::Digest(d);
        let record = Record::Outbox(OutboxRecord::Notice {
            kind: notice.kind(),
            json: serde_json::to_string(&notice).unwrap_or_default(),
            at: now,
        });
        if self.write(vec![record]).await {
            self.metrics.depth.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn prune_if_due(&mut self, now: UnixMs) {
        if now < self.last_prune + PRUNE_EVERY_MS {
            return;
        }
        self.last_prune = now;
        self.write(vec![Record::Outbox(OutboxRecord::Prune {
            before: now.saturating_sub(KEEP_DONE_MS),
        })])
        .await;
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Sent { .. } => "sent".to_owned(),
        Outcome::RateLimited(d) => format!("rate limited (429), Retry-After {}s", d.as_secs()),
        Outcome::Failed(e) => e.clone(),
        Outcome::Unknown(e) => format!("{e} (delivery unknown)"),
        Outcome::Rejected(e) => format!("rejected: {e}"),
        Outcome::Invalid(e) => format!("invalid: {e}"),
    }
}
