//! Read-only queries for the ops API and tools: each reader has its own connection, and in
//! WAL mode readers never block the writer (nor the engine behind it). The calls block on
//! disk: call them from `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};

use fleet_rules::UnixMs;
use rusqlite::{params, Connection, OpenFlags};

use super::{classify, StoreError};

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
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
}

fn parse(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl StoreReader {
    /// Opens the database read-only (it must exist).
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| classify(path, e))?;
        Ok(StoreReader {
            conn,
            path: path.to_owned(),
        })
    }

    /// The latest `limit` transitions, newest first: of one vehicle, or of all.
    pub fn transitions(
        &self,
        vehicle: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTransition>, StoreError> {
        self.query_transitions(vehicle, limit)
            .map_err(|e| classify(&self.path, e))
    }

    fn query_transitions(
        &self,
        vehicle: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<StoredTransition>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, vehicle, from_state, to_state, change, reason, reasons, cause,
                    operator, note, at
             FROM transitions WHERE ?1 IS NULL OR vehicle = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![vehicle, limit], |r| {
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
        })?;
        rows.collect()
    }

    /// The latest `limit` commands of a vehicle, newest first.
    pub fn commands(&self, vehicle: &str, limit: usize) -> Result<Vec<StoredCommand>, StoreError> {
        self.query_commands(vehicle, limit)
            .map_err(|e| classify(&self.path, e))
    }

    fn query_commands(&self, vehicle: &str, limit: usize) -> rusqlite::Result<Vec<StoredCommand>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, vehicle, command, resend, issued_at, acked_at, ok, error
             FROM commands WHERE vehicle = ?1 ORDER BY issued_at DESC, id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![vehicle, limit], |r| {
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
        })?;
        rows.collect()
    }

    /// Stored vehicles with each of their reasons' kinds, for checks and tools:
    /// `(id, [kind or "hardware_fault:CODE", ...])`, in id order.
    pub fn vehicle_reasons(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let run = || -> rusqlite::Result<Vec<(String, Vec<String>)>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT v.id, r.kind, r.code FROM vehicles v
                 LEFT JOIN reasons r ON r.vehicle = v.id ORDER BY v.id, r.kind, r.code",
            )?;
            let mut rows = stmt.query([])?;
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            while let Some(r) = rows.next()? {
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
            }
            Ok(out)
        };
        run().map_err(|e| classify(&self.path, e))
    }

    /// Incidents that started at or after `since` or are still open, newest first (at most
    /// `limit`): `(kind, started_at, ended_at)`.
    pub fn incidents(
        &self,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<(String, UnixMs, Option<UnixMs>)>, StoreError> {
        let run = || -> rusqlite::Result<Vec<(String, UnixMs, Option<UnixMs>)>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT kind, started_at, ended_at FROM incidents
                 WHERE started_at >= ?1 OR ended_at IS NULL OR ended_at >= ?1
                 ORDER BY started_at DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![since, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        };
        run().map_err(|e| classify(&self.path, e))
    }

    /// When each stored vehicle's state last changed, `(id, changed_at)` in id order (to
    /// publish the retained service state again).
    pub fn changed_at(&self) -> Result<Vec<(Box<str>, UnixMs)>, StoreError> {
        let run = || -> rusqlite::Result<Vec<(Box<str>, UnixMs)>> {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, changed_at FROM vehicles ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?.into_boxed_str(), r.get(1)?))
            })?;
            rows.collect()
        };
        run().map_err(|e| classify(&self.path, e))
    }

    /// SLI minutes `(minute, good, valid, down_ms)` from `from_minute` on.
    pub fn sli_minutes(&self, from_minute: u64) -> Result<Vec<(u64, u64, u64, u64)>, StoreError> {
        let run = || -> rusqlite::Result<Vec<(u64, u64, u64, u64)>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT minute, good, valid, down_ms FROM sli_minutes WHERE minute >= ?1
                 ORDER BY minute",
            )?;
            let rows = stmt.query_map(params![from_minute as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect()
        };
        run().map_err(|e| classify(&self.path, e))
    }

    /// The reasons set since `since` (newest first), as `(reason JSON,
    /// cause)`.
    pub fn reasons_set_since(&self, since: UnixMs) -> Result<Vec<(String, String)>, StoreError> {
        let run = || -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT reason, cause, at, change FROM transitions ORDER BY seq DESC",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let at: u64 = r.get(2)?;
                if at < since {
                    break;
                }
                let change: String = r.get(3)?;
                if change != "set" {
                    continue;
                }
                if let Some(reason) = r.get::<_, Option<String>>(0)? {
                    out.push((reason, r.get(1)?));
                }
            }
            Ok(out)
        };
        run().map_err(|e| classify(&self.path, e))
    }
}
