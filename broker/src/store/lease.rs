//! The leader lease of active/standby engines (the `ha` module holds the task that renews
//! it), in PostgreSQL: one row, `fleet_leader`, with the holder, its ops address, the
//! fencing epoch and the expiry, all times in the database's own clock
//! (`clock_timestamp()`, so engines with skewed clocks still agree).

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Transaction};

/// Statement parameters.
type Params<'a, const N: usize> = [&'a (dyn ToSql + Sync); N];

/// Why the lease could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No connection to the database.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// Host and port (never the password).
        target: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// A statement failed (connection lost, server restarting, ...).
    #[error("PostgreSQL: {}", explain(.0))]
    Database(#[from] tokio_postgres::Error),
    /// A fenced write was refused: the epoch is no longer the lease's.
    #[error("deposed: the lease is no longer held with epoch {epoch}; nothing was written")]
    Deposed {
        /// The epoch the write carried.
        epoch: u64,
    },
}

/// The driver's error with the server's own message, if the server sent one.
fn explain(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The node name of the holder (`""` before anyone held it).
    pub holder: String,
    /// Its ops API address, for standbys to point writers at.
    pub address: String,
    /// The fencing epoch of the current (or last) term.
    pub epoch: u64,
    /// Milliseconds until it expires (0 when expired).
    pub remaining_ms: u64,
}

impl LeaseRow {
    /// Held and not expired.
    pub fn is_live(&self) -> bool {
        self.remaining_ms > 0 && !self.holder.is_empty()
    }
}

/// Creates the lease table (and its one row) if missing.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS fleet_leader (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        holder TEXT NOT NULL,
        address TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO fleet_leader (holder, address, epoch, expires_at, acquired_at)
    VALUES ('', '', 0, '-infinity', '-infinity') ON CONFLICT DO NOTHING;
    CREATE TABLE IF NOT EXISTS fleet_nodes (
        node TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        is_leader BOOLEAN NOT NULL,
        sees_upstream BOOLEAN NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL
    );";

/// Each engine says at every lease attempt that it is alive and what it is (for
/// `fleet-broker status`).
const REGISTER: &str = "INSERT INTO fleet_nodes (node, address, is_leader, sees_upstream, seen_at)
    VALUES ($1, $2, $3, $4, clock_timestamp())
    ON CONFLICT (node) DO UPDATE
    SET address = $2, is_leader = $3, sees_upstream = $4, seen_at = clock_timestamp()";

/// Another engine, neither `$1` nor the lease's holder, registered within `$2` ms and sees
/// the upstream: it can lead where `$1` cannot.
const OTHER_SEES: &str = "SELECT EXISTS (SELECT 1 FROM fleet_nodes
    WHERE node <> $1 AND node <> (SELECT holder FROM fleet_leader) AND sees_upstream
      AND seen_at > clock_timestamp() - $2::float8 * interval '1 millisecond')";

/// The engines that ever registered, with how long ago each was last seen (ms).
const NODES: &str = "SELECT node, address, is_leader,
        greatest(0, extract(epoch FROM (clock_timestamp() - seen_at)) * 1000)::float8
    FROM fleet_nodes ORDER BY node";

/// How long the current term has lasted (ms), when someone holds the lease.
const TERM_AGE: &str =
    "SELECT greatest(0, extract(epoch FROM (clock_timestamp() - acquired_at)) * 1000)::float8
    FROM fleet_leader WHERE expires_at > clock_timestamp()";

/// Takes the lease if it is free or expired (a new term: epoch + 1), or renews it if this
/// node holds it with `$3` and it has not expired (the same term). Nothing otherwise.
const ACQUIRE: &str = "UPDATE fleet_leader SET
        epoch = CASE WHEN holder = $1 AND epoch = $3 AND expires_at > clock_timestamp()
                     THEN epoch ELSE epoch + 1 END,
        acquired_at = CASE WHEN holder = $1 AND epoch = $3 AND expires_at > clock_timestamp()
                           THEN acquired_at ELSE clock_timestamp() END,
        holder = $1,
        address = $2,
        expires_at = clock_timestamp() + $4::float8 * interval '1 millisecond'
    WHERE expires_at <= clock_timestamp() OR (holder = $1 AND epoch = $3)
    RETURNING epoch";

const READ: &str = "SELECT holder, address, epoch,
        greatest(0, extract(epoch FROM (expires_at - clock_timestamp())) * 1000)::float8
    FROM fleet_leader";

/// Held by `$1` with epoch `$2` and not expired. `FOR SHARE` makes a takeover (an UPDATE
/// of the row) wait until the fenced transaction ends, so no write of an old term can
/// commit after its successor's term began.
pub(super) const FENCE: &str = "SELECT 1 FROM fleet_leader
    WHERE holder = $1 AND epoch = $2 AND expires_at > clock_timestamp() FOR SHARE";

const RELEASE: &str = "UPDATE fleet_leader SET expires_at = clock_timestamp()
    WHERE holder = $1 AND epoch = $2";

/// The lease from a row of [`READ`].
fn lease_row(r: &tokio_postgres::Row) -> Result<LeaseRow, tokio_postgres::Error> {
    Ok(LeaseRow {
        holder: r.try_get(0)?,
        address: r.try_get(1)?,
        epoch: r.try_get::<_, i64>(2)?.max(0) as u64,
        remaining_ms: r.try_get::<_, f64>(3)?.max(0.0) as u64,
    })
}

/// A connection that reads and writes the lease for one node.
pub struct PgLease {
    client: Client,
    node: String,
    address: String,
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLease").field("node", &self.node).finish()
    }
}

/// Host:port of a connection URL, for messages (never its password).
pub fn describe(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = match c.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => "localhost".into(),
            };
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}")
        }
        Err(_) => "an unparsable URL".into(),
    }
}

/// Opens a connection (bounded by `timeout`) whose driver runs on the current runtime.
pub async fn connect(url: &str, timeout: Duration) -> Result<Client, LeaseError> {
    let target = describe(url);
    let mut config: tokio_postgres::Config = url.parse().map_err(|source| LeaseError::Connect {
        target: target.clone(),
        source,
    })?;
    config.connect_timeout(timeout);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| LeaseError::Connect { target, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Refuses the transaction unless `node` holds the lease with `epoch`, and holds the row
/// against a takeover until the transaction ends. Run it first in every write.
pub async fn fence(tx: &Transaction<'_>, node: &str, epoch: u64) -> Result<(), LeaseError> {
    let epoch_i = epoch as i64;
    let params: Params<2> = [&node, &epoch_i];
    let held = tx.query_opt(FENCE, &params).await?;
    match held {
        Some(_) => Ok(()),
        None => Err(LeaseError::Deposed { epoch }),
    }
}

impl PgLease {
    /// Connects, and creates the lease table if this is the first engine.
    pub async fn open(
        url: &str,
        node: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<PgLease, LeaseError> {
        let client = connect(url, timeout).await?;
        client.batch_execute(SCHEMA).await?;
        Ok(PgLease {
            client,
            node: node.to_owned(),
            address: address.to_owned(),
        })
    }

    /// This engine's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes or renews the lease for `ttl`: the epoch granted, or `None` when another
    /// node holds it. `held` is the epoch this node holds (0 for none).
    pub async fn acquire(&self, held: u64, ttl: Duration) -> Result<Option<u64>, LeaseError> {
        let ttl_ms = ttl.as_secs_f64() * 1000.0;
        let held = held as i64;
        let params: Params<4> = [&self.node, &self.address, &held, &ttl_ms];
        let row = self.client.query_opt(ACQUIRE, &params).await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<_, i64>(0)?.max(0) as u64),
            None => None,
        })
    }

    /// The lease as stored now.
    pub async fn read(&self) -> Result<LeaseRow, LeaseError> {
        Ok(lease_row(&self.client.query_one(READ, &[]).await?)?)
    }

    /// Records that this node is alive, leading or not, and whether it sees the upstream.
    pub async fn register(&self, leading: bool, sees_upstream: bool) -> Result<(), LeaseError> {
        let params: Params<4> = [&self.node, &self.address, &leading, &sees_upstream];
        self.client.execute(REGISTER, &params).await?;
        Ok(())
    }

    /// Whether another engine (not the lease's holder) registered within `within` and
    /// sees the upstream.
    pub async fn another_sees_upstream(&self, within: Duration) -> Result<bool, LeaseError> {
        let ms = within.as_secs_f64() * 1000.0;
        let params: Params<2> = [&self.node, &ms];
        let row = self.client.query_one(OTHER_SEES, &params).await?;
        Ok(row.try_get(0)?)
    }

    /// Ends this node's term now (a clean stop), so a standby takes over at its next try.
    pub async fn release(&self, epoch: u64) -> Result<bool, LeaseError> {
        let epoch = epoch as i64;
        let params: Params<2> = [&self.node, &epoch];
        let n = self.client.execute(RELEASE, &params).await?;
        Ok(n > 0)
    }
}

/// An engine of the cluster as it last registered.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Its node name.
    pub node: String,
    /// Its ops API address.
    pub address: String,
    /// It held the lease at its last attempt.
    pub leading: bool,
    /// Milliseconds since its last attempt, in the database's clock.
    pub seen_ms: u64,
}

/// The cluster as the database knows it, for `fleet-broker status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The lease.
    pub lease: LeaseRow,
    /// How long the current term has lasted, if the lease is live.
    pub term_ms: Option<u64>,
    /// Every engine that ever registered.
    pub nodes: Vec<NodeRow>,
}

/// Reads the cluster over `url` (read only; an error if no engine ever ran on it).
pub async fn cluster(url: &str, timeout: Duration) -> Result<Cluster, LeaseError> {
    let client = connect(url, timeout).await?;
    let lease = lease_row(&client.query_one(READ, &[]).await?)?;
    let term_ms = match client.query_opt(TERM_AGE, &[]).await? {
        Some(r) => Some(r.try_get::<_, f64>(0)?.max(0.0) as u64),
        None => None,
    };
    let nodes = client
        .query(NODES, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(NodeRow {
                node: r.try_get(0)?,
                address: r.try_get(1)?,
                leading: r.try_get(2)?,
                seen_ms: r.try_get::<_, f64>(3)?.max(0.0) as u64,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(Cluster {
        lease,
        term_ms,
        nodes,
    })
}
