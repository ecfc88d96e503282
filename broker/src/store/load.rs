//! Reading the state back at startup: the vehicles with their reasons, the decommissioned
//! ids, the SLI history and where it was saved up to.

use std::collections::HashMap;

use fleet_rules::{Reason, SliMinute, UnixMs, VehicleSnapshot};

use super::records::{
    OpenIncidents, MASS_LOSS_SINCE, MASS_LOSS_THRESHOLD, PAGE_SINCE, SLI_SAVED_TO, STOPPED_AT,
    TICKET_SINCE,
};
use super::sql::{args, DbError, Sql};
use super::{Store, StoreError};

/// Everything a restart needs.
#[derive(Debug, Default)]
pub struct Restored {
    /// The vehicles, for [`fleet_rules::Fleet::restore`].
    pub vehicles: Vec<VehicleSnapshot>,
    /// When each vehicle's desired state last changed, in `vehicles` order (for the
    /// retained state published again after the restart).
    pub changed_at: Vec<UnixMs>,
    /// Stored error counters, by vehicle.
    pub error_counts: Vec<(String, Vec<(String, u64)>)>,
    /// Ids that stay refused.
    pub decommissioned: Vec<String>,
    /// The SLI history, oldest first.
    pub sli: Vec<SliMinute>,
    /// Where the SLI history was saved up to: the broker is taken as down from here on.
    pub sli_saved_to: Option<UnixMs>,
    /// The journeys' SLI minutes.
    pub journey_minutes: Vec<fleet_rules::JourneyMinute>,
    /// The last clean stop, if the broker stopped cleanly after its last save.
    pub stopped_at: Option<UnixMs>,
    /// The incident and alerts open at the stop.
    pub open: OpenIncidents,
    /// The `fleet/events` payloads of the transitions stored in the last
    /// [`UNSURE_MS`] before the latest one, in order: after a crash some of them may have
    /// been stored but not published.
    pub last_events: Vec<String>,
}

/// How far back before the latest stored transition a crash may have left announcements
/// unpublished (the way from a commit to the upstream is milliseconds; this leaves room
/// for a publisher queue that was backed up).
pub const UNSURE_MS: u64 = 10_000;

impl Restored {
    /// True for a new, empty database.
    pub fn is_empty(&self) -> bool {
        self.vehicles.is_empty() && self.decommissioned.is_empty() && self.sli.is_empty()
    }
}

fn reason(
    kind: &str,
    code: String,
    by: Option<String>,
    note: Option<String>,
    since: UnixMs,
) -> Option<Reason> {
    match kind {
        "heartbeat_lost" => Some(Reason::HeartbeatLost { since }),
        "hardware_fault" => Some(Reason::HardwareFault { code, since }),
        "journey_failures" => Some(Reason::JourneyFailures {
            journey: code,
            failures: note.and_then(|n| n.parse().ok()).unwrap_or(0),
            since,
        }),
        "maintenance" => Some(Reason::Maintenance {
            by: by.unwrap_or_default(),
            note: note.unwrap_or_default(),
            since,
        }),
        _ => None,
    }
}

impl Store {
    /// Reads the state back; SLI minutes before `sli_from` (unix minute) are skipped.
    pub fn load(&mut self, sli_from: u64) -> Result<Restored, StoreError> {
        self.read(|db| read(db, sli_from))
    }
}

fn read(db: &mut dyn Sql, sli_from: u64) -> Result<Restored, DbError> {
    let mut out = Restored::default();
    let mut reasons: HashMap<String, Vec<Reason>> = HashMap::new();
    db.each(
        "SELECT vehicle, kind, code, operator, note, since FROM reasons",
        args![],
        &mut |r| {
            let vehicle: String = r.get(0)?;
            let kind: String = r.get(1)?;
            if let Some(reason) = reason(&kind, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?) {
                reasons.entry(vehicle).or_default().push(reason);
            } else {
                tracing::warn!(vehicle, kind, "stored reason of an unknown kind ignored");
            }
            Ok(true)
        },
    )?;

    let count = db
        .row("SELECT count(*) FROM vehicles", args![], |r| {
            r.get::<u64>(0)
        })?
        .unwrap_or(0);
    let count = usize::try_from(count).unwrap_or(0);
    out.vehicles.reserve(count);
    out.changed_at.reserve(count);
    db.each(
        "SELECT id, model, last_seen, changed_at, error_counts FROM vehicles",
        args![],
        &mut |r| {
            let id: String = r.get(0)?;
            if let Some(text) = r.get::<Option<String>>(4)? {
                out.error_counts.push((id.clone(), parse_counts(&text)));
            }
            out.vehicles.push(VehicleSnapshot {
                reasons: reasons.remove(&id).unwrap_or_default(),
                id,
                model: r.get(1)?,
                last_seen: r.get(2)?,
                // Kept apart in `Restored::error_counts`; `recover` puts them in.
                error_counts: Vec::new(),
            });
            out.changed_at.push(r.get(3)?);
            Ok(true)
        },
    )?;

    out.decommissioned = db.rows("SELECT id FROM decommissioned", args![], |r| r.get(0))?;
    out.last_events = db.rows(
        "SELECT event FROM transitions WHERE event IS NOT NULL
           AND at >= (SELECT coalesce(max(at), 0) FROM transitions) - ?1 ORDER BY seq",
        args![UNSURE_MS],
        |r| r.get(0),
    )?;
    out.sli = db.rows(
        "SELECT minute, good, valid, down_ms FROM sli_minutes WHERE minute >= ?1 ORDER BY minute",
        args![sli_from],
        |r| {
            Ok(SliMinute {
                minute: r.get(0)?,
                good: r.get(1)?,
                valid: r.get(2)?,
                down_ms: r.get(3)?,
            })
        },
    )?;
    out.journey_minutes = db.rows(
        "SELECT journey, minute, good, valid FROM journey_minutes WHERE minute >= ?1
         ORDER BY journey, minute",
        args![sli_from],
        |r| {
            Ok(fleet_rules::JourneyMinute {
                journey: r.get(0)?,
                minute: r.get(1)?,
                good: r.get(2)?,
                valid: r.get(3)?,
            })
        },
    )?;
    let mut meta = |key: &str| {
        db.row("SELECT value FROM meta WHERE key = ?1", args![key], |r| {
            r.get::<u64>(0)
        })
    };
    out.sli_saved_to = meta(SLI_SAVED_TO)?;
    out.stopped_at = meta(STOPPED_AT)?;
    out.open = OpenIncidents {
        mass_loss: meta(MASS_LOSS_SINCE)?
            .zip(meta(MASS_LOSS_THRESHOLD)?.map(|t| usize::try_from(t).unwrap_or(usize::MAX))),
        page_since: meta(PAGE_SINCE)?,
        ticket_since: meta(TICKET_SINCE)?,
    };
    Ok(out)
}

/// `{"CODE": n, ...}`; anything else counts as no counters.
fn parse_counts(text: &str) -> Vec<(String, u64)> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
        Ok(map) => map
            .into_iter()
            .filter_map(|(code, n)| n.as_u64().map(|n| (code, n)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The fleet rebuilt from what was stored, and what the restart found.
pub struct Recovery {
    /// The fleet: faults and maintenance as they were, in-service vehicles in their grace.
    pub fleet: fleet_rules::Fleet,
    /// Each restored vehicle's id and last change, for republishing its retained state.
    pub changed_at: Vec<(Box<str>, UnixMs)>,
    /// The broker's downtime accounted in the SLI history (0 on a first start).
    pub downtime_ms: u64,
    /// Where the stored SLI history ended (the downtime starts there).
    pub sli_saved_to: Option<UnixMs>,
    /// Vehicles restored.
    pub vehicles: usize,
    /// Of which out of service.
    pub out_of_service: usize,
    /// Ids that stay decommissioned.
    pub decommissioned: usize,
    /// The broker had stopped cleanly (else it crashed or was killed).
    pub clean_stop: bool,
    /// The incident and alerts open at the stop, which go on.
    pub open: OpenIncidents,
    /// After a crash: the last announcements, to publish again (identical: a consumer that
    /// saw one drops the copy). None after a clean stop, which published everything.
    pub unsure_events: Vec<String>,
}

/// Rebuilds the fleet at `now` from `restored` (and what a standby `watched`).
pub fn recover(
    rules: fleet_rules::RulesConfig,
    restored: Restored,
    watched: Option<fleet_rules::Watched>,
    now: UnixMs,
    downtime_is_bad: bool,
) -> Recovery {
    let Restored {
        mut vehicles,
        changed_at,
        error_counts,
        decommissioned,
        sli,
        sli_saved_to,
        journey_minutes,
        stopped_at,
        open,
        last_events,
    } = restored;
    let out_of_service = vehicles.iter().filter(|v| !v.reasons.is_empty()).count();
    let ids: Vec<(Box<str>, UnixMs)> = vehicles
        .iter()
        .map(|v| Box::from(v.id.as_str()))
        .zip(changed_at)
        .collect();
    let count = vehicles.len();
    let mut error_counts: HashMap<String, Vec<(String, u64)>> = error_counts.into_iter().collect();
    for v in &mut vehicles {
        v.error_counts = error_counts.remove(&v.id).unwrap_or_default();
    }
    let decommissioned_count = decommissioned.len();
    let stored = fleet_rules::Restore {
        vehicles,
        decommissioned,
        sli: sli_saved_to.map(|saved_to| fleet_rules::SliHistory {
            minutes: sli,
            saved_to,
            downtime_is_bad,
        }),
        alerts_firing: [
            (open.page_since, fleet_rules::AlertSeverity::Page),
            (open.ticket_since, fleet_rules::AlertSeverity::Ticket),
        ]
        .into_iter()
        .filter_map(|(since, severity)| since.map(|_| severity))
        .collect(),
        mass_loss: open
            .mass_loss
            .map(|(started_at, threshold)| fleet_rules::OpenIncident {
                started_at,
                threshold,
            }),
        watched,
    };
    let clean_stop = stopped_at.is_some() && stopped_at >= sli_saved_to;
    let fleet_rules::RestoredFleet {
        mut fleet,
        downtime_ms,
    } = fleet_rules::Fleet::restore(rules, stored, now);
    fleet.restore_journey_minutes(journey_minutes);
    Recovery {
        fleet,
        changed_at: ids,
        downtime_ms,
        sli_saved_to,
        vehicles: count,
        out_of_service,
        decommissioned: decommissioned_count,
        clean_stop,
        open,
        unsure_events: if clean_stop { Vec::new() } else { last_events },
    }
}
