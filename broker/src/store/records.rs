//! What the engine asks the store to keep, and how each record is written (the same
//! statements on SQLite and PostgreSQL). One batch of records is one transaction; every
//! statement is prepared once per connection and cached.

use super::sql::{args, DbError, Sql};
use fleet_rules::{
    Cause, Command, CommandKind, Reason, ReasonChange, ServiceState, SliMinute, Transition, UnixMs,
    VehicleView,
};

/// One thing to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A vehicle joined the fleet.
    Registered {
        /// The vehicle.
        vehicle: String,
        /// When.
        at: UnixMs,
    },
    /// A change of a vehicle's reasons (or its decommissioning): the vehicle's reasons
    /// become the transition's, and the transition is appended to the audit log, with the
    /// `fleet/events` payload announcing it (sent again after a crash, see
    /// [`crate::store::Recovery::unsure_events`]).
    Transition(Transition, Option<String>),
    /// A command was sent.
    CommandSent {
        /// Its unique id.
        id: String,
        /// The command.
        command: Command,
    },
    /// A vehicle acknowledged a command.
    CommandAck {
        /// The command id.
        id: String,
        /// The acknowledging vehicle (an ack of another vehicle's command changes nothing).
        vehicle: String,
        /// Applied or not.
        ok: bool,
        /// The vehicle's error message.
        error: Option<String>,
        /// When received.
        at: UnixMs,
    },
    /// A checkpoint chunk: last seen, model and error counters of vehicles that talked.
    Seen(Vec<VehicleView>),
    /// The SLI history up to `saved_to` (the last minute partial).
    Sli {
        /// Minutes, oldest first.
        minutes: Vec<SliMinute>,
        /// Integrated up to here.
        saved_to: UnixMs,
        /// Minutes older than this are deleted.
        keep_from: u64,
    },
    /// Journeys' SLI minutes (the last partial), with the minutes older than `keep_from`
    /// deleted.
    JourneySli {
        /// Minutes that counted a request.
        minutes: Vec<fleet_rules::JourneyMinute>,
        /// Minutes older than this are deleted.
        keep_from: u64,
    },
    /// Command log entries issued before this are deleted.
    PruneCommands {
        /// Unix ms.
        before: UnixMs,
    },
    /// A change to the notification outbox.
    Outbox(super::OutboxRecord),
    /// A mass-loss incident or a burn-rate alert opened or closed: kept so a restart goes
    /// on with it (and the notifier threads its end under its start).
    Incident(IncidentChange),
    /// The broker stopped cleanly at this time.
    Stopped {
        /// Unix ms.
        at: UnixMs,
    },
}

/// A change of what is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentChange {
    /// A mass-loss incident started at `at`, over `threshold` silent vehicles.
    MassLossOpened {
        /// When.
        at: UnixMs,
        /// The threshold crossed.
        threshold: usize,
    },
    /// The incident ended at `at`.
    MassLossClosed {
        /// When.
        at: UnixMs,
    },
    /// The page (else ticket) alert fired at `at`.
    AlertFiring {
        /// Page, else ticket.
        page: bool,
        /// When.
        at: UnixMs,
    },
    /// The page (else ticket) alert resolved at `at`.
    AlertResolved {
        /// Page, else ticket.
        page: bool,
        /// When.
        at: UnixMs,
    },
    /// The broker could not see the fleet from `since` (logged only: a restart does not
    /// go on with it).
    BlindOpened {
        /// When the view was lost.
        since: UnixMs,
    },
    /// The view came back at `at`.
    BlindClosed {
        /// When.
        at: UnixMs,
    },
}

/// What was open when the broker stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenIncidents {
    /// The mass-loss incident: when it started, its threshold.
    pub mass_loss: Option<(UnixMs, usize)>,
    /// When the page alert fired.
    pub page_since: Option<UnixMs>,
    /// When the ticket alert fired.
    pub ticket_since: Option<UnixMs>,
}

/// Meta keys.
pub(super) const SLI_SAVED_TO: &str = "sli_saved_to";
pub(super) const STOPPED_AT: &str = "stopped_at";
pub(super) const MASS_LOSS_SINCE: &str = "mass_loss_since";
pub(super) const MASS_LOSS_THRESHOLD: &str = "mass_loss_threshold";
pub(super) const PAGE_SINCE: &str = "alert_page_since";
pub(super) const TICKET_SINCE: &str = "alert_ticket_since";

pub(super) fn state_name(s: ServiceState) -> &'static str {
    match s {
        ServiceState::InService => "in_service",
        ServiceState::OutOfService => "out_of_service",
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Plain data without maps keyed by non-strings: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

pub(super) fn write(tx: &mut dyn Sql, record: &Record) -> Result<(), DbError> {
    match record {
        Record::Registered { vehicle, at } => {
            tx.exec(
                "INSERT INTO vehicles (id, model, last_seen, changed_at) VALUES (?1, NULL, ?2, ?2)
                 ON CONFLICT (id) DO NOTHING",
                args![vehicle, at],
            )?;
        }
        Record::Transition(t, event) => transition(tx, t, event.as_deref())?,
        Record::CommandSent { id, command } => {
            let kind = match command.command {
                CommandKind::ServiceIn => "service_in",
                CommandKind::ServiceOut => "service_out",
            };
            tx.exec(
                "INSERT INTO commands (id, vehicle, command, reasons, resend, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                args![
                    id,
                    command.vehicle,
                    kind,
                    json(&command.reasons),
                    command.resend,
                    command.issued_at
                ],
            )?;
        }
        Record::CommandAck {
            id,
            vehicle,
            ok,
            error,
            at,
        } => {
            tx.exec(
                "UPDATE commands SET acked_at = ?3, ok = ?4, error = ?5
                 WHERE id = ?1 AND vehicle = ?2 AND acked_at IS NULL",
                args![id, vehicle, at, ok, error],
            )?;
        }
        Record::Seen(views) => {
            for v in views {
                let counts = (!v.error_counts.is_empty()).then(|| {
                    let map: serde_json::Map<String, serde_json::Value> = v
                        .error_counts
                        .iter()
                        .map(|(code, n)| (code.clone(), (*n).into()))
                        .collect();
                    json(&map)
                });
                tx.exec(
                    "UPDATE vehicles SET
                     last_seen = CASE WHEN ?2 > last_seen THEN ?2 ELSE last_seen END,
                     model = coalesce(?3, model), error_counts = coalesce(?4, error_counts)
                     WHERE id = ?1",
                    args![v.id, v.last_seen, v.model, counts],
                )?;
            }
        }
        Record::Sli {
            minutes,
            saved_to,
            keep_from,
        } => {
            for m in minutes {
                tx.exec(
                    "INSERT INTO sli_minutes (minute, good, valid, down_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (minute) DO UPDATE
                     SET good = excluded.good, valid = excluded.valid, down_ms = excluded.down_ms",
                    args![m.minute, m.good, m.valid, m.down_ms],
                )?;
            }
            tx.exec(
                "DELETE FROM sli_minutes WHERE minute < ?1",
                args![keep_from],
            )?;
            set_meta(tx, SLI_SAVED_TO, *saved_to)?;
        }
        Record::JourneySli { minutes, keep_from } => {
            for m in minutes {
                tx.exec(
                    "INSERT INTO journey_minutes (journey, minute, good, valid) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (journey, minute) DO UPDATE
                     SET good = excluded.good, valid = excluded.valid",
                    args![m.journey, m.minute, m.good, m.valid],
                )?;
            }
            tx.exec(
                "DELETE FROM journey_minutes WHERE minute < ?1",
                args![keep_from],
            )?;
        }
        Record::PruneCommands { before } => {
            tx.exec("DELETE FROM commands WHERE issued_at < ?1", args![before])?;
        }
        Record::Outbox(r) => super::outbox::write(tx, r)?,
        Record::Incident(change) => incident(tx, *change)?,
        Record::Stopped { at } => set_meta(tx, STOPPED_AT, *at)?,
    }
    Ok(())
}

fn incident(tx: &mut dyn Sql, change: IncidentChange) -> Result<(), DbError> {
    let alert_key = |page| if page { PAGE_SINCE } else { TICKET_SINCE };
    let alert_kind = |page| if page { "page" } else { "ticket" };
    match change {
        IncidentChange::MassLossOpened { at, threshold } => {
            set_meta(tx, MASS_LOSS_SINCE, at)?;
            set_meta(tx, MASS_LOSS_THRESHOLD, threshold as u64)?;
            log_opened(tx, "mass_loss", at)
        }
        IncidentChange::MassLossClosed { at } => {
            clear_meta(tx, MASS_LOSS_SINCE)?;
            clear_meta(tx, MASS_LOSS_THRESHOLD)?;
            log_closed(tx, "mass_loss", at)
        }
        IncidentChange::AlertFiring { page, at } => {
            set_meta(tx, alert_key(page), at)?;
            log_opened(tx, alert_kind(page), at)
        }
        IncidentChange::AlertResolved { page, at } => {
            clear_meta(tx, alert_key(page))?;
            log_closed(tx, alert_kind(page), at)
        }
        IncidentChange::BlindOpened { since } => log_opened(tx, "blind", since),
        IncidentChange::BlindClosed { at } => log_closed(tx, "blind", at),
    }
}

/// The incident log: a row per incident; one of a kind is open at a time.
fn log_opened(tx: &mut dyn Sql, kind: &str, at: UnixMs) -> Result<(), DbError> {
    log_closed(tx, kind, at)?;
    tx.exec(
        "INSERT INTO incidents (kind, started_at) VALUES (?1, ?2)",
        args![kind, at],
    )?;
    Ok(())
}

fn log_closed(tx: &mut dyn Sql, kind: &str, at: UnixMs) -> Result<(), DbError> {
    tx.exec(
        "UPDATE incidents SET ended_at = CASE WHEN ?2 > started_at THEN ?2 ELSE started_at END
         WHERE kind = ?1 AND ended_at IS NULL",
        args![kind, at],
    )?;
    Ok(())
}

fn clear_meta(tx: &mut dyn Sql, key: &str) -> Result<(), DbError> {
    tx.exec("DELETE FROM meta WHERE key = ?1", args![key])?;
    Ok(())
}

pub(super) fn set_meta(tx: &mut dyn Sql, key: &str, value: UnixMs) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        args![key, value],
    )?;
    Ok(())
}

fn transition(tx: &mut dyn Sql, t: &Transition, event: Option<&str>) -> Result<(), DbError> {
    let (change, reason) = match &t.change {
        ReasonChange::Set(r) => ("set", Some(json(r))),
        ReasonChange::Cleared(r) => ("cleared", Some(json(r))),
        ReasonChange::Decommissioned => ("decommissioned", None),
    };
    let (cause, operator, note) = match &t.cause {
        Cause::Rule => ("rule", None, None),
        Cause::Operator { name, note } => ("operator", Some(name.as_str()), Some(note.as_str())),
    };
    tx.exec(
        "INSERT INTO transitions
         (vehicle, from_state, to_state, change, reason, reasons, cause, operator, note, at, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        args![
            t.vehicle,
            state_name(t.from),
            state_name(t.to),
            change,
            reason,
            json(&t.reasons),
            cause,
            operator,
            note,
            t.at,
            event
        ],
    )?;
    tx.exec("DELETE FROM reasons WHERE vehicle = ?1", args![t.vehicle])?;
    if t.change == ReasonChange::Decommissioned {
        tx.exec("DELETE FROM vehicles WHERE id = ?1", args![t.vehicle])?;
        tx.exec(
            "INSERT INTO decommissioned (id, operator, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET operator = excluded.operator, at = excluded.at",
            args![t.vehicle, operator.unwrap_or(""), t.at],
        )?;
        return Ok(());
    }
    tx.exec(
        "INSERT INTO vehicles (id, model, last_seen, changed_at) VALUES (?1, NULL, ?2, ?2)
         ON CONFLICT (id) DO UPDATE SET changed_at = excluded.changed_at",
        args![t.vehicle, t.at],
    )?;
    for r in &t.reasons {
        let none: Option<&str> = None;
        let failures_note: String;
        let (kind, code, by, note, since) = match r {
            Reason::HeartbeatLost { since } => ("heartbeat_lost", "", none, none, since),
            Reason::HardwareFault { code, since } => {
                ("hardware_fault", code.as_str(), none, none, since)
            }
            // The code column holds the journey, the note its failure count.
            Reason::JourneyFailures {
                journey,
                failures,
                since,
            } => {
                failures_note = failures.to_string();
                (
                    "journey_failures",
                    journey.as_str(),
                    none,
                    Some(failures_note.as_str()),
                    since,
                )
            }
            Reason::Maintenance { by, note, since } => (
                "maintenance",
                "",
                Some(by.as_str()),
                Some(note.as_str()),
                since,
            ),
        };
        // Of a (kind, code) listed twice, the last entry stays.
        tx.exec(
            "INSERT INTO reasons (vehicle, kind, code, operator, note, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (vehicle, kind, code) DO UPDATE SET operator = excluded.operator,
             note = excluded.note, since = excluded.since",
            args![t.vehicle, kind, code, by, note, since],
        )?;
    }
    Ok(())
}
