//! The audit log as the API reads it: the store's transition and command logs, through a
//! read-only connection used off the async threads (SQLite calls block). The connection is
//! opened on first use and reopened after an error.

use std::sync::{Arc, Mutex};

use crate::store::{Location, StoreError, StoreReader, StoredCommand, StoredTransition};

/// Why the history could not be read (the API still answers with the current state).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store refused the query.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A panic in an earlier query left the reader unusable.
    #[error("the history reader was poisoned by a panic")]
    Poisoned,
    /// The query's thread did not finish.
    #[error("the history query did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Reads the store's history.
#[derive(Debug, Clone)]
pub struct History {
    location: Location,
    reader: Arc<Mutex<Option<StoreReader>>>,
}

impl History {
    /// History from the database at `location`.
    pub fn new(location: Location) -> History {
        History {
            location,
            reader: Arc::new(Mutex::new(None)),
        }
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        query: impl FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let location = self.location.clone();
        let reader = self.reader.clone();
        let run = move || {
            let mut guard = reader.lock().map_err(|_| HistoryError::Poisoned)?;
            let r = match guard.take() {
                Some(r) => r,
                None => StoreReader::open(&location)?,
            };
            // A reader that failed is dropped and opened afresh next time.
            let result = query(&r)?;
            *guard = Some(r);
            Ok(result)
        };
        tokio::task::spawn_blocking(run).await?
    }

    /// The latest `limit` transitions, newest first: of one vehicle, or of all.
    pub async fn transitions(
        &self,
        vehicle: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredTransition>, HistoryError> {
        self.with_reader(move |r| r.transitions(vehicle.as_deref(), limit))
            .await
    }

    /// The latest transition of each of `vehicles` (those that have one).
    pub async fn last_transitions(
        &self,
        vehicles: Vec<String>,
    ) -> Result<Vec<(String, StoredTransition)>, HistoryError> {
        self.with_reader(move |r| {
            let mut out = Vec::with_capacity(vehicles.len());
            for v in vehicles {
                if let Some(t) = r.transitions(Some(&v), 1)?.into_iter().next() {
                    out.push((v, t));
                }
            }
            Ok(out)
        })
        .await
    }

    /// SLI minutes `(minute, good, valid, down_ms)` from `from_minute` on.
    pub async fn sli_minutes(
        &self,
        from_minute: u64,
    ) -> Result<Vec<(u64, u64, u64, u64)>, HistoryError> {
        self.with_reader(move |r| r.sli_minutes(from_minute)).await
    }

    /// Incidents of the window (see [`StoreReader::incidents`]).
    pub async fn incidents(
        &self,
        since: fleet_rules::UnixMs,
        limit: usize,
    ) -> Result<Vec<(String, fleet_rules::UnixMs, Option<fleet_rules::UnixMs>)>, HistoryError> {
        self.with_reader(move |r| r.incidents(since, limit)).await
    }

    /// The latest `limit` commands of a vehicle, newest first.
    pub async fn commands(
        &self,
        vehicle: String,
        limit: usize,
    ) -> Result<Vec<StoredCommand>, HistoryError> {
        self.with_reader(move |r| r.commands(&vehicle, limit)).await
    }
}
