//! What the channel hears about: each notification with the context a person needs to act
//! on it. Stored in the outbox as JSON, so the same message can be composed again after a
//! restart.

use fleet_rules::{AlertSeverity, AlertState, Notification, SliReport, UnixMs};
use serde::{Deserialize, Serialize};

/// One notification waiting to be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Taken out of service for a hardware fault.
    HardwareFault {
        /// The vehicle.
        vehicle: String,
        /// The error code.
        code: String,
        /// Reports within the window when the threshold was crossed.
        reports: u32,
        /// The rule's window.
        window_ms: u64,
        /// Model, if known.
        model: Option<String>,
        /// Battery in percent, if reported.
        battery: Option<u8>,
        /// When (the vehicle was last heard from at this moment).
        at: UnixMs,
    },
    /// Taken out of service because its journey requests (unlocks) kept failing.
    JourneyFailures {
        /// The vehicle.
        vehicle: String,
        /// The journey.
        journey: String,
        /// Failed or timed-out requests within the window.
        failures: u32,
        /// The rule's window.
        window_ms: u64,
        /// Only a person brings it back (else its next success does).
        manual: bool,
        /// Model, if known.
        model: Option<String>,
        /// Battery in percent, if reported.
        battery: Option<u8>,
        /// When.
        at: UnixMs,
    },
    /// Keeps crossing its heartbeat timeout.
    Flapping {
        /// The vehicle.
        vehicle: String,
        /// Heartbeat losses within the window.
        flips: u32,
        /// The window.
        window_ms: u64,
        /// When.
        at: UnixMs,
    },
    /// A person took a vehicle out or put it back.
    Manual {
        /// The vehicle.
        vehicle: String,
        /// Taken out (else put back).
        out: bool,
        /// Who.
        operator: String,
        /// Their note.
        note: String,
        /// After a service-in: the reasons that still keep it out.
        still_out_for: Vec<String>,
        /// When.
        at: UnixMs,
    },
    /// Much of the fleet went silent at once.
    MassLossStarted {
        /// The incident's thread key.
        incident: String,
        /// Vehicles silent within the window.
        silent: usize,
        /// Active fleet.
        fleet: usize,
        /// The threshold crossed.
        threshold: usize,
        /// A few silent vehicles.
        sample: Vec<String>,
        /// Service-outs held.
        holding: bool,
        /// When.
        at: UnixMs,
    },
    /// The mass-loss incident ended.
    MassLossEnded {
        /// The incident's thread key (its start).
        incident: String,
        /// Vehicles of the wave that came back.
        recovered: usize,
        /// Still silent, now taken out as usual.
        still_silent: usize,
        /// When.
        at: UnixMs,
    },
    /// The broker lost its view of the fleet (the upstream link) for long.
    BlindStarted {
        /// The stretch's thread key.
        incident: String,
        /// When the view was lost.
        since: UnixMs,
        /// When.
        at: UnixMs,
    },
    /// The view is back.
    BlindEnded {
        /// The stretch's thread key (its start).
        incident: String,
        /// How long the broker was blind.
        blind_ms: u64,
        /// When.
        at: UnixMs,
    },
    /// A burn-rate alert fired or resolved.
    SloAlert {
        /// The thread key of the firing (a resolution replies to it).
        thread: String,
        /// The journey whose SLO it is; none: the fleet-in-service SLO.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        journey: Option<String>,
        /// Page, else ticket.
        page: bool,
        /// Firing, else resolved.
        firing: bool,
        /// Burn rates by window name, 5m to 3d.
        burn: Vec<(String, f64)>,
        /// SLI over the SLO window.
        window_sli: f64,
        /// The SLO target.
        target: f64,
        /// The SLO window.
        window_ms: u64,
        /// Share of the error budget left.
        budget_remaining: f64,
        /// When.
        at: UnixMs,
    },
    /// The daily digest.
    Digest(super::digest::Digest),
}

/// How notices become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Gathered with others of the same kind within the grouping window.
    Vehicles(&'static str),
    /// A message of its own, sent at once.
    Alone,
}

impl Notice {
    /// The kind, as stored and in idempotency keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::HardwareFault { .. } => "hardware_fault",
            Notice::JourneyFailures { .. } => "journey_failures",
            Notice::Flapping { .. } => "flapping",
            Notice::Manual { .. } => "manual",
            Notice::MassLossStarted { .. } => "mass_loss_started",
            Notice::MassLossEnded { .. } => "mass_loss_ended",
            Notice::BlindStarted { .. } => "blind_started",
            Notice::BlindEnded { .. } => "blind_ended",
            Notice::SloAlert { .. } => "slo_alert",
            Notice::Digest(_) => "digest",
        }
    }

    /// Whether it waits for others of its kind.
    pub fn grouping(&self) -> Grouping {
        match self {
            Notice::HardwareFault { .. }
            | Notice::JourneyFailures { .. }
            | Notice::Flapping { .. }
            | Notice::Manual { .. } => Grouping::Vehicles(self.kind()),
            _ => Grouping::Alone,
        }
    }

    /// When it was decided.
    pub fn at(&self) -> UnixMs {
        match self {
            Notice::HardwareFault { at, .. }
            | Notice::JourneyFailures { at, .. }
            | Notice::Flapping { at, .. }
            | Notice::Manual { at, .. }
            | Notice::MassLossStarted { at, .. }
            | Notice::MassLossEnded { at, .. }
            | Notice::BlindStarted { at, .. }
            | Notice::BlindEnded { at, .. }
            | Notice::SloAlert { at, .. } => *at,
            Notice::Digest(d) => d.at,
        }
    }

    /// The thread this message opens (bot token: later replies go under it).
    pub fn opens(&self) -> Option<&str> {
        match self {
            Notice::MassLossStarted { incident, .. } | Notice::BlindStarted { incident, .. } => {
                Some(incident)
            }
            Notice::SloAlert {
                thread,
                firing: true,
                ..
            } => Some(thread),
            _ => None,
        }
    }

    /// The thread this message answers; the original is marked resolved.
    pub fn resolves(&self) -> Option<&str> {
        match self {
            Notice::MassLossEnded { incident, .. } | Notice::BlindEnded { incident, .. } => {
                Some(incident)
            }
            Notice::SloAlert {
                thread,
                firing: false,
                ..
            } => Some(thread),
            _ => None,
        }
    }
}

/// Remembers open incidents so that their end names the thread their start opened.
#[derive(Debug, Default)]
pub struct Threads {
    mass_loss: Option<String>,
    blind: Option<String>,
    page: Option<String>,
    ticket: Option<String>,
    /// Journey alerts firing: (journey, page) to their thread.
    journeys: std::collections::HashMap<(String, bool), String>,
}

/// Burn rates by window name, 5m to 3d.
fn burn_list(burn: &fleet_rules::BurnRates) -> Vec<(String, f64)> {
    [
        ("5m", burn.m5),
        ("30m", burn.m30),
        ("1h", burn.h1),
        ("6h", burn.h6),
        ("1d", burn.d1),
        ("3d", burn.d3),
    ]
    .into_iter()
    .map(|(w, r)| (w.to_owned(), r))
    .collect()
}

/// The thread key of the mass-loss incident that started at `at`.
fn mass_loss_thread(at: UnixMs) -> String {
    format!("mass_loss-{at}")
}

/// The thread key of the page (else ticket) alert that fired at `at`.
fn alert_thread(page: bool, at: UnixMs) -> String {
    format!("slo_{}-{at}", if page { "page" } else { "ticket" })
}

impl Threads {
    /// The threads of what was open when the broker stopped: their ends answer them.
    pub fn reopened(open: &crate::store::OpenIncidents) -> Threads {
        Threads {
            mass_loss: open.mass_loss.map(|(at, _)| mass_loss_thread(at)),
            blind: None,
            page: open.page_since.map(|at| alert_thread(true, at)),
            ticket: open.ticket_since.map(|at| alert_thread(false, at)),
            journeys: Default::default(),
        }
    }

    /// The notice for a rules notification. `report` gives the SLI right after it (only
    /// an SLO alert asks).
    pub fn notice(&mut self, n: &Notification, report: impl FnOnce() -> SliReport) -> Notice {
        match n {
            Notification::HardwareFault {
                vehicle,
                code,
                reports,
                window_ms,
                model,
                battery,
                at,
            } => Notice::HardwareFault {
                vehicle: vehicle.clone(),
                code: code.clone(),
                reports: *reports,
                window_ms: *window_ms,
                model: model.clone(),
                battery: *battery,
                at: *at,
            },
            Notification::JourneyFailures {
                vehicle,
                journey,
                failures,
                window_ms,
                manual,
                model,
                battery,
                at,
            } => Notice::JourneyFailures {
                vehicle: vehicle.clone(),
                journey: journey.clone(),
                failures: *failures,
                window_ms: *window_ms,
                manual: *manual,
                model: model.clone(),
                battery: *battery,
                at: *at,
            },
            Notification::JourneyAlert {
                journey,
                severity,
                state,
                sli,
                at,
            } => {
                let page = *severity == AlertSeverity::Page;
                let firing = *state == AlertState::Firing;
                let slot = (journey.clone(), page);
                let thread = if firing {
                    let key = format!("journey_{journey}_{}", alert_thread(page, *at));
                    self.journeys.insert(slot, key.clone());
                    key
                } else {
                    self.journeys.remove(&slot).unwrap_or_default()
                };
                Notice::SloAlert {
                    thread,
                    journey: Some(journey.clone()),
                    page,
                    firing,
                    burn: burn_list(&sli.burn),
                    window_sli: sli.window_sli,
                    target: sli.target,
                    window_ms: sli.window_ms,
                    budget_remaining: sli.error_budget_remaining,
                    at: *at,
                }
            }
            Notification::Flapping {
                vehicle,
                flips,
                window_ms,
                at,
            } => Notice::Flapping {
                vehicle: vehicle.clone(),
                flips: *flips,
                window_ms: *window_ms,
                at: *at,
            },
            Notification::MassLossStarted {
                silent,
                fleet,
                threshold,
                sample,
                holding,
                at,
            } => {
                let incident = mass_loss_thread(*at);
                self.mass_loss = Some(incident.clone());
                Notice::MassLossStarted {
                    incident,
                    silent: *silent,
                    fleet: *fleet,
                    threshold: *threshold,
                    sample: sample.clone(),
                    holding: *holding,
                    at: *at,
                }
            }
            Notification::MassLossEnded {
                recovered,
                still_silent,
                at,
            } => Notice::MassLossEnded {
                incident: self.mass_loss.take().unwrap_or_default(),
                recovered: *recovered,
                still_silent: *still_silent,
                at: *at,
            },
            Notification::BlindStarted { since, at } => {
                let incident = format!("blind-{since}");
                self.blind = Some(incident.clone());
                Notice::BlindStarted {
                    incident,
                    since: *since,
                    at: *at,
                }
            }
            Notification::BlindEnded {
                since,
                blind_ms,
                at,
            } => Notice::BlindEnded {
                incident: self
                    .blind
                    .take()
                    .unwrap_or_else(|| format!("blind-{since}")),
                blind_ms: *blind_ms,
                at: *at,
            },
            Notification::SloAlert {
                severity,
                state,
                burn,
                at,
            } => {
                let page = *severity == AlertSeverity::Page;
                let slot = if page {
                    &mut self.page
                } else {
                    &mut self.ticket
                };
                let firing = *state == AlertState::Firing;
                let thread = if firing {
                    let key = alert_thread(page, *at);
                    *slot = Some(key.clone());
                    key
                } else {
                    slot.take().unwrap_or_default()
                };
                let report = report();
                Notice::SloAlert {
                    thread,
                    journey: None,
                    page,
                    firing,
                    burn: burn_list(burn),
                    window_sli: report.window_sli,
                    target: report.target,
                    window_ms: report.window_ms,
                    budget_remaining: report.error_budget_remaining,
                    at: *at,
                }
            }
        }
    }
}
