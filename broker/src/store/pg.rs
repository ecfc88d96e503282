//! The store on PostgreSQL: the writer's connection (it takes the store lock and migrates
//! the schema) and the readers' ones, each reconnecting after the server went away. The
//! blocking client runs its own small runtime, so these are used where the SQLite
//! connections are: on the writer thread and in `spawn_blocking`.

use std::time::Duration;

use postgres::NoTls;

use std::sync::atomic::Ordering;

use super::sql::{args, DbError, Pg, Prepared, Sql};
use super::{lease, schema, Fence, StoreError, Synchronous};

/// Key of the session lock the writer holds: one broker writes a database at a time,
/// as the lock file does for SQLite. (Engines of an active/standby pair are fenced by the
/// lease's epoch instead.)
const STORE_LOCK: i64 = 0x666c_6565_7402;

/// How long the writer tries for the store lock before calling the database in use.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// A connection attempt waits this long when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The blocking client, closed on another thread when dropped where a runtime runs (the
/// client blocks on its own runtime to close, which tokio forbids inside another).
struct Client(Option<postgres::Client>);

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

/// A connection that comes back after the server went away.
struct Conn {
    client: Client,
    prepared: Prepared,
    url: String,
    at: String,
    /// The writer's: migrates, sets `synchronous_commit`, and takes the store lock unless
    /// it is fenced.
    writer: Option<Writing>,
}

impl Conn {
    fn new(url: &str, writer: Option<Writing>) -> Conn {
        Conn {
            client: Client(None),
            prepared: Prepared::default(),
            url: url.to_owned(),
            at: lease::describe(url),
            writer,
        }
    }

    /// The open connection, opening it first if there is none or it broke.
    fn open(&mut self) -> Result<(&mut postgres::Client, &mut Prepared), StoreError> {
        let client = match self.client.0.take() {
            Some(client) if !client.is_closed() => client,
            broken => {
                drop(Client(broken));
                self.prepared.clear();
                connect(&self.url, &self.at, self.writer.as_ref())?
            }
        };
        let client = self.client.0.insert(client);
        Ok((client, &mut self.prepared))
    }

    fn fail(&self, e: DbError) -> StoreError {
        match e {
            DbError::Postgres(source) => error(&self.at, source),
            other => StoreError::Unreadable {
                at: self.at.clone(),
                source: other,
            },
        }
    }

    fn read<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let (client, prepared) = self.open()?;
        let out = f(&mut Pg { client, prepared });
        out.map_err(|e| self.fail(e))
    }
}

fn error(at: &str, source: postgres::Error) -> StoreError {
    StoreError::Postgres {
        at: at.to_owned(),
        source,
    }
}

/// How the writer writes.
struct Writing {
    synchronous: Synchronous,
    fence: Option<Fence>,
}

/// Opens a connection; the writer's also migrates the schema and, unfenced, takes the
/// store lock.
fn connect(url: &str, at: &str, writer: Option<&Writing>) -> Result<postgres::Client, StoreError> {
    let mut config: postgres::Config = url.parse().map_err(|e| error(at, e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("fleet-broker");
    let mut client = config.connect(NoTls).map_err(|e| error(at, e))?;
    let Some(writing) = writer else {
        return Ok(client);
    };
    let commit = match writing.synchronous {
        Synchronous::Full => "on",
        Synchronous::Normal => "off",
    };
    client
        .batch_execute(&format!("SET synchronous_commit = {commit}"))
        .map_err(|e| error(at, e))?;
    // A broker that just stopped may still hold the lock for a moment (its session ends
    // after its connection closes): wait a little before calling the database in use.
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    while writing.fence.is_none() {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&STORE_LOCK])
            .and_then(|r| r.try_get(0))
            .map_err(|e| error(at, e))?;
        if locked {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::PostgresInUse { at: at.to_owned() });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let found = schema::migrate_postgres(&mut client).map_err(|source| StoreError::Schema {
        at: at.to_owned(),
        source,
    })?;
    if found < super::SCHEMA_VERSION {
        tracing::info!(
            at,
            from = found,
            to = super::SCHEMA_VERSION,
            "PostgreSQL store schema brought up to date"
        );
    }
    Ok(client)
}

/// The writer's connection.
pub(super) struct Writer(Conn);

impl Writer {
    /// Connects, migrates the schema and, unless fenced, takes the store lock.
    pub(super) fn open(
        url: &str,
        synchronous: Synchronous,
        fence: Option<Fence>,
    ) -> Result<Writer, StoreError> {
        let mut conn = Conn::new(url, Some(Writing { synchronous, fence }));
        conn.open()?;
        Ok(Writer(conn))
    }

    /// Runs `f` in one transaction, committed if it succeeds (reconnecting first if the
    /// connection broke); fenced, only while this engine leads (see [`Fence`]).
    pub(super) fn transaction(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<(), DbError>,
    ) -> Result<(), StoreError> {
        let fence = self.0.writer.as_ref().and_then(|w| w.fence.as_ref());
        let fenced = fence.map(|f| (f.node.clone(), f.epoch.load(Ordering::Acquire)));
        if let Some((_, 0)) = fenced {
            return Err(StoreError::Deposed { epoch: 0 });
        }
        let conn = &mut self.0;
        let (client, prepared) = conn.open()?;
        let result = (|| -> Result<bool, DbError> {
            let mut tx = client.transaction()?;
            let mut db = Pg {
                client: &mut tx,
                prepared,
            };
            if let Some((node, epoch)) = &fenced {
                let db: &mut dyn Sql = &mut db;
                if db
                    .row(lease::FENCE, args![node, epoch], |_| Ok(()))?
                    .is_none()
                {
                    return Ok(false);
                }
            }
            f(&mut db)?;
            tx.commit()?;
            Ok(true)
        })();
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Deposed {
                epoch: fenced.map_or(0, |(_, epoch)| epoch),
            }),
            Err(e) => Err(conn.fail(e)),
        }
    }

    /// Runs `f` on the connection (to read).
    pub(super) fn read<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        self.0.read(f)
    }
}

/// A reader's connection (no lock: readers never write).
pub(super) struct Reader(Conn);

impl Reader {
    /// Connects.
    pub(super) fn open(url: &str) -> Result<Reader, StoreError> {
        let mut conn = Conn::new(url, None);
        conn.open()?;
        Ok(Reader(conn))
    }

    /// Runs `f` on the connection.
    pub(super) fn read<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        self.0.read(f)
    }
}
