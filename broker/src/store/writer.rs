//! The writer thread: takes the engine's batches in order, commits several at once when
//! they queue up (group commit), then forwards their announcements. A failed commit is
//! retried with backoff and nothing of it is announced until it is stored; meanwhile the
//! queue from the engine fills and, once full, holds the engine (see [`super::STORE_QUEUE`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

// tokio's Instant (the std one is banned workspace-wide): outside a runtime, and in the
// broker's build, it is the monotonic clock; only durations are measured with it here.
use tokio::time::Instant;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{Record, Store, StoreError};
use crate::metrics::{Kind, TextWriter};

/// Batches committed in one transaction at most.
const GROUP_BATCHES: usize = 256;
/// Records committed in one transaction at most (a checkpoint chunk may exceed it alone).
const GROUP_RECORDS: usize = 16_384;
/// First wait after a failed commit; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While failing, an ERROR line at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// After the engine stopped, a failing commit is given up after this long.
const GIVE_UP_AT_SHUTDOWN: Duration = Duration::from_secs(10);

/// Work that must wait until its batch is stored: a notification, a reply to an operator.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What the engine decided in one wake: records to store, then what to announce. The
/// messages `M` are the caller's (the engine's MQTT publishes): the writer only hands them
/// on, in order, once the records are stored.
pub struct StoreBatch<M> {
    /// Stored first, in one transaction.
    pub records: Vec<Record>,
    /// Handed to the writer's output after the records are stored, in order.
    pub outbound: Vec<M>,
    /// Run after the records are stored, after `outbound` is queued, in order.
    pub after: Vec<AfterCommit>,
}

impl<M> Default for StoreBatch<M> {
    fn default() -> Self {
        StoreBatch {
            records: Vec::new(),
            outbound: Vec::new(),
            after: Vec::new(),
        }
    }
}

impl<M> StoreBatch<M> {
    /// A batch that only stores, then runs `after`.
    pub fn records(records: Vec<Record>, after: AfterCommit) -> StoreBatch<M> {
        StoreBatch {
            records,
            outbound: Vec::new(),
            after: vec![after],
        }
    }

    /// Nothing to store or announce.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.outbound.is_empty() && self.after.is_empty()
    }
}

impl<M: std::fmt::Debug> std::fmt::Debug for StoreBatch<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBatch")
            .field("records", &self.records)
            .field("outbound", &self.outbound)
            .field("after", &self.after.len())
            .finish()
    }
}

/// The store's counters (for the logs, the tests and the metrics exporter).
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Records stored.
    pub records: AtomicU64,
    /// Failed commit attempts.
    pub write_errors: AtomicU64,
    /// 1 while the latest commit attempt failed (announcements are held), else 0.
    pub failing: AtomicU64,
    /// Announcements (messages, notifications, replies) held by a failing commit.
    pub held: AtomicU64,
    /// Batches given up at shutdown because they could not be stored (never announced).
    pub dropped_batches: AtomicU64,
    /// Batches refused because this engine no longer leads (never stored nor announced).
    pub fenced_batches: AtomicU64,
    /// Duration of the last commit, in microseconds.
    pub last_commit_us: AtomicU64,
}

impl StoreMetrics {
    /// Writes the store's families.
    pub fn render(&self, w: &mut TextWriter) {
        let st = self;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        w.single(
            "fleet_store_commits_total",
            Kind::Counter,
            "Store transactions committed.",
            load(&st.commits),
        );
        w.single(
            "fleet_store_records_total",
            Kind::Counter,
            "Records (transitions, commands, checkpoints) stored.",
            load(&st.records),
        );
        w.single(
            "fleet_store_write_errors_total",
            Kind::Counter,
            "Failed commit attempts.",
            load(&st.write_errors),
        );
        w.single(
            "fleet_store_failing",
            Kind::Gauge,
            "1 while the latest commit failed: announcements are held until the store can write.",
            load(&st.failing),
        );
        w.single(
            "fleet_store_held_announcements",
            Kind::Gauge,
            "Announcements (publishes, notifications, replies) held by a failing commit.",
            load(&st.held),
        );
        w.single(
            "fleet_store_dropped_batches_total",
            Kind::Counter,
            "Batches given up at shutdown because they could not be stored.",
            load(&st.dropped_batches),
        );
        w.single(
            "fleet_store_fenced_batches_total",
            Kind::Counter,
            "Batches refused because this engine no longer held the leader lease: neither stored nor announced.",
            load(&st.fenced_batches),
        );
        w.single(
            "fleet_store_last_commit_seconds",
            Kind::Gauge,
            "Duration of the last commit.",
            load(&st.last_commit_us) / 1e6,
        );
    }
}

/// The running writer thread.
#[derive(Debug)]
pub struct WriterHandle {
    thread: JoinHandle<()>,
}

impl WriterHandle {
    /// Waits until the writer has stored what it was given, flushed and closed the file.
    /// Returns once the engine's sender is gone and the queue is drained.
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("store writer thread panicked");
        }
    }
}

/// Starts the writer on its own thread. It ends when every sender of `batches` is gone and
/// the queue is drained; then it checkpoints the WAL into the database file.
pub fn spawn_writer<M: Send + 'static>(
    store: Store,
    batches: mpsc::Receiver<StoreBatch<M>>,
    out: mpsc::Sender<M>,
    metrics: Arc<StoreMetrics>,
) -> std::io::Result<WriterHandle> {
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(store, batches, out, &metrics))?;
    Ok(WriterHandle { thread })
}

fn run<M>(
    mut store: Store,
    mut batches: mpsc::Receiver<StoreBatch<M>>,
    out: mpsc::Sender<M>,
    metrics: &StoreMetrics,
) {
    let mut group: Vec<StoreBatch<M>> = Vec::new();
    while let Some(first) = batches.blocking_recv() {
        let mut records = first.records.len();
        group.push(first);
        while group.len() < GROUP_BATCHES && records < GROUP_RECORDS {
            match batches.try_recv() {
                Ok(b) => {
                    records += b.records.len();
                    group.push(b);
                }
                Err(_) => break,
            }
        }
        let outcome = if records == 0 {
            Committed::Stored
        } else {
            commit(&mut store, &group, &batches, metrics)
        };
        for batch in group.drain(..) {
            match outcome {
                Committed::Stored => {}
                Committed::GaveUp => {
                    metrics.dropped_batches.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Committed::Fenced => {
                    metrics.fenced_batches.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            for m in batch.outbound {
                if out.blocking_send(m).is_err() {
                    warn!("publisher gone: message not published");
                }
            }
            for after in batch.after {
                after();
            }
        }
    }
    match store.checkpoint() {
        Ok(()) => info!(store = %store.location(), "store flushed and closed"),
        Err(e) => warn!("store closed without a final WAL checkpoint (the WAL is replayed at the next start): {e}"),
    }
}

/// What became of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Stored,
    /// Not stored after [`GIVE_UP_AT_SHUTDOWN`] of a stopped engine.
    GaveUp,
    /// Refused: this engine no longer leads. Retrying cannot help, and announcing would
    /// speak for a term that is over.
    Fenced,
}

/// Stores the group's records, retrying until it works (or, once the engine has stopped,
/// until [`GIVE_UP_AT_SHUTDOWN`]).
fn commit<M>(
    store: &mut Store,
    group: &[StoreBatch<M>],
    batches: &mpsc::Receiver<StoreBatch<M>>,
    metrics: &StoreMetrics,
) -> Committed {
    let records: Vec<&Record> = group.iter().flat_map(|b| &b.records).collect();
    let held: usize = group.iter().map(|b| b.outbound.len() + b.after.len()).sum();
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    let mut last_error_log: Option<Instant> = None;
    let mut stopping_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        match store.apply(records.iter().copied()) {
            Ok(()) => {
                metrics
                    .last_commit_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                metrics.commits.fetch_add(1, Ordering::Relaxed);
                metrics
                    .records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                if failures > 0 {
                    metrics.failing.store(0, Ordering::Relaxed);
                    metrics.held.store(0, Ordering::Relaxed);
                    info!(
                        failures,
                        "store writable again: held announcements go out now"
                    );
                }
                return Committed::Stored;
            }
            Err(StoreError::Deposed { epoch }) => {
                metrics.failing.store(0, Ordering::Relaxed);
                metrics.held.store(0, Ordering::Relaxed);
                warn!(
                    epoch,
                    records = records.len(),
                    held,
                    "not the leader (any more): this batch is neither stored nor announced"
                );
                return Committed::Fenced;
            }
            Err(e) => {
                failures += 1;
                metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics.failing.store(1, Ordering::Relaxed);
                metrics.held.store(held as u64, Ordering::Relaxed);
                if last_error_log.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY) {
                    last_error_log = Some(Instant::now());
                    error!(
                        error = %e,
                        disk_full = e.is_disk_full(),
                        failures,
                        records = records.len(),
                        held,
                        "cannot write the store: retrying; nothing of this batch is announced until it is stored (free disk space or fix the file)"
                    );
                }
                if batches.is_closed() {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GIVE_UP_AT_SHUTDOWN {
                        error!(
                            records = records.len(),
                            held,
                            "shutting down with a store that cannot be written: these records are lost and were never announced"
                        );
                        return Committed::GaveUp;
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
