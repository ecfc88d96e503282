//! The database schema and its migrations. SQLite keeps the version in `PRAGMA
//! user_version`, PostgreSQL in the table `fleet_schema`; on open every missing step runs
//! in order (on SQLite each in its own transaction, on PostgreSQL all in one, under a lock
//! that keeps a second engine from migrating at the same time), so a database written by
//! an older broker is brought forward and one written by a newer broker is refused.
//! PostgreSQL databases start at version 4, the first with a PostgreSQL store:
//! [`POSTGRES`] creates that version in one step, and each later version adds a step to
//! both lists.

use rusqlite::{Connection, Transaction};

use super::sql::DbError;

/// The version this build writes.
pub const SCHEMA_VERSION: u32 = 6;

/// Step `i` takes a database from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // v1: vehicles with their reasons, the transition log (the audit trail), the
    // decommissioned ids, the SLI minute buckets and a few scalar marks.
    "CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE vehicles (
         id TEXT PRIMARY KEY,
         model TEXT,
         last_seen INTEGER NOT NULL,
         changed_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE reasons (
         vehicle TEXT NOT NULL,
         kind TEXT NOT NULL,          -- heartbeat_lost | hardware_fault | maintenance
                                      -- | journey_failures (code: the journey, note: failures)
         code TEXT NOT NULL DEFAULT '',
         operator TEXT,
         note TEXT,
         since INTEGER NOT NULL,
         PRIMARY KEY (vehicle, kind, code)
     ) WITHOUT ROWID;
     CREATE TABLE decommissioned (
         id TEXT PRIMARY KEY,
         operator TEXT NOT NULL,
         at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE transitions (
         seq INTEGER PRIMARY KEY,
         vehicle TEXT NOT NULL,
         from_state TEXT NOT NULL,
         to_state TEXT NOT NULL,
         change TEXT NOT NULL,        -- set | cleared | decommissioned
         reason TEXT,                 -- JSON of the reason set or cleared
         reasons TEXT NOT NULL,       -- JSON array: every reason after the change
         cause TEXT NOT NULL,         -- rule | operator
         operator TEXT,
         note TEXT,
         at INTEGER NOT NULL
     );
     CREATE INDEX transitions_by_vehicle ON transitions (vehicle, seq);
     CREATE TABLE sli_minutes (
         minute INTEGER PRIMARY KEY,  -- unix ms / 60000
         good INTEGER NOT NULL,       -- vehicle-ms in service
         valid INTEGER NOT NULL       -- vehicle-ms of the active fleet
     );",
    // v2: the command log, error counters per vehicle, and the broker's own downtime per
    // SLI minute.
    "CREATE TABLE commands (
         id TEXT PRIMARY KEY,
         vehicle TEXT NOT NULL,
         command TEXT NOT NULL,       -- service_in | service_out
         reasons TEXT NOT NULL,       -- JSON array
         resend INTEGER NOT NULL,
         issued_at INTEGER NOT NULL,
         acked_at INTEGER,
         ok INTEGER,
         error TEXT
     ) WITHOUT ROWID;
     CREATE INDEX commands_by_vehicle ON commands (vehicle, issued_at);
     CREATE INDEX commands_by_time ON commands (issued_at);
     ALTER TABLE vehicles ADD COLUMN error_counts TEXT;  -- JSON object code -> count
     ALTER TABLE sli_minutes ADD COLUMN down_ms INTEGER NOT NULL DEFAULT 0;",
    // v3: the notification outbox (see outbox.rs).
    "CREATE TABLE slack_notices (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         kind TEXT NOT NULL,
         notice TEXT NOT NULL,        -- JSON
         at INTEGER NOT NULL,
         message TEXT                 -- key of the message carrying it, once composed
     );
     CREATE INDEX slack_notices_waiting ON slack_notices (seq) WHERE message IS NULL;
     CREATE INDEX slack_notices_by_message ON slack_notices (message);
     CREATE TABLE slack_messages (
         key TEXT PRIMARY KEY,        -- idempotency key
         content TEXT NOT NULL,       -- JSON: the Block Kit message
         opens TEXT,                  -- thread it opens (incident or alert)
         resolves TEXT,               -- thread it resolves
         notices INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         state TEXT NOT NULL,         -- pending | sent | gave_up
         attempts INTEGER NOT NULL,
         last_error TEXT,
         done_at INTEGER,
         ts TEXT                      -- Slack's message ts (bot token)
     ) WITHOUT ROWID;
     CREATE INDEX slack_messages_by_state ON slack_messages (state, created_at);
     CREATE INDEX slack_messages_by_thread ON slack_messages (opens);",
    // v4: the incident log (mass loss, SLO alerts, blind stretches), for the SLO page.
    "CREATE TABLE incidents (
         id INTEGER PRIMARY KEY,
         kind TEXT NOT NULL,          -- mass_loss | page | ticket | blind
         started_at INTEGER NOT NULL,
         ended_at INTEGER             -- NULL while open
     );
     CREATE INDEX incidents_by_start ON incidents (started_at);",
    // v5: each transition keeps the fleet/events payload that announced it, sent again
    // after a crash (it may have been stored but not yet published).
    "ALTER TABLE transitions ADD COLUMN event TEXT;",
    // v6: each journey's SLI minutes (requests ended, and ended with success in time), so
    // its SLO window survives a restart.
    JOURNEY_MINUTES,
];

/// v6 on both databases (SQLite's INTEGER is 64-bit).
const JOURNEY_MINUTES: &str = "CREATE TABLE journey_minutes (
         journey TEXT NOT NULL,
         minute BIGINT NOT NULL,       -- unix ms / 60000
         good BIGINT NOT NULL,         -- requests ended with success in time
         valid BIGINT NOT NULL,        -- requests ended
         PRIMARY KEY (journey, minute)
     );";

/// The PostgreSQL steps: `(version reached, statements)`, in order. The tables and columns
/// are SQLite's with PostgreSQL's types: every integer is a BIGINT (times in unix ms,
/// vehicle-ms, 0/1 flags), log sequences are identity columns.
pub(super) const POSTGRES: [(u32, &str); 3] = [
    (
        4,
        "CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value BIGINT NOT NULL
     );
     CREATE TABLE vehicles (
         id TEXT PRIMARY KEY,
         model TEXT,
         last_seen BIGINT NOT NULL,
         changed_at BIGINT NOT NULL,
         error_counts TEXT
     );
     CREATE TABLE reasons (
         vehicle TEXT NOT NULL,
         kind TEXT NOT NULL,
         code TEXT NOT NULL DEFAULT '',
         operator TEXT,
         note TEXT,
         since BIGINT NOT NULL,
         PRIMARY KEY (vehicle, kind, code)
     );
     CREATE TABLE decommissioned (
         id TEXT PRIMARY KEY,
         operator TEXT NOT NULL,
         at BIGINT NOT NULL
     );
     CREATE TABLE transitions (
         seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         vehicle TEXT NOT NULL,
         from_state TEXT NOT NULL,
         to_state TEXT NOT NULL,
         change TEXT NOT NULL,
         reason TEXT,
         reasons TEXT NOT NULL,
         cause TEXT NOT NULL,
         operator TEXT,
         note TEXT,
         at BIGINT NOT NULL
     );
     CREATE INDEX transitions_by_vehicle ON transitions (vehicle, seq);
     CREATE TABLE sli_minutes (
         minute BIGINT PRIMARY KEY,
         good BIGINT NOT NULL,
         valid BIGINT NOT NULL,
         down_ms BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE commands (
         id TEXT PRIMARY KEY,
         vehicle TEXT NOT NULL,
         command TEXT NOT NULL,
         reasons TEXT NOT NULL,
         resend BIGINT NOT NULL,
         issued_at BIGINT NOT NULL,
         acked_at BIGINT,
         ok BIGINT,
         error TEXT
     );
     CREATE INDEX commands_by_vehicle ON commands (vehicle, issued_at);
     CREATE INDEX commands_by_time ON commands (issued_at);
     CREATE TABLE slack_notices (
         seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         kind TEXT NOT NULL,
         notice TEXT NOT NULL,
         at BIGINT NOT NULL,
         message TEXT
     );
     CREATE INDEX slack_notices_waiting ON slack_notices (seq) WHERE message IS NULL;
     CREATE INDEX slack_notices_by_message ON slack_notices (message);
     CREATE TABLE slack_messages (
         key TEXT PRIMARY KEY,
         content TEXT NOT NULL,
         opens TEXT,
         resolves TEXT,
         notices BIGINT NOT NULL,
         created_at BIGINT NOT NULL,
         state TEXT NOT NULL,
         attempts BIGINT NOT NULL,
         last_error TEXT,
         done_at BIGINT,
         ts TEXT
     );
     CREATE INDEX slack_messages_by_state ON slack_messages (state, created_at);
     CREATE INDEX slack_messages_by_thread ON slack_messages (opens);
     CREATE TABLE incidents (
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         kind TEXT NOT NULL,
         started_at BIGINT NOT NULL,
         ended_at BIGINT
     );
     CREATE INDEX incidents_by_start ON incidents (started_at);",
    ),
    (5, "ALTER TABLE transitions ADD COLUMN event TEXT;"),
    (6, JOURNEY_MINUTES),
];

/// Why the schema could not be brought to [`SCHEMA_VERSION`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Written by a newer broker.
    #[error("schema version {found} is newer than this build's {SCHEMA_VERSION}: run the newer fleet-broker, or restore a backup from this version")]
    TooNew {
        /// The version in the file.
        found: u32,
    },
    /// A step failed (the database stays at the version before it).
    #[error("migrating the schema from version {from} failed: {source}")]
    Step {
        /// The version the step started from.
        from: u32,
        /// The database's error.
        source: DbError,
    },
    /// The version could not be read.
    #[error("cannot read the schema version: {0}")]
    Read(DbError),
}

/// The version stored in the file (0 for a new file).
pub fn version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the schema to `target` (at most [`SCHEMA_VERSION`]); returns the version found.
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, SchemaError> {
    let found = version(conn).map_err(|e| SchemaError::Read(e.into()))?;
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for from in found..target.min(SCHEMA_VERSION) {
        let step = |tx: &Transaction<'_>| -> rusqlite::Result<()> {
            tx.execute_batch(MIGRATIONS[from as usize])?;
            tx.pragma_update(None, "user_version", from + 1)
        };
        let fail = |e: rusqlite::Error| SchemaError::Step {
            from,
            source: e.into(),
        };
        let tx = conn.transaction().map_err(fail)?;
        step(&tx).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(found)
}

/// Key of the transaction lock that keeps two engines from migrating one PostgreSQL
/// database at once.
const MIGRATION_LOCK: i64 = 0x666c_6565_7401;

/// Brings a PostgreSQL database to [`SCHEMA_VERSION`]; returns the version found.
pub(super) async fn migrate_postgres(
    client: &mut tokio_postgres::Client,
) -> Result<u32, SchemaError> {
    let read = |e: tokio_postgres::Error| SchemaError::Read(e.into());
    let tx = client.transaction().await.map_err(read)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(read)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fleet_schema (
             singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
             version BIGINT NOT NULL
         );
         INSERT INTO fleet_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await
    .map_err(read)?;
    let found: i64 = tx
        .query_one("SELECT version FROM fleet_schema", &[])
        .await
        .map_err(read)?
        .try_get(0)
        .map_err(read)?;
    let found = u32::try_from(found).unwrap_or(u32::MAX);
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for (to, step) in POSTGRES.iter().filter(|(to, _)| *to > found) {
        let fail = |e: tokio_postgres::Error| SchemaError::Step {
            from: found,
            source: e.into(),
        };
        tx.batch_execute(step).await.map_err(fail)?;
        tx.execute("UPDATE fleet_schema SET version = $1", &[&i64::from(*to)])
            .await
            .map_err(fail)?;
    }
    tx.commit().await.map_err(read)?;
    Ok(found)
}
