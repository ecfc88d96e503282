//! The SLI history on the page: per day over the window, per hour over the last two days,
//! the error budget day by day, and the worst hours, from the stored per-minute buckets
//! (at most one row per minute of the window, read once per page view).

use std::collections::BTreeMap;

use fleet_rules::SliReport;
use maud::{html, Markup};

use super::chart::{bars, Bar};
use super::text::Words;
use crate::api::history::History;

const MINUTE_MS: u64 = 60_000;
const HOUR: u64 = 60;
const DAY: u64 = 24 * 60;
/// Hours shown in the per-hour chart.
const HOURS_SHOWN: u64 = 48;
/// Worst hours listed.
const WORST: usize = 5;

/// Good and valid vehicle-ms of one period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Period {
    good: u64,
    valid: u64,
}

impl Period {
    fn sli(&self) -> Option<f64> {
        (self.valid > 0).then(|| self.good as f64 / self.valid as f64)
    }
}

/// The history as the page shows it.
#[derive(Debug, Default)]
pub struct SliHistory {
    /// By day number (minute / 1440).
    days: BTreeMap<u64, Period>,
    /// By hour number (minute / 60).
    hours: BTreeMap<u64, Period>,
    /// Incidents of the window, newest first: `(kind, started, ended)`.
    incidents: Vec<(String, u64, Option<u64>)>,
    /// Whether the store could be read.
    unavailable: bool,
}

/// Incidents listed.
const INCIDENTS: usize = 20;

/// Reads the minutes of the window (those already stored: they are saved every minute or
/// so, so the last one or two may be missing).
pub async fn load(history: &History, r: &SliReport) -> SliHistory {
    let from = r.at.saturating_sub(r.window_ms) / MINUTE_MS;
    let mut out = SliHistory::default();
    match history.sli_minutes(from).await {
        Ok(minutes) => {
            for (minute, good, valid, _down) in minutes {
                let d = out.days.entry(minute / DAY).or_default();
                d.good += good;
                d.valid += valid;
                let h = out.hours.entry(minute / HOUR).or_default();
                h.good += good;
                h.valid += valid;
            }
        }
        Err(e) => {
            tracing::warn!("SLO page: the stored SLI history cannot be read: {e}");
            out.unavailable = true;
        }
    }
    match history
        .incidents(r.at.saturating_sub(r.window_ms), INCIDENTS)
        .await
    {
        Ok(incidents) => out.incidents = incidents,
        Err(e) => {
            tracing::warn!("SLO page: the incident log cannot be read: {e}");
            out.unavailable = true;
        }
    }
    out
}

fn incident_kind<'a>(w: &Words, kind: &'a str) -> &'a str {
    match kind {
        "mass_loss" => w.t(
            "many vehicles silent at once (mass loss)",
            "大規模な通信途絶",
        ),
        "page" => w.t(
            "page alert: budget burning fast",
            "ページ: バジェットの急速な消費",
        ),
        "ticket" => w.t(
            "ticket alert: budget overspent slowly",
            "チケット: バジェットの緩やかな超過",
        ),
        "blind" => w.t(
            "the broker could not see the fleet",
            "ブローカーが車両を観測できず",
        ),
        other => other,
    }
}

pub fn render(w: &Words, h: &SliHistory, r: &SliReport) -> Markup {
    let now_minute = r.at / MINUTE_MS;
    let first_day = r.at.saturating_sub(r.window_ms) / MINUTE_MS / DAY;
    let day_label = |d: u64| w.time(d * DAY * MINUTE_MS)[..10].to_owned();
    let days: Vec<Bar> = (first_day..=now_minute / DAY)
        .map(|d| Bar {
            label: day_label(d),
            value: h.days.get(&d).and_then(Period::sli),
        })
        .collect();
    let first_hour = (now_minute / HOUR).saturating_sub(HOURS_SHOWN - 1);
    let hours: Vec<Bar> = (first_hour..=now_minute / HOUR)
        .map(|hr| Bar {
            label: w.time(hr * HOUR * MINUTE_MS)[..16].to_owned(),
            value: h.hours.get(&hr).and_then(Period::sli),
        })
        .collect();
    // The budget day by day: what is left after each day, of the budget of the window as
    // the report counts it (the part of the window not yet seen counts the fleet of now);
    // days before the history have no bar.
    let total_valid: u64 = h.days.values().map(|p| p.valid).sum();
    let unseen_ms = r.window_ms.saturating_sub(r.covered_ms);
    let allowance = ((1.0 - r.target) * (total_valid as f64 + r.fleet as f64 * unseen_ms as f64))
        .max(f64::MIN_POSITIVE);
    let first_data = h.days.keys().next().copied().unwrap_or(u64::MAX);
    let mut spent = 0.0;
    let budget: Vec<Bar> = (first_day..=now_minute / DAY)
        .map(|d| {
            let p = h.days.get(&d).copied().unwrap_or_default();
            spent += p.valid.saturating_sub(p.good) as f64;
            Bar {
                label: day_label(d),
                value: (d >= first_data).then(|| (1.0 - spent / allowance).clamp(0.0, 1.0)),
            }
        })
        .collect();
    let mut worst: Vec<(u64, f64)> = h
        .hours
        .iter()
        .filter_map(|(hr, p)| p.sli().map(|s| (*hr, s)))
        .filter(|(_, s)| *s < 1.0)
        .collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    worst.truncate(WORST);
    // The lowest bar (or the target) a fifth of the way up, so both stay visible.
    let lowest = days
        .iter()
        .chain(&hours)
        .filter_map(|b| b.value)
        .fold(r.target, f64::min);
    let floor = (1.0 - 1.25 * (1.0 - lowest)).max(0.0);
    html! {
        section {
            h2 { (w.t("History", "履歴")) }
            @if h.unavailable {
                p.note { (w.t("The stored history cannot be read right now.", "保存された履歴を今は読めません。")) }
            } @else if h.hours.is_empty() {
                p.note { (w.t("No history stored yet: the first minutes are saved within a minute or two of the start.", "履歴はまだ保存されていません（起動から1〜2分で保存されます）。")) }
            } @else {
                h3 { (w.t("Error budget left, day by day", "日ごとのエラーバジェット残量")) }
                (bars(w.t("Error budget left", "エラーバジェット残量"), &budget, 0.0, 0.0))
                h3 { (w.t("In service, per day (the dashed line is the target)", "日ごとの運用率（破線は目標）")) }
                (bars(w.t("SLI per day", "日ごとの SLI"), &days, floor, r.target))
                h3 { (w.t("In service, per hour, last 48 hours", "時間ごとの運用率（直近48時間）")) }
                (bars(w.t("SLI per hour", "時間ごとの SLI"), &hours, floor, r.target))
                h3 { (w.t("Incidents in the window", "期間内のインシデント")) }
                @if h.incidents.is_empty() {
                    p { (w.t("None.", "ありません。")) }
                } @else {
                    table data-testid="incidents" {
                        @for (kind, started, ended) in &h.incidents {
                            tr {
                                td { (incident_kind(w, kind)) }
                                td { (w.time(*started)) }
                                td { @match ended {
                                    Some(end) => { (w.span_ms(end.saturating_sub(*started))) },
                                    None => { (w.t("ongoing", "継続中")) },
                                } }
                            }
                        }
                    }
                }
                @if !worst.is_empty() {
                    h3 { (w.t("Worst hours", "悪かった時間帯")) }
                    table {
                        @for (hr, sli) in &worst {
                            tr { td { (w.time(hr * HOUR * MINUTE_MS)[..16]) } td.num { (format!("{:.2} %", sli * 100.0)) } }
                        }
                    }
                }
            }
        }
    }
}
