//! The notification outbox: two tables. `slack_notices` holds every notification the
//! engine decided, written in the same transaction as the transition behind it;
//! `slack_messages` holds each message composed from them, with its idempotency key and
//! delivery state, written before the first attempt so a restart sends the same message
//! again rather than a new one. Writes are records for the writer (one writer for the
//! file); the notifier reads through its own [`StoreReader`]. The store keeps notices as
//! JSON text: what they mean is the notifier's business.

use super::sql::{args, DbError, Sql};
use super::{StoreError, StoreReader};
use fleet_rules::UnixMs;

/// A change to the outbox, stored by the store writer.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxRecord {
    /// A notification to tell.
    Notice {
        /// `Notice::kind`.
        kind: &'static str,
        /// The notice as JSON.
        json: String,
        /// When decided.
        at: UnixMs,
    },
    /// A message composed from waiting notices.
    Composed(ComposedRow),
    /// A failed attempt.
    Attempt {
        /// Idempotency key.
        key: String,
        /// Attempts so far.
        attempts: u32,
        /// What went wrong.
        error: String,
    },
    /// Slack accepted it.
    Sent {
        /// Idempotency key.
        key: String,
        /// Slack's message timestamp (bot token only).
        ts: Option<String>,
        /// Attempts it took.
        attempts: u32,
        /// When.
        at: UnixMs,
    },
    /// Given up.
    GaveUp {
        /// Idempotency key.
        key: String,
        /// Why.
        error: String,
        /// Attempts made.
        attempts: u32,
        /// When.
        at: UnixMs,
    },
    /// Deletes delivered and given-up messages (and their notices) older than `before`.
    Prune {
        /// Unix ms.
        before: UnixMs,
    },
}

/// A composed message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposedRow {
    /// Idempotency key: `{kind}-{first notice seq}`.
    pub key: String,
    /// The Block Kit content as JSON.
    pub content: String,
    /// The thread it opens.
    pub opens: Option<String>,
    /// The thread it resolves.
    pub resolves: Option<String>,
    /// The notices it carries.
    pub notices: Vec<i64>,
    /// When composed.
    pub created_at: UnixMs,
}

/// A message not yet delivered nor given up.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMessage {
    /// The stored row.
    pub row: ComposedRow,
    /// Attempts so far.
    pub attempts: u32,
}

pub(super) fn write(tx: &mut dyn Sql, r: &OutboxRecord) -> Result<(), DbError> {
    match r {
        OutboxRecord::Notice { kind, json, at } => {
            tx.exec(
                "INSERT INTO slack_notices (kind, notice, at) VALUES (?1, ?2, ?3)",
                args![kind, json, at],
            )?;
        }
        OutboxRecord::Composed(m) => {
            tx.exec(
                "INSERT INTO slack_messages
                 (key, content, opens, resolves, notices, created_at, state, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0) ON CONFLICT (key) DO NOTHING",
                args![
                    m.key,
                    m.content,
                    m.opens,
                    m.resolves,
                    m.notices.len(),
                    m.created_at
                ],
            )?;
            for seq in &m.notices {
                tx.exec(
                    "UPDATE slack_notices SET message = ?1 WHERE seq = ?2 AND message IS NULL",
                    args![m.key, seq],
                )?;
            }
        }
        OutboxRecord::Attempt {
            key,
            attempts,
            error,
        } => {
            tx.exec(
                "UPDATE slack_messages SET attempts = ?2, last_error = ?3 WHERE key = ?1",
                args![key, attempts, error],
            )?;
        }
        OutboxRecord::Sent {
            key,
            ts,
            attempts,
            at,
        } => {
            tx.exec(
                "UPDATE slack_messages SET state = 'sent', ts = ?2, attempts = ?3, done_at = ?4
                 WHERE key = ?1",
                args![key, ts, attempts, at],
            )?;
        }
        OutboxRecord::GaveUp {
            key,
            error,
            attempts,
            at,
        } => {
            tx.exec(
                "UPDATE slack_messages SET state = 'gave_up', last_error = ?2, attempts = ?3,
                 done_at = ?4 WHERE key = ?1",
                args![key, error, attempts, at],
            )?;
        }
        OutboxRecord::Prune { before } => {
            tx.exec(
                "DELETE FROM slack_notices WHERE message IN
                 (SELECT key FROM slack_messages WHERE state != 'pending' AND done_at < ?1)",
                args![before],
            )?;
            tx.exec(
                "DELETE FROM slack_messages WHERE state != 'pending' AND done_at < ?1",
                args![before],
            )?;
        }
    }
    Ok(())
}

impl StoreReader {
    /// Notices not in any message yet, after `seq`, oldest first (at most `limit`), as
    /// `(seq, the notice's JSON)`.
    pub fn waiting_notices(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT seq, notice FROM slack_notices
                 WHERE message IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
                args![after, limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Messages composed and not yet delivered nor given up, oldest first.
    pub fn pending_messages(&self) -> Result<Vec<PendingMessage>, StoreError> {
        self.read(|db| {
            let rows: Vec<(ComposedRow, u32)> = db.rows(
                "SELECT key, content, opens, resolves, created_at, attempts FROM slack_messages
                 WHERE state = 'pending' ORDER BY created_at, key",
                args![],
                |r| {
                    Ok((
                        ComposedRow {
                            key: r.get(0)?,
                            content: r.get(1)?,
                            opens: r.get(2)?,
                            resolves: r.get(3)?,
                            notices: Vec::new(),
                            created_at: r.get(4)?,
                        },
                        r.get(5)?,
                    ))
                },
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for (mut row, attempts) in rows {
                row.notices = db.rows(
                    "SELECT seq FROM slack_notices WHERE message = ?1 ORDER BY seq",
                    args![row.key],
                    |r| r.get(0),
                )?;
                out.push(PendingMessage { row, attempts });
            }
            Ok(out)
        })
    }

    /// The delivered message that opened `thread`: its Slack ts and content.
    pub fn opened_thread(&self, thread: &str) -> Result<Option<(String, String)>, StoreError> {
        self.read(|db| {
            db.row(
                "SELECT ts, content FROM slack_messages
                 WHERE opens = ?1 AND state = 'sent' AND ts IS NOT NULL",
                args![thread],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Notices waiting for delivery: in no message yet, or in a pending one.
    pub fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.count(
            "SELECT count(*) FROM slack_notices n LEFT JOIN slack_messages m
             ON n.message = m.key WHERE n.message IS NULL OR m.state = 'pending'",
            args![],
        )
    }

    /// For the digest: notices of `kind` decided since `since`.
    pub fn notices_since(&self, kind: &str, since: UnixMs) -> Result<u64, StoreError> {
        self.count(
            "SELECT count(*) FROM slack_notices WHERE kind = ?1 AND at >= ?2",
            args![kind, since],
        )
    }
}
