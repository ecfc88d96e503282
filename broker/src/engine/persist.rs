//! The engine's side of persistence: every batch of effects goes to the store writer as
//! one [`crate::store::StoreBatch`] (records, then the messages and replies that may go out once they are
//! stored), plus what is never announced but must survive a restart: last-seen times,
//! models and error counters (checkpointed in chunks, never per heartbeat) and the SLI
//! history (saved at most once a second, with the batches). After a restart the retained
//! service state is published again, in chunks, from the restored fleet.

use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{Fleet, ScanCursor, UnixMs};
use tokio::sync::Notify;

use super::{payloads, Engine, Outbound};
use crate::store::Record;

/// Vehicles looked at per chunk of a checkpoint or of the retained-state republish, so a
/// million-vehicle fleet never stalls the engine for long. One chunk is with the store
/// writer at a time (see [`ChunkInFlight`]), so this also bounds the views held in memory.
pub(super) const SCAN_CHUNK: usize = 2048;
/// Messages in one batch before it is handed to the writer (bounds a batch's memory in a
/// burst such as a mass loss).
pub(super) const MAX_BATCH_MESSAGES: usize = 4096;
/// The SLI history is saved with a batch at most this often (ms): a crash loses at most
/// this much up-time, which the restart then counts as downtime.
const SLI_SAVE_EVERY: UnixMs = 1000;
/// At shutdown, how long one checkpoint chunk may take to be stored before the rest is
/// queued without waiting for it.
const STOP_CHUNK_WAIT: Duration = Duration::from_secs(2);
/// Old command log entries are deleted this often (ms).
const PRUNE_EVERY: UnixMs = 3600 * 1000;
const MINUTE: u64 = 60_000;

/// Persistence settings of the engine.
#[derive(Debug, Clone)]
pub struct PersistOptions {
    /// How often last-seen times are checkpointed.
    pub checkpoint_interval: Duration,
    /// SLI minutes kept (the longer of the SLO window and the 3-day burn window).
    pub sli_history: Duration,
    /// Command log entries kept.
    pub command_log_retention: Duration,
}

impl Default for PersistOptions {
    fn default() -> Self {
        PersistOptions {
            checkpoint_interval: Duration::from_secs(30),
            sli_history: Duration::from_secs(30 * 24 * 3600),
            command_log_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Where the periodic work stands.
pub(super) struct Persist {
    opts: PersistOptions,
    /// The next checkpoint round starts here.
    next_checkpoint: UnixMs,
    /// The round in progress: its cursor, and the time from which vehicles count as seen.
    round: Option<(ScanCursor, UnixMs)>,
    /// Vehicles seen at or after this are written by the next round.
    seen_since: UnixMs,
    sli_from_minute: u64,
    sli_saved_at: Option<UnixMs>,
    next_prune: UnixMs,
    /// The retained-state republish after a restart, while it runs.
    reseed: Option<Reseed>,
    /// A chunk's batch is with the store writer; the next chunk waits for it.
    chunk_in_flight: bool,
    /// Notified when the chunk in flight is done with (stored or given up).
    chunk_done: Arc<Notify>,
}

/// Rides in the batch of a checkpoint or republish chunk and wakes the engine when the
/// writer drops that batch, whether it was stored or given up. Without it the chunks of a
/// round would queue behind a slow commit until the whole fleet's views sat in memory.
struct ChunkInFlight(Arc<Notify>);

impl Drop for ChunkInFlight {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Where the republish stands, and the stored change time of each vehicle, sorted by id.
type Reseed = (ScanCursor, Vec<(Box<str>, UnixMs)>);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Persist {
    pub(super) fn new(opts: PersistOptions, now: UnixMs) -> Persist {
        Persist {
            next_checkpoint: now + ms(opts.checkpoint_interval),
            round: None,
            seen_since: now,
            sli_from_minute: Fleet::minute_of(now),
            sli_saved_at: None,
            next_prune: now,
            reseed: None,
            chunk_in_flight: false,
            chunk_done: Arc::new(Notify::new()),
            opts,
        }
    }

    /// When the engine must wake for persistence: at once while a chunked scan has more to
    /// do, never while its last chunk is with the writer (the engine waits on
    /// [`Persist::chunk_done`] instead), else at the next checkpoint.
    pub(super) fn wake_at(&self, now: UnixMs) -> Option<UnixMs> {
        if self.chunk_in_flight {
            None
        } else if self.round.is_some() || self.reseed.is_some() {
            Some(now)
        } else {
            Some(self.next_checkpoint)
        }
    }

    pub(super) fn chunk_in_flight(&self) -> bool {
        self.chunk_in_flight
    }

    pub(super) fn chunk_done(&self) -> Arc<Notify> {
        Arc::clone(&self.chunk_done)
    }

    /// The writer is done with the chunk in flight: the next one may be scanned.
    pub(super) fn chunk_landed(&mut self) {
        self.chunk_in_flight = false;
    }
}

impl Engine {
    /// After a restart: publish every restored vehicle's retained service state again
    /// (the MQTT front keeps retained messages in memory only). `changed_at` gives the
    /// stored time of each vehicle's last change; the state itself is read from the fleet
    /// when its chunk goes out, so it is never older than a transition already announced.
    pub fn republish_retained_state(&mut self, mut changed_at: Vec<(Box<str>, UnixMs)>) {
        changed_at.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.persist.reseed = Some((ScanCursor::default(), changed_at));
    }

    /// After a crash (or a takeover from a leader that died): the last announcements
    /// stored, which may not all have been published, are published again first.
    pub fn replay_events(&mut self, events: Vec<String>) {
        if events.is_empty() {
            return;
        }
        tracing::info!(
            events = events.len(),
            "the broker did not stop cleanly: publishing the last fleet/events again (consumers drop the copies they already have)"
        );
        let topic = self.opts.topics.events().to_owned();
        for payload in events {
            self.batch.outbound.push(Outbound {
                topic: topic.clone(),
                payload: payload.into_bytes(),
                qos1: true,
                retain: false,
            });
        }
    }

    /// After a restart: the SLI history was stored up to `saved_to`; the minutes from
    /// there on (the downtime just accounted, then the new up-time) are saved with the next
    /// batch, so the downtime stays in the history across further restarts.
    pub fn resume_sli_history(&mut self, saved_to: UnixMs) {
        let minute = Fleet::minute_of(saved_to).min(self.persist.sli_from_minute);
        self.persist.sli_from_minute = minute;
        self.persist.sli_saved_at = None;
    }

    /// Adds a record to the batch being assembled.
    pub(super) fn record(&mut self, record: Record) {
        self.batch.records.push(record);
    }

    /// The periodic persistence work due at `now`, added to the current batch.
    pub(super) fn persist_step(&mut self, now: UnixMs) {
        if !self.persist.chunk_in_flight {
            self.scan_chunk(now);
        }
        let sli_due = self
            .persist
            .sli_saved_at
            .is_none_or(|at| now >= at + SLI_SAVE_EVERY);
        if sli_due && !self.batch.is_empty() {
            self.save_sli(now);
        }
        if now >= self.persist.next_prune {
            self.persist.next_prune = now + PRUNE_EVERY;
            let retention = ms(self.persist.opts.command_log_retention);
            self.record(Record::PruneCommands {
                before: now.saturating_sub(retention),
            });
        }
    }

    /// The next chunk of the republish and of the checkpoint round (starting one when due);
    /// if they added anything to the batch, the next chunk waits until it is stored.
    fn scan_chunk(&mut self, now: UnixMs) {
        let before = (self.batch.records.len(), self.batch.outbound.len());
        self.reseed_chunk();
        if self.persist.round.is_none() && now >= self.persist.next_checkpoint {
            self.persist.round = Some((ScanCursor::default(), self.persist.seen_since));
            self.persist.seen_since = now;
        }
        if let Some((cursor, since)) = self.persist.round {
            let (views, next) = self.fleet.scan(cursor, SCAN_CHUNK, since);
            if !views.is_empty() {
                self.record(Record::Seen(views));
            }
            self.persist.round = next.map(|c| (c, since));
            if next.is_none() {
                self.persist.next_checkpoint = now + ms(self.persist.opts.checkpoint_interval);
                self.save_sli(now);
            }
        }
        if (self.batch.records.len(), self.batch.outbound.len()) != before {
            self.mark_chunk();
        }
    }

    /// The batch being assembled carries a chunk: the next one waits until it is stored.
    fn mark_chunk(&mut self) {
        let chunk = ChunkInFlight(self.persist.chunk_done());
        self.batch.after.push(Box::new(move || drop(chunk)));
        self.persist.chunk_in_flight = true;
    }

    /// Waits until the writer is done with the chunk in flight, if there is one, for at
    /// most `limit`. False if it is still in flight.
    async fn chunk_landed_within(&mut self, limit: Duration) -> bool {
        if !self.persist.chunk_in_flight {
            return true;
        }
        let landed = tokio::time::timeout(limit, self.persist.chunk_done.notified())
            .await
            .is_ok();
        if landed {
            self.persist.chunk_landed();
        }
        landed
    }

    fn save_sli(&mut self, now: UnixMs) {
        let minutes = self.fleet.sli_minutes(self.persist.sli_from_minute, now);
        let journeys = self
            .fleet
            .journey_minutes(self.persist.sli_from_minute, now);
        let keep = ms(self.persist.opts.sli_history) / MINUTE + 1;
        self.persist.sli_from_minute = Fleet::minute_of(now);
        self.persist.sli_saved_at = Some(now);
        let keep_from = Fleet::minute_of(now).saturating_sub(keep);
        self.record(Record::Sli {
            minutes,
            saved_to: now,
            keep_from,
        });
        if !journeys.is_empty() {
            self.record(Record::JourneySli {
                minutes: journeys,
                keep_from,
            });
        }
    }

    fn reseed_chunk(&mut self) {
        let Some((cursor, changed_at)) = self.persist.reseed.take() else {
            return;
        };
        let (views, next) = self.fleet.scan(cursor, SCAN_CHUNK, 0);
        for v in views {
            let at = changed_at
                .binary_search_by(|(id, _)| (**id).cmp(v.id.as_str()))
                .map_or(v.last_seen, |i| changed_at[i].1);
            self.batch.outbound.push(Outbound {
                topic: self.opts.topics.service(&v.id),
                payload: payloads::service(v.state, &v.reasons, at, self.opts.epoch),
                qos1: true,
                retain: true,
            });
        }
        self.persist.reseed = next.map(|c| (c, changed_at));
    }

    /// At shutdown: a full checkpoint, the SLI history, and the clean-stop mark, stored
    /// chunk by chunk like a round (so stopping a large fleet holds one chunk of views,
    /// not all of them). A chunk the writer has not stored within [`STOP_CHUNK_WAIT`]
    /// means the store is failing: the rest is queued without waiting, so the stop stays
    /// bounded (the writer gives a failing store up once the engine is gone).
    pub(super) async fn persist_final(&mut self, now: UnixMs) {
        let since = self
            .persist
            .round
            .take()
            .map_or(self.persist.seen_since, |(_, since)| since);
        let mut wait = true;
        let mut cursor = Some(ScanCursor::default());
        while let Some(c) = cursor {
            wait = wait && self.chunk_landed_within(STOP_CHUNK_WAIT).await;
            let (views, next) = self.fleet.scan(c, SCAN_CHUNK, since);
            if !views.is_empty() {
                self.record(Record::Seen(views));
                self.mark_chunk();
                self.commit_batch().await;
            }
            cursor = next;
        }
        self.save_sli(now);
        self.record(Record::Stopped { at: now });
        self.commit_batch().await;
    }

    /// Hands the batch assembled so far to the store writer. Waits while its queue is full
    /// (the chosen backpressure: nothing is dropped, nothing unstored is announced).
    pub(super) async fn commit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if self.store.send(batch).await.is_err() {
            crate::metrics::inc(&self.metrics.publish_errors);
            tracing::error!("store writer gone: a batch was neither stored nor announced");
        }
    }

    /// Hands the batch over early when it is large.
    pub(super) async fn commit_if_large(&mut self) {
        if self.batch.outbound.len() >= MAX_BATCH_MESSAGES {
            self.commit_batch().await;
        }
    }
}
