//! Durable state: one SQLite file in WAL mode, written by one writer thread in batched
//! transactions. The engine hands it [`StoreBatch`]es; the writer commits a batch's records
//! and only then forwards the batch's announcements (MQTT publishes, notifications, replies
//! to operators), so nothing is announced that is not stored. At startup [`Store::load`]
//! gives back what [`fleet_rules::Fleet::restore`] needs. [`lease`] holds the PostgreSQL
//! lease that elects the active engine of an active/standby pair.

pub mod lease;
mod load;
mod outbox;
mod reader;
mod records;
pub mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use load::{recover, Recovery, Restored};
pub use outbox::{ComposedRow, OutboxRecord, PendingMessage};
pub use reader::{StoreReader, StoredCommand, StoredTransition};
pub use records::{IncidentChange, OpenIncidents, Record};
pub use schema::{SchemaError, SCHEMA_VERSION};
pub use writer::{spawn_writer, StoreBatch, StoreMetrics, WriterHandle};

/// Capacity of the queue from the engine to the writer, in batches (a batch is what the
/// engine decided in one wake, usually a handful of records). Full: the engine waits, so
/// uplinks queue behind it and finally slow the vehicles down through TCP; nothing is
/// dropped and nothing unstored is announced.
pub const STORE_QUEUE: usize = 1024;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync the WAL at every commit: an announced transition survives a power loss.
    Full,
    /// fsync at checkpoints only: an announced transition survives the broker being killed
    /// (the OS has the write), not a power loss of the machine.
    Normal,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// Commit durability.
    pub synchronous: Synchronous,
}

/// Why the store cannot be used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created.
    #[error("cannot create the database directory {dir}: {source}; set [store] path to a writable location")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file (or its lock file) could not be opened for writing.
    #[error("cannot open the database {path} for writing: {reason}; check the path and its permissions, or set [store] path to a writable location")]
    NotWritable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds the database.
    #[error("the database {path} is in use by another running fleet-broker (its lock file {lock} is held); stop that broker or point [store] path elsewhere")]
    Locked {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Not a database, or damaged.
    #[error("the database {path} is corrupt or not a fleet-broker database ({reason}); restore it from a backup, or move it away to start with an empty fleet")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("the database {path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Why.
        source: SchemaError,
    },
    /// Any other SQLite failure.
    #[error("the database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// The open database, owned by one thread at a time (the writer, after loading).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Held for the process's lifetime: the OS releases it when the process dies, even on
    /// SIGKILL, so a crashed broker never leaves a stale lock.
    _lock: File,
    /// Test hook: a non-zero value is applied as `PRAGMA max_page_count` before the next
    /// transaction, to make writes fail the way a full disk does.
    pub(crate) page_limit: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Store {
    /// Opens (creating it and its directory if needed) and migrates the database, and
    /// takes the lock that keeps a second broker away from it.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        let path = opts.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let lock = lock_path(&path);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| StoreError::NotWritable {
                path: path.clone(),
                reason: format!("lock file {}: {e}", lock.display()),
            })?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path, lock }),
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::NotWritable {
                    path,
                    reason: format!("cannot lock {}: {e}", lock.display()),
                })
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        let mut store = Store {
            conn,
            path,
            _lock: lock_file,
            page_limit: Arc::new(AtomicU64::new(0)),
        };
        store.configure(opts.synchronous)?;
        store.check()?;
        schema::migrate_to(&mut store.conn, SCHEMA_VERSION).map_err(|source| match source {
            SchemaError::Step { source: e, .. } | SchemaError::Read(e) => classify(&store.path, e),
            source => StoreError::Schema {
                path: store.path.clone(),
                source,
            },
        })?;
        Ok(store)
    }

    fn configure(&mut self, synchronous: Synchronous) -> Result<(), StoreError> {
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        // The first statement reads the header: a file that is not a database fails here.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWritable {
                path: self.path.clone(),
                reason: format!("SQLite refused WAL mode (journal mode is {mode})"),
            });
        }
        self.conn
            .execute_batch(&format!(
                "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;"
            ))
            .map_err(|e| classify(&self.path, e))?;
        self.conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    }

    /// A structural check of the b-trees (no full index cross-check): fast enough for every
    /// start, and it turns a damaged file into a clear error instead of a failure later.
    fn check(&self) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store quick_check"
        );
        if verdict != "ok" {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: verdict,
            });
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records` in one transaction.
    pub fn apply<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.apply_limit().map_err(|e| classify(&path, e))?;
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        for r in records {
            records::write(&tx, r).map_err(|e| classify(&path, e))?;
        }
        tx.commit().map_err(|e| classify(&path, e))
    }

    fn apply_limit(&mut self) -> rusqlite::Result<()> {
        let limit = self.page_limit.load(std::sync::atomic::Ordering::Relaxed);
        if limit > 0 {
            self.conn.pragma_update(None, "max_page_count", limit)?;
        }
        Ok(())
    }

    /// Moves the WAL into the main file and truncates it (at a clean stop).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(|e| classify(&self.path, e))
    }
}

/// Maps SQLite's error to one that says what to do.
pub(crate) fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: e.to_string(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            StoreError::NotWritable {
                path,
                reason: e.to_string(),
            }
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked {
            lock: lock_path(&path),
            path,
        },
        _ => StoreError::Sqlite { path, source: e },
    }
}

impl StoreError {
    /// True for a full disk (or database size limit): worth retrying once space is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite { source, .. }
            if source.sqlite_error_code() == Some(ErrorCode::DiskFull))
    }
}
