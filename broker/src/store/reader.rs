//! Read-only queries for the ops API and tools: each reader has its own connection; in
//! SQLite's WAL mode and in PostgreSQL readers never block the writer (nor the engine
//! behind it). The calls block on the disk or the network: call them from
//! `tokio::task::spawn_blocking`.

use std::cell::RefCell;

use fleet_rules::UnixMs;
use rusqlite::{Connection, OpenFlags};

use super::sql::{args, DbError, Lite, Row, Sql, Val};
use super::{classify, db_error, pg, Location, StoreError};

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredTransition {
    /// Position in the log (increasing).
    pub seq: i64,
    /// The vehicle.
    pub vehicle: String,
    /// `in_service` or `out_of_service`.
    pub from: String,
    /// `in_service` or `out_of_service`.
    pub to: String,
    /// `set`, `cleared` or `decommissioned`.
    pub change: String,
    /// The reason set or cleared.
    pub reason: Option<serde_json::Value>,
    /// Every reason after the change.
    pub reasons: serde_json::Value,
    /// `rule` or `operator`.
    pub cause: String,
    /// The operator's name.
    pub operator: Option<String>,
    /// The operator's note.
    pub note: Option<String>,
    /// When.
    pub at: UnixMs,
}

/// One entry of the command log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredCommand {
    /// The command id.
    pub id: String,
    /// The vehicle.
    pub vehicle: String,
    /// `service_in` or `service_out`.
    pub command: String,
    /// A resend because the vehicle reported another state.
    pub resend: bool,
    /// When decided.
    pub issued_at: UnixMs,
    /// When acknowledged.
    pub acked_at: Option<UnixMs>,
    /// The ack's `ok`.
    pub ok: Option<bool>,
    /// The ack's error message.
    pub error: Option<String>,
}

/// A read-only connection.
#[derive(Debug)]
pub struct StoreReader {
    db: ReaderDb,
    location: Location,
}

enum ReaderDb {
    Sqlite(Connection),
    /// The client needs `&mut`; a reader is used by one thread at a time.
    Postgres(Box<RefCell<pg::Reader>>),
}

impl std::fmt::Debug for ReaderDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReaderDb::Sqlite(_) => "Sqlite",
            ReaderDb::Postgres(_) => "Postgres",
        })
    }
}

fn parse(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl StoreReader {
    /// Opens the database read-only (it must exist).
    pub fn open(location: &Location) -> Result<StoreReader, StoreError> {
        let db = match location {
            Location::File(path) => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn =
                    Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(|e| classify(path, e))?;
                ReaderDb::Sqlite(conn)
            }
            Location::Postgres(url) => {
                ReaderDb::Postgres(Box::new(RefCell::new(pg::Reader::open(url)?)))
            }
        };
        Ok(StoreReader {
            db,
            location: location.clone(),
        })
    }

    /// Runs `f` on the connection.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        match &self.db {
            ReaderDb::Sqlite(conn) => f(&mut Lite(conn)).map_err(|e| db_error(&self.location, e)),
            ReaderDb::Postgres(reader) => reader.borrow_mut().read(f),
        }
    }

    /// The count `sql` returns.
    pub(super) fn count(&self, sql: &'static str, params: &[Val<'_>]) -> Result<u64, StoreError> {
        self.read(|db| db.row(sql, params, |r| r.get::<i64>(0)))
            .map(|n| n.unwrap_or(0).max(0) as u64)
    }

    /// The latest `limit` transitions, newest first: of one vehicle, or of all.
    pub fn transitions(
        &self,
        vehicle: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTransition>, StoreError> {
        let row = |r: &Row| {
            Ok(StoredTransition {
                seq: r.get(0)?,
                vehicle: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                change: r.get(4)?,
                reason: parse(r.get(5)?),
                reasons: parse(r.get(6)?).unwrap_or_default(),
                cause: r.get(7)?,
                operator: r.get(8)?,
                note: r.get(9)?,
                at: r.get(10)?,
            })
        };
        self.read(|db| match vehicle {
            Some(v) => db.rows(
                "SELECT seq, vehicle, from_state, to_state, change, reason, reasons, cause,
                        operator, note, at
                 FROM transitions WHERE vehicle = ?1 ORDER BY seq DESC LIMIT ?2",
                args![v, limit],
                row,
            ),
            None => db.rows(
                "SELECT seq, vehicle, from_state, to_state, change, reason, reasons, cause,
                        operator, note, at
                 FROM transitions ORDER BY seq DESC LIMIT ?1",
                args![limit],
                row,
            ),
        })
    }

    /// The latest `limit` commands of a vehicle, newest first.
    pub fn commands(&self, vehicle: &str, limit: usize) -> Result<Vec<StoredCommand>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT id, vehicle, command, resend, issued_at, acked_at, ok, error
                 FROM commands WHERE vehicle = ?1 ORDER BY issued_at DESC, id DESC LIMIT ?2",
                args![vehicle, limit],
                |r| {
                    Ok(StoredCommand {
                        id: r.get(0)?,
                        vehicle: r.get(1)?,
                        command: r.get(2)?,
                        resend: r.get(3)?,
                        issued_at: r.get(4)?,
                        acked_at: r.get(5)?,
                        ok: r.get(6)?,
                        error: r.get(7)?,
                    })
                },
            )
        })
    }

    /// Stored vehicles with each of their reasons' kinds, for checks and tools:
    /// `(id, [kind or "hardware_fault:CODE", ...])`, in id order.
    pub fn vehicle_reasons(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        self.read(|db| {
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            db.each(
                "SELECT v.id, r.kind, r.code FROM vehicles v
                 LEFT JOIN reasons r ON r.vehicle = v.id ORDER BY v.id, r.kind, r.code",
                args![],
                &mut |r| {
                    let id: String = r.get(0)?;
                    let kind: Option<String> = r.get(1)?;
                    let code: Option<String> = r.get(2)?;
                    if out.last().is_none_or(|(last, _)| *last != id) {
                        out.push((id, Vec::new()));
                    }
                    if let (Some(kind), Some((_, kinds))) = (kind, out.last_mut()) {
                        kinds.push(match code.filter(|c| !c.is_empty()) {
                            Some(code) => format!("{kind}:{code}"),
                            None => kind,
                        });
                    }
                    Ok(true)
                },
            )?;
            Ok(out)
        })
    }

    /// Incidents that started at or after `since` or are still open, newest first (at most
    /// `limit`): `(kind, started_at, ended_at)`.
    pub fn incidents(
        &self,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<(String, UnixMs, Option<UnixMs>)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT kind, started_at, ended_at FROM incidents
                 WHERE started_at >= ?1 OR ended_at IS NULL OR ended_at >= ?1
                 ORDER BY started_at DESC LIMIT ?2",
                args![since, limit],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }

    /// When each stored vehicle's state last changed, `(id, changed_at)` in id order (to
    /// publish the retained service state again).
    pub fn changed_at(&self) -> Result<Vec<(Box<str>, UnixMs)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT id, changed_at FROM vehicles ORDER BY id",
                args![],
                |r| Ok((r.get::<String>(0)?.into_boxed_str(), r.get(1)?)),
            )
        })
    }

    /// SLI minutes `(minute, good, valid, down_ms)` from `from_minute` on.
    pub fn sli_minutes(&self, from_minute: u64) -> Result<Vec<(u64, u64, u64, u64)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT minute, good, valid, down_ms FROM sli_minutes WHERE minute >= ?1
                 ORDER BY minute",
                args![from_minute],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })
    }

    /// Each journey's requests ended with success in time and ended in all, from unix
    /// minute `from_minute` on: `(journey, good, valid)`, by journey name.
    pub fn journey_totals(&self, from_minute: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT journey, CAST(sum(good) AS BIGINT), CAST(sum(valid) AS BIGINT)
                 FROM journey_minutes WHERE minute >= ?1
                 GROUP BY journey ORDER BY journey",
                args![from_minute],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }

    /// The reasons set since `since` (newest first), as `(reason JSON, cause)`.
    pub fn reasons_set_since(&self, since: UnixMs) -> Result<Vec<(String, String)>, StoreError> {
        // Newest first, stopping at the first older one: the log is in time order.
        self.read(|db| {
            let mut out = Vec::new();
            db.each(
                "SELECT reason, cause, at, change FROM transitions ORDER BY seq DESC",
                args![],
                &mut |r| {
                    if r.get::<u64>(2)? < since {
                        return Ok(false);
                    }
                    if let ("set", Some(reason)) =
                        (r.get::<String>(3)?.as_str(), r.get::<Option<String>>(0)?)
                    {
                        out.push((reason, r.get(1)?));
                    }
                    Ok(true)
                },
            )?;
            Ok(out)
        })
    }
}
