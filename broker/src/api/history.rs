//! The audit log as the API reads it: the store's transition and command logs, through a
//! read-only connection used off the async threads (SQLite calls block). The connection is
//! opened on first use and reopened after an error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::store::{StoreReader, StoredCommand, StoredTransition};

/// Reads the store's history.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    reader: Arc<Mutex<Option<StoreReader>>>,
}

impl History {
    /// History from the database at `path`.
    pub fn new(path: PathBuf) -> History {
        History {
            path,
            reader: Arc::new(Mutex::new(None)),
        }
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        query: impl FnOnce(&StoreReader) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let path = self.path.clone();
        let reader = self.reader.clone();
        let run = move || {
            let mut guard = reader
                .lock()
                .map_err(|_| "the history reader was poisoned by a panic".to_owned())?;
            if guard.is_none() {
                *guard = Some(StoreReader::open(&path).map_err(|e| e.to_string())?);
            }
            let Some(r) = guard.as_ref() else {
                return Err("the history reader is not open".to_owned());
            };
            let result = query(r).map_err(|e| e.to_string());
            if result.is_err() {
                *guard = None;
            }
            result
        };
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| format!("the history query did not finish: {e}"))?
    }

    /// The latest `limit` transitions, newest first: of one vehicle, or of all.
    pub async fn transitions(
        &self,
        vehicle: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredTransition>, String> {
        self.with_reader(move |r| r.transitions(vehicle.as_deref(), limit))
            .await
    }

    /// The latest transition of each of `vehicles` (those that have one).
    pub async fn last_transitions(
        &self,
        vehicles: Vec<String>,
    ) -> Result<Vec<(String, StoredTransition)>, String> {
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

    /// The latest `limit` commands of a vehicle, newest first.
    pub async fn commands(
        &self,
        vehicle: String,
        limit: usize,
    ) -> Result<Vec<StoredCommand>, String> {
        self.with_reader(move |r| r.commands(&vehicle, limit)).await
    }
}
