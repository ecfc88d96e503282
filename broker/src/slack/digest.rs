//! The daily digest for people who do not read alerts: the share of vehicle-time in
//! service over the last day, the error budget left, and what used it, in plain words.
//! Computed from the store (SLI minutes, the transition log, the outbox).

use fleet_rules::{SliReport, UnixMs};
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, StoreReader};

const DAY_MS: u64 = 24 * 3_600_000;

/// One day's digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// The end of the day it covers.
    pub at: UnixMs,
    /// Good / valid vehicle-time over the day (1.0 with no valid time).
    pub day_sli: f64,
    /// The SLO target.
    pub target: f64,
    /// The SLO window.
    pub window_ms: u64,
    /// Share of the window's error budget left.
    pub budget_remaining: f64,
    /// Share of the window's error budget the day used.
    pub day_budget_used: f64,
    /// Vehicles taken out for silence during the day.
    pub heartbeat_lost: u64,
    /// Hardware faults during the day by code, most first.
    pub faults: Vec<(String, u64)>,
    /// Vehicles taken out by people.
    pub maintenance: u64,
    /// Vehicles taken out because their journeys (unlocks) kept failing, by journey.
    #[serde(default)]
    pub journey_failures: Vec<(String, u64)>,
    /// Each journey's requests over the day: `(journey, answered ok in time, ended)`.
    #[serde(default)]
    pub journeys: Vec<(String, u64, u64)>,
    /// Mass heartbeat-loss incidents.
    pub mass_loss: u64,
    /// The hour with the lowest in-service share: its start and the share.
    pub worst_hour: Option<(UnixMs, f64)>,
    /// The broker's own downtime during the day.
    pub downtime_ms: u64,
}

impl Digest {
    /// Builds the digest of the day ending at `at` from the store and the engine's SLI.
    pub fn compute(
        reader: &StoreReader,
        report: &SliReport,
        at: UnixMs,
    ) -> Result<Digest, StoreError> {
        let since = at.saturating_sub(DAY_MS);
        let minutes = reader.sli_minutes(since / 60_000)?;
        let (mut good, mut valid, mut down) = (0u64, 0u64, 0u64);
        let mut hours: Vec<(u64, u64, u64)> = Vec::new();
        for (minute, g, v, d) in minutes {
            good += g;
            valid += v;
            down += d;
            let hour = minute / 60;
            match hours.last_mut() {
                Some((h, hg, hv)) if *h == hour => {
                    *hg += g;
                    *hv += v;
                }
                _ => hours.push((hour, g, v)),
            }
        }
        let ratio = |g: u64, v: u64| if v == 0 { 1.0 } else { g as f64 / v as f64 };
        let day_sli = ratio(good, valid);
        let worst_hour = hours
            .iter()
            .filter(|(_, _, v)| *v > 0)
            .map(|(h, g, v)| (h * 3_600_000, ratio(*g, *v)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|(_, sli)| *sli < 1.0);
        let budget = (1.0 - report.target).max(f64::EPSILON);
        let day_budget_used =
            (1.0 - day_sli) / budget * DAY_MS as f64 / report.window_ms.max(1) as f64;

        let (mut heartbeat_lost, mut maintenance) = (0, 0);
        let mut faults: Vec<(String, u64)> = Vec::new();
        let mut journey_failures: Vec<(String, u64)> = Vec::new();
        let count = |list: &mut Vec<(String, u64)>, key: &str| match list
            .iter_mut()
            .find(|(c, _)| c == key)
        {
            Some((_, n)) => *n += 1,
            None => list.push((key.to_owned(), 1)),
        };
        for (reason, _cause) in reader.reasons_set_since(since)? {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(&reason) else {
                continue;
            };
            match r["kind"].as_str() {
                Some("heartbeat_lost") => heartbeat_lost += 1,
                Some("maintenance") => maintenance += 1,
                Some("hardware_fault") => count(&mut faults, r["code"].as_str().unwrap_or("?")),
                Some("journey_failures") => {
                    count(&mut journey_failures, r["journey"].as_str().unwrap_or("?"))
                }
                _ => {}
            }
        }
        faults.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Digest {
            at,
            day_sli,
            target: report.target,
            window_ms: report.window_ms,
            budget_remaining: report.error_budget_remaining,
            day_budget_used,
            heartbeat_lost,
            faults,
            maintenance,
            journey_failures,
            journeys: reader.journey_totals(since / 60_000)?,
            mass_loss: reader.notices_since("mass_loss_started", since)?,
            worst_hour,
            downtime_ms: down,
        })
    }

    /// What took vehicles out, as one sentence part (empty on a quiet day).
    pub fn causes(&self, en: bool) -> String {
        let mut parts = Vec::new();
        if self.mass_loss > 0 {
            parts.push(if en {
                format!("{} mass heartbeat loss incident(s)", self.mass_loss)
            } else {
                format!("大規模な通信途絶 {} 件", self.mass_loss)
            });
        }
        if self.heartbeat_lost > 0 {
            parts.push(if en {
                format!("{} went silent (heartbeat lost)", self.heartbeat_lost)
            } else {
                format!("無通信 {} 台", self.heartbeat_lost)
            });
        }
        if !self.faults.is_empty() {
            let total: u64 = self.faults.iter().map(|(_, n)| n).sum();
            let codes = self
                .faults
                .iter()
                .take(5)
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(if en {
                format!("{total} hardware fault(s): {codes}")
            } else {
                format!("ハードウェア故障 {total} 件: {codes}")
            });
        }
        for (journey, n) in &self.journey_failures {
            parts.push(if en {
                format!("{n} whose {journey} kept failing")
            } else {
                format!("{journey} の失敗が続いた車両 {n} 台")
            });
        }
        if self.maintenance > 0 {
            parts.push(if en {
                format!("{} taken out by people", self.maintenance)
            } else {
                format!("手動の運用停止 {} 台", self.maintenance)
            });
        }
        parts.join("; ")
    }
}

/// The next digest time after `now`: `hh:mm` local time, local = UTC + `offset_min`.
pub fn next_digest_at(now: UnixMs, (hh, mm): (u32, u32), offset_min: i32) -> UnixMs {
    let local_now = now as i64 + i64::from(offset_min) * 60_000;
    let day = local_now.div_euclid(DAY_MS as i64);
    let slot = i64::from(hh * 60 + mm) * 60_000;
    let mut local_at = day * DAY_MS as i64 + slot;
    if local_at <= local_now {
        local_at += DAY_MS as i64;
    }
    (local_at - i64::from(offset_min) * 60_000).max(0) as UnixMs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_goes_out_at_the_local_time_of_day() {
        // 2026-11-27 11:25:57 UTC
        let now = 1_795_778_757_000;
        let nine_utc = next_digest_at(now, (9, 0), 0);
        assert_eq!(nine_utc % DAY_MS, 9 * 3_600_000);
        assert!(nine_utc > now && nine_utc - now < DAY_MS);
        // 09:00 in Tokyo is 00:00 UTC.
        let nine_tokyo = next_digest_at(now, (9, 0), 9 * 60);
        assert_eq!(nine_tokyo % DAY_MS, 0);
        assert!(nine_tokyo > now && nine_tokyo - now < DAY_MS);
        // Exactly at the time: the next day.
        assert_eq!(next_digest_at(nine_utc, (9, 0), 0), nine_utc + DAY_MS);
    }

    #[test]
    fn causes_name_what_took_vehicles_out() {
        let d = Digest {
            at: 0,
            day_sli: 0.99,
            target: 0.995,
            window_ms: 30 * DAY_MS,
            budget_remaining: 0.5,
            day_budget_used: 0.07,
            heartbeat_lost: 12,
            faults: vec![("BRAKE_SENSOR".into(), 2), ("MOTOR".into(), 1)],
            maintenance: 1,
            journey_failures: vec![("unlock".into(), 4)],
            journeys: vec![("unlock".into(), 990, 1000)],
            mass_loss: 1,
            worst_hour: None,
            downtime_ms: 0,
        };
        assert_eq!(
            d.causes(true),
            "1 mass heartbeat loss incident(s); 12 went silent (heartbeat lost); 3 hardware fault(s): BRAKE_SENSOR 2, MOTOR 1; 4 whose unlock kept failing; 1 taken out by people"
        );
        let message = serde_json::to_string(&crate::slack::render::digest(
            &d,
            &crate::slack::render::Style {
                lang: crate::slack::Language::En,
                utc_offset_min: 0,
            },
            "k",
        ))
        .unwrap_or_default();
        assert!(
            message.contains("Riders' unlock:* 99.00 % of 1000 requests answered ok in time"),
            "{message}"
        );
    }
}
