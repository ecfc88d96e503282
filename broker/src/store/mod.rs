//! Durable state: one SQLite file in WAL mode (the default), or a PostgreSQL database for
//! active/standby engines, written by one writer thread in batched transactions. The
//! engine hands it [`StoreBatch`]es; the writer commits a batch's records and only then
//! forwards the batch's announcements (MQTT publishes, notifications, replies to
//! operators), so nothing is announced that is not stored. At startup [`Store::load`]
//! gives back what [`fleet_rules::Fleet::restore`] needs. Both databases run the same
//! statements through [`sql`]; [`lease`] holds the PostgreSQL lease that elects the active
//! engine of an active/standby pair.

pub mod lease;
mod load;
mod outbox;
mod pg;
mod reader;
mod records;
pub mod schema;
mod sql;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use load::{recover, Recovery, Restored, UNSURE_MS};
pub use outbox::{ComposedRow, OutboxRecord, PendingMessage};
pub use reader::{StoreReader, StoredCommand, StoredTransition};
pub use records::{IncidentChange, OpenIncidents, Record};
pub use schema::{SchemaError, SCHEMA_VERSION};
pub use sql::DbError;
pub use writer::{spawn_writer, StoreBatch, StoreMetrics, WriterHandle};

use sql::{Lite, Sql};

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

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file; its directory is created if missing.
    File(PathBuf),
    /// A PostgreSQL database, by connection URL (`postgres://user:pass@host:port/db`).
    Postgres(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => write!(f, "PostgreSQL at {}", lease::describe(url)),
        }
    }
}

/// Never shows a URL's password.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database.
    pub location: Location,
    /// Commit durability: for PostgreSQL, `synchronous_commit` on or off.
    pub synchronous: Synchronous,
    /// PostgreSQL only: write only as the leader of an active/standby pair (instead of
    /// holding the store lock).
    pub fence: Option<Fence>,
}

/// The leader lease a store's writes are fenced by: every transaction first checks, in
/// the same transaction, that `node` holds the lease (`fleet_leader`) with the epoch in
/// `epoch` and that it has not expired, and holds the row against a takeover until it
/// commits. Otherwise nothing is written and the batch is never announced.
#[derive(Debug, Clone)]
pub struct Fence {
    /// This engine's node name, as in the lease.
    pub node: String,
    /// The epoch this node leads with, kept current by whoever runs the lease; 0 while it
    /// does not lead (every write is then refused).
    pub epoch: Arc<AtomicU64>,
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
    #[error("the database {at}: {source}")]
    Schema {
        /// The file, or host, port and database.
        at: String,
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
    /// A PostgreSQL failure (no connection, a statement refused, ...).
    #[error("the database at {at}: {source}; check [store] url and that PostgreSQL is running and reachable")]
    Postgres {
        /// Host, port and database (never the password).
        at: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// PostgreSQL did not answer in time.
    #[error("the database at {at} did not answer within {after:?}; check the network to it and that it is not overloaded")]
    TimedOut {
        /// Host, port and database.
        at: String,
        /// How long it was given.
        after: std::time::Duration,
    },
    /// The PostgreSQL client's runtime could not be started.
    #[error("cannot start the PostgreSQL client: {0}")]
    Runtime(std::io::Error),
    /// The write was fenced off: this engine no longer leads with the epoch it wrote with.
    #[error("deposed: this engine does not hold the leader lease with epoch {epoch}; nothing was written or announced")]
    Deposed {
        /// The epoch the write carried (0: not leading at all).
        epoch: u64,
    },
    /// Another broker holds the PostgreSQL database.
    #[error("the database at {at} is in use by another running fleet-broker (it holds the store lock); stop that broker, give this one its own database, or run them as an active/standby pair ([ha])")]
    PostgresInUse {
        /// Host, port and database.
        at: String,
    },
    /// A stored value is not what its column should hold.
    #[error("the database {at} holds a value this broker cannot read ({source}); restore it from a backup")]
    Unreadable {
        /// The file, or host, port and database.
        at: String,
        /// What was wrong.
        source: DbError,
    },
}

/// The open database, owned by one thread at a time (the writer, after loading).
pub struct Store {
    db: Db,
    location: Location,
}

enum Db {
    Sqlite {
        conn: Connection,
        path: PathBuf,
        /// Held for the process's lifetime: the OS releases it when the process dies,
        /// even on SIGKILL, so a crashed broker never leaves a stale lock.
        _lock: File,
        /// Test hook: a non-zero value is applied as `PRAGMA max_page_count` before the
        /// next transaction, to make writes fail the way a full disk does.
        page_limit: Arc<AtomicU64>,
    },
    Postgres(Box<pg::Writer>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Store {
    /// Opens (creating it if needed) and migrates the database, and takes the lock that
    /// keeps a second broker away from it.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        match &opts.location {
            Location::File(path) => Store::open_file(path, opts.synchronous),
            Location::Postgres(url) => Ok(Store {
                db: Db::Postgres(Box::new(pg::Writer::open(
                    url,
                    opts.synchronous,
                    opts.fence.clone(),
                )?)),
                location: opts.location.clone(),
            }),
        }
    }

    fn open_file(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let path = path.to_owned();
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
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        configure(&conn, &path, synchronous)?;
        check(&conn, &path)?;
        schema::migrate_to(&mut conn, SCHEMA_VERSION).map_err(|source| match source {
            SchemaError::Step {
                source: DbError::Sqlite(e),
                ..
            }
            | SchemaError::Read(DbError::Sqlite(e)) => classify(&path, e),
            source => StoreError::Schema {
                at: path.display().to_string(),
                source,
            },
        })?;
        Ok(Store {
            db: Db::Sqlite {
                conn,
                path: path.clone(),
                _lock: lock_file,
                page_limit: Arc::new(AtomicU64::new(0)),
            },
            location: Location::File(path),
        })
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Writes `records` in one transaction.
    pub fn apply<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), StoreError> {
        match &mut self.db {
            Db::Sqlite {
                conn,
                path,
                page_limit,
                ..
            } => {
                let path = path.as_path();
                let limit = page_limit.load(std::sync::atomic::Ordering::Relaxed);
                if limit > 0 {
                    conn.pragma_update(None, "max_page_count", limit)
                        .map_err(|e| classify(path, e))?;
                }
                let tx = conn.transaction().map_err(|e| classify(path, e))?;
                for r in records {
                    records::write(&mut Lite(&tx), r).map_err(|e| db_error(&self.location, e))?;
                }
                tx.commit().map_err(|e| classify(path, e))
            }
            Db::Postgres(w) => w.transaction(|tx| {
                for r in records {
                    records::write(tx, r)?;
                }
                Ok(())
            }),
        }
    }

    /// Runs `f` on the connection (to read).
    fn read<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        match &mut self.db {
            Db::Sqlite { conn, .. } => f(&mut Lite(conn)).map_err(|e| db_error(&self.location, e)),
            Db::Postgres(w) => w.read(f),
        }
    }

    /// Moves the WAL into the main file and truncates it (at a clean stop). Nothing to do
    /// on PostgreSQL.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite { conn, .. } => conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .map_err(|e| db_error(&self.location, e.into())),
            Db::Postgres(_) => Ok(()),
        }
    }
}

fn configure(conn: &Connection, path: &Path, synchronous: Synchronous) -> Result<(), StoreError> {
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    // The first statement reads the header: a file that is not a database fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWritable {
            path: path.to_owned(),
            reason: format!("SQLite refused WAL mode (journal mode is {mode})"),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;"
    ))
    .map_err(|e| classify(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// A structural check of the b-trees (no full index cross-check): fast enough for every
/// start, and it turns a damaged file into a clear error instead of a failure later.
fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let started = tokio::time::Instant::now();
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store quick_check"
    );
    if verdict != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            reason: verdict,
        });
    }
    Ok(())
}

/// Maps a statement's failure to one that says what to do.
pub(crate) fn db_error(location: &Location, e: DbError) -> StoreError {
    match (e, location) {
        (DbError::Sqlite(e), Location::File(path)) => classify(path, e),
        (DbError::Postgres(source), Location::Postgres(url)) => StoreError::Postgres {
            at: lease::describe(url),
            source,
        },
        (e, location) => StoreError::Unreadable {
            at: location.to_string(),
            source: e,
        },
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
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(ErrorCode::DiskFull)
            }
            StoreError::Postgres { source, .. } => {
                source.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
            }
            _ => false,
        }
    }
}
