//! The store on PostgreSQL: the writer's connection (it migrates the schema and takes the
//! store lock, or is fenced by the leader lease) and the readers' ones, each reconnecting
//! after the server went away. Each connection is a tokio-postgres client on a small
//! runtime of its own, driven only while a call blocks on it, so these are used where the
//! SQLite connections are: on the writer thread and in `spawn_blocking`.
//!
//! Reads are one round trip per statement. A write transaction is not: its statements are
//! queued while the records are turned into SQL, then sent pipelined (tokio-postgres sends
//! requests polled together without waiting for each answer), [`PIPELINE`] at a time, so a
//! batch costs a few round trips instead of one per statement.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::sql::{DbError, Row, Sql, Val};
use super::{lease, schema, Fence, StoreError, Synchronous};

/// Key of the session lock the writer holds: one broker writes a database at a time,
/// as the lock file does for SQLite. (Engines of an active/standby pair are fenced by the
/// lease's epoch instead.)
const STORE_LOCK: i64 = 0x666c_6565_7402;

/// How long the writer tries for the store lock before calling the database in use.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// A connection attempt waits this long when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one call (a read, a whole write transaction, opening a connection):
/// past it the connection is dropped and the call fails, so a cut network cannot hold the
/// writer (and a leader's step-down behind it) for TCP's minutes.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Statements of a write transaction sent before waiting for their answers.
const PIPELINE: usize = 1024;

/// A client and the runtime that drives its connection.
struct Session {
    runtime: Runtime,
    client: Client,
}

/// The session, dropped on a thread of its own where a runtime runs (tokio forbids
/// dropping a runtime inside another).
struct Slot(Option<Session>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn(move || drop(session));
            }
        }
    }
}

/// Statements prepared on one connection, by their SQLite-style text.
type Prepared = HashMap<&'static str, Statement>;

/// How the writer writes.
struct Writing {
    synchronous: Synchronous,
    fence: Option<Fence>,
}

/// A connection that comes back after the server went away.
struct Conn {
    slot: Slot,
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
            slot: Slot(None),
            prepared: Prepared::new(),
            url: url.to_owned(),
            at: lease::describe(url),
            writer,
        }
    }

    /// The open session, opening it first if there is none or it broke.
    fn open(&mut self) -> Result<(&mut Session, &mut Prepared), StoreError> {
        let session = match self.slot.0.take() {
            Some(session) if !session.client.is_closed() => session,
            broken => {
                drop(Slot(broken));
                self.prepared.clear();
                connect(&self.url, &self.at, self.writer.as_ref())?
            }
        };
        Ok((self.slot.0.insert(session), &mut self.prepared))
    }

    /// The call failed: the error to report. The session is dropped (the next call opens
    /// a new one): after a failure it may be half dead, and errors are rare.
    fn fail(&mut self, e: DbError) -> StoreError {
        self.slot = Slot(None);
        self.prepared.clear();
        match e {
            DbError::Postgres(source) => error(&self.at, source),
            DbError::TimedOut(after) => StoreError::TimedOut {
                at: self.at.clone(),
                after,
            },
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
        let (session, prepared) = self.open()?;
        let out = f(&mut Direct { session, prepared });
        out.map_err(|e| self.fail(e))
    }
}

fn error(at: &str, source: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres {
        at: at.to_owned(),
        source,
    }
}

/// `?1` → `$1`: the statements have no `?` but their placeholders.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Runs `call` on the session's runtime, for at most [`CALL_TIMEOUT`].
fn bounded<T>(
    runtime: &Runtime,
    call: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    runtime.block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| DbError::TimedOut(CALL_TIMEOUT))?
    })
}

async fn statement(
    client: &Client,
    prepared: &mut Prepared,
    sql: &'static str,
) -> Result<Statement, DbError> {
    if let Some(s) = prepared.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(&dollars(sql)).await?;
    prepared.insert(sql, s.clone());
    Ok(s)
}

fn refs<'a>(params: &'a [Val<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Opens a connection; the writer's also migrates the schema and, unfenced, takes the
/// store lock.
fn connect(url: &str, at: &str, writer: Option<&Writing>) -> Result<Session, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StoreError::Runtime)?;
    // The timeout is made inside the runtime: its timer is that runtime's.
    let opened = runtime.block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, open_session(url, at, writer)).await
    });
    let client = opened.map_err(|_| StoreError::TimedOut {
        at: at.to_owned(),
        after: CALL_TIMEOUT,
    })??;
    Ok(Session { runtime, client })
}

async fn open_session(url: &str, at: &str, writer: Option<&Writing>) -> Result<Client, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| error(at, e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("fleet-broker");
    let (mut client, connection) = config.connect(NoTls).await.map_err(|e| error(at, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL store connection ended");
        }
    });
    if let Some(writing) = writer {
        prepare_writer(&mut client, at, writing).await?;
    }
    Ok(client)
}

async fn prepare_writer(
    client: &mut Client,
    at: &str,
    writing: &Writing,
) -> Result<(), StoreError> {
    let commit = match writing.synchronous {
        Synchronous::Full => "on",
        Synchronous::Normal => "off",
    };
    client
        .batch_execute(&format!("SET synchronous_commit = {commit}"))
        .await
        .map_err(|e| error(at, e))?;
    // A broker that just stopped may still hold the lock for a moment (its session ends
    // after its connection closes): wait a little before calling the database in use.
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    while writing.fence.is_none() {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&STORE_LOCK])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| error(at, e))?;
        if locked {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::PostgresInUse { at: at.to_owned() });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = schema::migrate_postgres(client)
        .await
        .map_err(|source| StoreError::Schema {
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
    Ok(())
}

/// Statements run one by one, each waited for (reads).
struct Direct<'a> {
    session: &'a mut Session,
    prepared: &'a mut Prepared,
}

impl Sql for Direct<'_> {
    fn exec(&mut self, sql: &'static str, params: &[Val<'_>]) -> Result<u64, DbError> {
        let Session { runtime, client } = &mut *self.session;
        bounded(runtime, async {
            let stmt = statement(client, self.prepared, sql).await?;
            Ok(client.execute(&stmt, &refs(params)).await?)
        })
    }

    fn each(
        &mut self,
        sql: &'static str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        let Session { runtime, client } = &mut *self.session;
        bounded(runtime, async {
            let stmt = statement(client, self.prepared, sql).await?;
            let rows = client.query_raw(&stmt, params.iter()).await?;
            futures_util::pin_mut!(rows);
            while let Some(r) = rows.try_next().await? {
                if !f(&Row::from_postgres(&r)?)? {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// A write transaction's statements, queued to be sent together.
#[derive(Default)]
struct Queue(Vec<(&'static str, Vec<Val<'static>>)>);

impl Sql for Queue {
    fn exec(&mut self, sql: &'static str, params: &[Val<'_>]) -> Result<u64, DbError> {
        let owned = params.iter().cloned().map(Val::into_owned).collect();
        self.0.push((sql, owned));
        Ok(0)
    }

    fn each(
        &mut self,
        _sql: &'static str,
        _params: &[Val<'_>],
        _f: &mut dyn FnMut(&Row) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        Err(DbError::ReadInPipeline)
    }
}

/// Runs `queue` in one transaction: false (nothing written) when `fence` refuses it.
async fn pipelined(
    client: &mut Client,
    prepared: &mut Prepared,
    fence: Option<(&str, u64)>,
    queue: &Queue,
) -> Result<bool, DbError> {
    let mut missing: Vec<&'static str> = queue
        .0
        .iter()
        .map(|(sql, _)| *sql)
        .chain(fence.map(|_| lease::FENCE))
        .filter(|sql| !prepared.contains_key(sql))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let client_ref = &*client;
    let made = try_join_all(missing.iter().map(|sql| async move {
        Ok::<_, DbError>((*sql, client_ref.prepare(&dollars(sql)).await?))
    }))
    .await?;
    prepared.extend(made);
    let tx = client.transaction().await?;
    if let Some((node, epoch)) = fence {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        if tx
            .query_opt(&prepared[lease::FENCE], &[&node, &epoch])
            .await?
            .is_none()
        {
            return Ok(false);
        }
    }
    for window in queue.0.chunks(PIPELINE) {
        let tx = &tx;
        try_join_all(window.iter().map(|(sql, params)| {
            let stmt = &prepared[sql];
            async move { tx.execute(stmt, &refs(params)).await }
        }))
        .await?;
    }
    tx.commit().await?;
    Ok(true)
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

    /// Runs the statements `f` gives in one transaction, committed if they all succeed
    /// (reconnecting first if the connection broke); fenced, only while this engine
    /// leads (see [`Fence`]).
    pub(super) fn transaction(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<(), DbError>,
    ) -> Result<(), StoreError> {
        let conn = &mut self.0;
        let fence = conn.writer.as_ref().and_then(|w| w.fence.as_ref());
        let fenced = fence.map(|f| (f.node.clone(), f.epoch.load(Ordering::Acquire)));
        if let Some((_, 0)) = fenced {
            return Err(StoreError::Deposed { epoch: 0 });
        }
        let mut queue = Queue::default();
        f(&mut queue).map_err(|e| conn.fail(e))?;
        let (session, prepared) = conn.open()?;
        let Session { runtime, client } = session;
        let fence = fenced.as_ref().map(|(node, epoch)| (node.as_str(), *epoch));
        let result = bounded(runtime, pipelined(client, prepared, fence, &queue));
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Deposed {
                epoch: fence.map_or(0, |(_, epoch)| epoch),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones() {
        assert_eq!(
            dollars("UPDATE t SET a = ?2 WHERE id = ?1 AND ?10 IS NULL"),
            "UPDATE t SET a = $2 WHERE id = $1 AND $10 IS NULL"
        );
    }

    #[test]
    fn a_write_transaction_queues_its_statements_and_refuses_reads() {
        let mut queue = Queue::default();
        let db: &mut dyn Sql = &mut queue;
        let id = String::from("v1");
        db.exec(
            "DELETE FROM reasons WHERE vehicle = ?1",
            super::super::sql::args![id],
        )
        .expect("queued");
        assert!(matches!(
            db.row("SELECT 1", super::super::sql::args![], |_| Ok(())),
            Err(DbError::ReadInPipeline)
        ));
        drop(id);
        assert_eq!(queue.0.len(), 1);
        assert!(matches!(&queue.0[0].1[..], [Val::Text(t)] if t == "v1"));
    }
}
