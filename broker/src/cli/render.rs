//! Readable text for a person in the field: aligned tables, times as "4m ago" next to the
//! UTC time, reasons in words. Everything is computed from the API's JSON, with the
//! server's clock (`at`) as "now".

use std::io::{self, Write};

use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart.
pub fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `12s`, `4m`, `2h 5m`, `3d 4h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// UTC time with seconds.
pub fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `4m ago` relative to the server's `now`.
pub fn ago(now: u64, at: u64) -> String {
    format!("{} ago", age(now.saturating_sub(at)))
}

/// A reason in a few words: `heartbeat_lost`, `hardware_fault BRAKE_SENSOR`,
/// `maintenance by ana`.
pub fn reason(r: &Value) -> String {
    let kind = r["kind"].as_str().unwrap_or("?");
    match kind {
        "hardware_fault" => format!("hardware_fault {}", r["code"].as_str().unwrap_or("?")),
        "maintenance" => format!("maintenance by {}", r["by"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

fn reasons_with_age(reasons: &Value, now: u64) -> String {
    let list: Vec<String> = reasons
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{} ({})",
                        reason(r),
                        age(now.saturating_sub(r["since"].as_u64().unwrap_or(now)))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(", ")
    }
}

fn state(s: &Value) -> &'static str {
    match s.as_str() {
        Some("in_service") => "in service",
        Some("out_of_service") => "OUT",
        _ => "?",
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `vehicles list`
pub fn vehicles(out: &mut dyn Write, vehicles: &[Value], now: u64) -> io::Result<()> {
    let rows: Vec<Vec<String>> = vehicles
        .iter()
        .map(|v| {
            let mut reasons = reasons_with_age(&v["reasons"], now);
            if v["held"].as_bool() == Some(true) {
                reasons.push_str(" [silent, held by mass-loss incident]");
            }
            vec![
                text(&v["id"]),
                state(&v["state"]).to_owned(),
                reasons,
                text(&v["model"]),
                ago(now, v["last_seen"].as_u64().unwrap_or(now)),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "STATE", "REASONS", "MODEL", "LAST SEEN"],
        &rows,
    )
}

/// `vehicles show ID`
pub fn vehicle(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    let now = v["at"].as_u64().unwrap_or(0);
    let id = text(&v["id"]);
    let state_words = match v["state"].as_str() {
        Some("in_service") => "in service",
        _ => "OUT OF SERVICE",
    };
    writeln!(out, "Vehicle {id}: {state_words}")?;
    let reasons = v["reasons"].as_array().cloned().unwrap_or_default();
    if reasons.is_empty() {
        writeln!(out, "  reasons     none")?;
    }
    for (i, r) in reasons.iter().enumerate() {
        let label = if i == 0 { "reasons" } else { "" };
        let since = r["since"].as_u64().unwrap_or(now);
        let mut line = format!(
            "  {label:<11} {:<32} since {} ({})",
            reason(r),
            utc(since),
            ago(now, since)
        );
        if r["kind"] == "maintenance" {
            line.push_str(&format!(": {}", text(&r["note"])));
        }
        writeln!(out, "{line}")?;
    }
    if v["held"].as_bool() == Some(true) {
        writeln!(
            out,
            "  note        silent, but its service-out is held by a mass-loss incident"
        )?;
    }
    let seen = v["last_seen"].as_u64().unwrap_or(now);
    writeln!(out, "  last seen   {} ({})", utc(seen), ago(now, seen))?;
    writeln!(out, "  model       {}", text(&v["model"]))?;
    writeln!(out, "  reports     {}", text(&v["reported"]))?;
    let errors: Vec<String> = v["error_counts"]
        .as_object()
        .map(|m| m.iter().map(|(code, n)| format!("{code} {n}")).collect())
        .unwrap_or_default();
    writeln!(
        out,
        "  errors      {}",
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        }
    )?;
    if let Some(problem) = v["history_error"].as_str() {
        writeln!(out, "\n{problem}")?;
    }
    if let Some(transitions) = v["recent_transitions"].as_array() {
        writeln!(out, "\nRecent transitions (newest first)")?;
        let rows: Vec<Vec<String>> = transitions
            .iter()
            .map(|t| {
                let at = t["at"].as_u64().unwrap_or(now);
                let by = match t["cause"].as_str() {
                    Some("operator") => format!("{}: {}", text(&t["operator"]), text(&t["note"])),
                    other => other.unwrap_or("?").to_owned(),
                };
                vec![
                    format!("{} ({})", utc(at), ago(now, at)),
                    text(&t["change"]),
                    if t["reason"].is_null() {
                        "-".to_owned()
                    } else {
                        reason(&t["reason"])
                    },
                    text(&t["to"]),
                    by,
                ]
            })
            .collect();
        if rows.is_empty() {
            writeln!(out, "  none yet")?;
        } else {
            table(out, &["AT", "CHANGE", "REASON", "STATE AFTER", "BY"], &rows)?;
        }
    }
    if let Some(commands) = v["recent_commands"].as_array() {
        if !commands.is_empty() {
            writeln!(out, "\nRecent commands (newest first)")?;
            let rows: Vec<Vec<String>> = commands
                .iter()
                .map(|c| {
                    let issued = c["issued_at"].as_u64().unwrap_or(now);
                    let acked = match (c["acked_at"].as_u64(), c["ok"].as_bool()) {
                        (Some(at), Some(true)) => {
                            format!("ok after {}", age(at.saturating_sub(issued)))
                        }
                        (Some(_), _) => format!("FAILED: {}", text(&c["error"])),
                        (None, _) => "not acknowledged".to_owned(),
                    };
                    vec![
                        format!("{} ({})", utc(issued), ago(now, issued)),
                        text(&c["command"]),
                        acked,
                    ]
                })
                .collect();
            table(out, &["ISSUED", "COMMAND", "ACK"], &rows)?;
        }
    }
    Ok(())
}

fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{:.2} %", x * 100.0))
}

fn burn_line(b: &Value) -> String {
    ["5m", "30m", "1h", "6h", "1d", "3d"]
        .iter()
        .map(|w| format!("{w} {:.2}", b[*w].as_f64().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join("   ")
}

/// `slo`
pub fn slo(out: &mut dyn Write, r: &Value) -> io::Result<()> {
    let f = &r["fleet_in_service"];
    writeln!(
        out,
        "Fleet in service ({})   target {} over {}",
        text(&f["name"]),
        percent(&f["target"]),
        text(&f["window"])
    )?;
    writeln!(
        out,
        "  now            {}  ({} of {} vehicles counted)",
        percent(&f["sli_now"]),
        text(&f["in_service"]),
        text(&f["fleet"])
    )?;
    writeln!(out, "  over window    {}", percent(&f["window_sli"]))?;
    writeln!(
        out,
        "  error budget   {} left",
        percent(&f["error_budget_remaining"])
    )?;
    writeln!(out, "  burn rates     {}", burn_line(&f["burn_rates"]))?;
    let firing: Vec<String> = f["alerts_firing"]
        .as_array()
        .map(|a| a.iter().map(|s| text(s).to_uppercase()).collect())
        .unwrap_or_default();
    writeln!(
        out,
        "  alerts         {}",
        if firing.is_empty() {
            "none firing".to_owned()
        } else {
            format!("{} FIRING", firing.join(", "))
        }
    )?;
    let a = &r["command_acks"];
    writeln!(
        out,
        "Commands acked within {}s ({})   target {}",
        text(&a["ack_within_s"]),
        text(&a["name"]),
        percent(&a["target"])
    )?;
    writeln!(
        out,
        "  over window    {}  ({} of {} commands)",
        percent(&a["window_sli"]),
        text(&a["good"]),
        text(&a["valid"])
    )?;
    writeln!(
        out,
        "  error budget   {} left",
        percent(&a["error_budget_remaining"])
    )?;
    writeln!(out, "  burn rates     {}", burn_line(&a["burn_rates"]))?;
    writeln!(out, "  unacked now    {}", text(&a["unacked_commands"]))?;
    for j in r["journeys"].as_array().into_iter().flatten() {
        journey(out, j)?;
    }
    let v = &r["vehicles"];
    writeln!(
        out,
        "Vehicles: {} total, {} in service, {} out (heartbeat_lost {}, hardware_fault {}, journey_failures {}, maintenance {}, held {})",
        text(&v["total"]),
        text(&v["in_service"]),
        text(&v["out_of_service"]),
        text(&v["heartbeat_lost"]),
        text(&v["hardware_fault"]),
        text(&v["journey_failures"]),
        text(&v["maintenance"]),
        text(&v["held"])
    )
}

/// One journey of `slo`: its SLO, and the last day's failures by how the broker showed
/// the vehicle.
fn journey(out: &mut dyn Write, j: &Value) -> io::Result<()> {
    let c = &j["counts"];
    writeln!(
        out,
        "Journey {} answered ok in time ({})   target {}",
        text(&j["journey"]),
        text(&j["name"]),
        percent(&j["target"])
    )?;
    writeln!(
        out,
        "  over window    {}  ({} of {} requests)",
        percent(&j["window_sli"]),
        text(&j["good"]),
        text(&j["valid"])
    )?;
    writeln!(
        out,
        "  error budget   {} left",
        percent(&j["error_budget_remaining"])
    )?;
    writeln!(out, "  burn rates     {}", burn_line(&j["burn_rates"]))?;
    writeln!(
        out,
        "  since start    {} failed, {} timed out, {} late, {} unmatched, {} pending",
        text(&c["failed"]),
        text(&c["timed_out"]),
        text(&c["late"]),
        text(&c["unmatched"]),
        text(&j["pending"])
    )?;
    let day = |state: &str| -> u64 {
        j["precision"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|row| row["outcome"] != "succeeded" && row["state"] == state)
            .filter_map(|row| row["last_day"].as_u64())
            .sum()
    };
    writeln!(
        out,
        "  last 24 h      {} failures to vehicles in service (missed by the rules), {} to vehicles out of service",
        day("in_service"),
        day("out_of_service")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn slo_prints_each_journey_with_its_misses() {
        let r = json!({
            "fleet_in_service": {}, "command_acks": {}, "vehicles": {"journey_failures": 2},
            "journeys": [{
                "journey": "unlock", "name": "journey-unlock", "target": 0.99,
                "window_sli": 0.95, "good": 19, "valid": 20, "error_budget_remaining": -4.0,
                "burn_rates": {}, "pending": 1,
                "counts": {"failed": 1, "timed_out": 0, "late": 0, "unmatched": 3},
                "precision": [
                    {"outcome": "failed", "state": "in_service", "last_day": 1},
                    {"outcome": "succeeded", "state": "out_of_service", "last_day": 4},
                    {"outcome": "timed_out", "state": "out_of_service", "last_day": 2}
                ]
            }]
        });
        let mut out = Vec::new();
        slo(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in [
            "Journey unlock answered ok in time (journey-unlock)   target 99.00 %",
            "(19 of 20 requests)",
            "3 unmatched, 1 pending",
            "1 failures to vehicles in service (missed by the rules), 2 to vehicles out of service",
            "journey_failures 2",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["ID", "STATE"],
            &[
                vec!["a".into(), "in service".into()],
                vec!["long-id".into(), "OUT".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID       STATE\na        in service\nlong-id  OUT\n"
        );
    }

    #[test]
    fn ages_use_the_largest_units() {
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(4 * 60_000 + 5_000), "4m");
        assert_eq!(age(2 * 3_600_000 + 5 * 60_000), "2h 5m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn a_vehicle_list_shows_reasons_in_words_with_their_age() {
        let now = 1_000_000;
        let v = json!({
            "id": "s1", "state": "out_of_service", "model": null, "held": false,
            "last_seen": now - 5_000,
            "reasons": [{"kind": "hardware_fault", "code": "BRAKE_SENSOR", "since": now - 120_000}],
        });
        let mut out = Vec::new();
        vehicles(&mut out, &[v], now).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("hardware_fault BRAKE_SENSOR (2m)"), "{text}");
        assert!(text.contains("5s ago"), "{text}");
        assert!(text.contains("OUT"), "{text}");
    }
}
