//! Failure injection: what a share of the fleet does wrong, and when. A scenario is a list
//! of injections, from a TOML file (`[[inject]]` tables) or `--inject` on the command line
//! (the same table inline), each applied at its offset from the start of the run and,
//! where it lasts, undone after `for`.

use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fleet::{AckPolicy, Fleet, Rng};
use crate::journey::UnlockPolicy;

/// What an injection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop heartbeating (the connection stays up), then resume after `for`.
    Silent,
    /// Send `count` error reports with `code` each.
    Faults,
    /// Alternate the heartbeat period between `low` and `high` (around the timeout).
    Flap,
    /// Drop every selected connection at once; each reconnects with jittered backoff.
    ReconnectStorm,
    /// Acknowledge commands `delay` late.
    SlowAcks,
    /// Never acknowledge commands.
    MissingAcks,
    /// Send `count` malformed heartbeats each (bad JSON, wrong types, binary garbage).
    Malformed,
    /// Publish `count` heartbeats each on another vehicle's topic.
    Spoof,
    /// Answer lock requests `ok = false` (`lock_jammed`), then `ok = true` after `for`
    /// (needs journeys).
    FailingUnlocks,
    /// Never answer lock requests (heartbeats go on), then answer again after `for`
    /// (needs journeys).
    SilentUnlocks,
}

impl Action {
    /// Acts on lock requests, so it means something only with journeys on.
    pub fn needs_journeys(self) -> bool {
        matches!(self, Action::FailingUnlocks | Action::SilentUnlocks)
    }
}

fn parse_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn parse_opt_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    parse_duration(d).map(Some)
}

/// One injection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// What to do.
    pub action: Action,
    /// When, from the start of the run (default: at once).
    #[serde(default, deserialize_with = "parse_duration")]
    pub at: Duration,
    /// How long it lasts (silent, flap, slow_acks, missing_acks, failing_unlocks,
    /// silent_unlocks; default: until the end).
    #[serde(default, rename = "for", deserialize_with = "parse_opt_duration")]
    pub duration: Option<Duration>,
    /// Share of the fleet affected (default 1.0 for reconnect_storm, else 0.01).
    pub fraction: Option<f64>,
    /// Error code (faults).
    pub code: Option<String>,
    /// Messages per vehicle (faults, malformed, spoof; default 1).
    pub count: Option<u32>,
    /// Shorter flap period (flap).
    #[serde(default, deserialize_with = "parse_opt_duration")]
    pub low: Option<Duration>,
    /// Longer flap period (flap).
    #[serde(default, deserialize_with = "parse_opt_duration")]
    pub high: Option<Duration>,
    /// Ack delay (slow_acks; default 10s).
    #[serde(default, deserialize_with = "parse_opt_duration")]
    pub delay: Option<Duration>,
}

/// A scenario file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The injections, in any order.
    #[serde(default)]
    pub inject: Vec<Injection>,
}

/// Why a scenario is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// An inline value without a single table.
    #[error(
        "no injection given: write one or more inline tables, e.g. '{{action = \"silent\", at = \"1m\"}}'"
    )]
    NoInjection,
    /// Fields that do not fit the action.
    #[error("inject #{index} ({action:?}): {problem}")]
    Invalid {
        /// Position in the list (from 1).
        index: usize,
        /// Its action.
        action: Action,
        /// What is wrong.
        problem: String,
    },
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Parses one `--inject` value: one or more injections as inline TOML tables,
    /// separated by commas and optionally in brackets, e.g.
    /// `{action = "silent", at = "30s", for = "1m", fraction = 0.05}` or
    /// `[{action = "silent", at = "1m"}, {action = "faults", code = "MOTOR"}]`. Every
    /// table is kept, in order; a value with none is an error.
    pub fn parse_inline(text: &str) -> Result<Vec<Injection>, ScenarioError> {
        let text = text.trim();
        let list = if text.starts_with('[') {
            text.to_owned()
        } else {
            format!("[{text}]")
        };
        let s = Scenario::parse(&format!("inject = {list}"))?;
        if s.inject.is_empty() {
            return Err(ScenarioError::NoInjection);
        }
        Ok(s.inject)
    }

    /// Checks every injection's fields against its action.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        for (n, inj) in self.inject.iter().enumerate() {
            let bad = |problem: &str| ScenarioError::Invalid {
                index: n + 1,
                action: inj.action,
                problem: problem.to_owned(),
            };
            if let Some(f) = inj.fraction {
                if !(0.0..=1.0).contains(&f) || f.is_nan() {
                    return Err(bad("fraction must be between 0 and 1"));
                }
            }
            match inj.action {
                Action::Faults => match &inj.code {
                    Some(c)
                        if !c.is_empty()
                            && c.len() <= 64
                            && c.bytes().all(|b| {
                                b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
                            }) => {}
                    _ => return Err(bad("needs `code`, [A-Z0-9_]{1,64}")),
                },
                Action::Flap => match (inj.low, inj.high) {
                    (Some(l), Some(h)) if !l.is_zero() && l < h => {}
                    _ => {
                        return Err(bad(
                            "needs `low` < `high`, e.g. low = \"25s\", high = \"35s\"",
                        ))
                    }
                },
                Action::FailingUnlocks | Action::SilentUnlocks => {
                    let extra = [
                        ("code", inj.code.is_some()),
                        ("count", inj.count.is_some()),
                        ("low", inj.low.is_some()),
                        ("high", inj.high.is_some()),
                        ("delay", inj.delay.is_some()),
                    ];
                    if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                        return Err(bad(&format!(
                            "does not take `{field}` (only `at`, `for`, `fraction`)"
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Some injection acts on lock requests (see [`Action::needs_journeys`]).
    pub fn needs_journeys(&self) -> bool {
        self.inject.iter().any(|i| i.action.needs_journeys())
    }
}

/// The vehicles a `fraction` selects: a fixed pseudo-random subset (same seed, same set).
pub fn select(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let k = ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(u64, usize)> = (0..n).map(|i| (rng.next_u64(), i)).collect();
    keyed.sort_unstable();
    let mut chosen: Vec<usize> = keyed.into_iter().take(k).map(|(_, i)| i).collect();
    chosen.sort_unstable();
    chosen
}

/// Starts every injection of `scenario` against `fleet`, timed from `start`.
pub fn run(
    fleet: std::sync::Arc<Fleet>,
    scenario: &Scenario,
    start: Instant,
) -> Vec<JoinHandle<()>> {
    scenario
        .inject
        .iter()
        .enumerate()
        .map(|(n, inj)| {
            let fleet = fleet.clone();
            let inj = inj.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + inj.at).await;
                apply(&fleet, &inj, n as u64).await;
            })
        })
        .collect()
}

async fn apply(fleet: &Fleet, inj: &Injection, seed: u64) {
    let default_fraction = if inj.action == Action::ReconnectStorm {
        1.0
    } else {
        0.01
    };
    let chosen = select(fleet.len(), inj.fraction.unwrap_or(default_fraction), seed);
    let count = inj.count.unwrap_or(1).max(1);
    tracing::info!(
        action = ?inj.action,
        vehicles = chosen.len(),
        at_unix_ms = crate::unix_ms(),
        "injecting"
    );
    match inj.action {
        Action::Silent => {
            set_all(&chosen, |i| fleet.set_silent(i, true));
            if let Some(d) = inj.duration {
                tokio::time::sleep(d).await;
                set_all(&chosen, |i| fleet.set_silent(i, false));
                tracing::info!(
                    vehicles = chosen.len(),
                    at_unix_ms = crate::unix_ms(),
                    "silent vehicles resume"
                );
            }
        }
        Action::Flap => {
            if let (Some(low), Some(high)) = (inj.low, inj.high) {
                fleet.set_flap_periods(low, high);
            }
            set_all(&chosen, |i| fleet.set_flapping(i, true));
            if let Some(d) = inj.duration {
                tokio::time::sleep(d).await;
                set_all(&chosen, |i| fleet.set_flapping(i, false));
            }
        }
        Action::SlowAcks | Action::MissingAcks => {
            let policy = if inj.action == Action::SlowAcks {
                fleet.set_slow_ack_delay(inj.delay.unwrap_or(Duration::from_secs(10)));
                AckPolicy::Slow
            } else {
                AckPolicy::Missing
            };
            set_all(&chosen, |i| fleet.set_ack_policy(i, policy));
            if let Some(d) = inj.duration {
                tokio::time::sleep(d).await;
                set_all(&chosen, |i| fleet.set_ack_policy(i, AckPolicy::Prompt));
            }
        }
        Action::FailingUnlocks | Action::SilentUnlocks => {
            let policy = if inj.action == Action::FailingUnlocks {
                UnlockPolicy::Fail
            } else {
                UnlockPolicy::Silent
            };
            set_all(&chosen, |i| fleet.set_unlock_policy(i, policy));
            if let Some(d) = inj.duration {
                tokio::time::sleep(d).await;
                set_all(&chosen, |i| {
                    fleet.set_unlock_policy(i, UnlockPolicy::Answer)
                });
            }
        }
        Action::ReconnectStorm => set_all(&chosen, |i| fleet.kick(i)),
        Action::Faults => {
            let code = inj.code.as_deref().unwrap_or("BRAKE_SENSOR");
            for _ in 0..count {
                set_all(&chosen, |i| {
                    fleet.error_report(i, code, 1);
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Action::Malformed => {
            const BAD: [&[u8]; 4] = [
                b"{not json",
                br#"{"battery":"full"}"#,
                b"\xff\xfe\x00",
                br#"{"seq":-1}"#,
            ];
            for k in 0..count as usize {
                set_all(&chosen, |i| {
                    if let Some(v) = fleet.vehicle(i) {
                        let topic = v.heartbeat_topic().to_owned();
                        fleet.publish_raw(i, topic, BAD[k % BAD.len()].to_vec());
                    }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Action::Spoof => {
            for _ in 0..count {
                set_all(&chosen, |i| {
                    let victim = (i + 1) % fleet.len().max(1);
                    if let Some(v) = fleet.vehicle(victim) {
                        let topic = v.heartbeat_topic().to_owned();
                        fleet.publish_raw(i, topic, br#"{"battery":1}"#.to_vec());
                    }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn set_all(chosen: &[usize], mut f: impl FnMut(usize)) {
    for &i in chosen {
        f(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_file_parses_every_action() {
        let s = Scenario::parse(
            r#"
            [[inject]]
            action = "silent"
            at = "30s"
            for = "1m"
            fraction = 0.05
            [[inject]]
            action = "faults"
            code = "BRAKE_SENSOR"
            count = 3
            [[inject]]
            action = "flap"
            low = "25s"
            high = "35s"
            [[inject]]
            action = "reconnect_storm"
            at = "2m"
            [[inject]]
            action = "slow_acks"
            delay = "20s"
            [[inject]]
            action = "missing_acks"
            [[inject]]
            action = "malformed"
            [[inject]]
            action = "spoof"
            [[inject]]
            action = "failing_unlocks"
            at = "10s"
            for = "30s"
            fraction = 0.2
            [[inject]]
            action = "silent_unlocks"
            "#,
        )
        .unwrap();
        assert_eq!(s.inject.len(), 10);
        assert_eq!(s.inject[0].duration, Some(Duration::from_secs(60)));
        let f = &s.inject[8];
        assert_eq!(
            (f.action, f.at, f.duration, f.fraction),
            (
                Action::FailingUnlocks,
                Duration::from_secs(10),
                Some(Duration::from_secs(30)),
                Some(0.2)
            )
        );
        assert_eq!(s.inject[9].action, Action::SilentUnlocks);
        assert!(s.needs_journeys());
        assert!(!Scenario::parse("[[inject]]\naction = \"silent\"")
            .unwrap()
            .needs_journeys());
    }

    #[test]
    fn unlock_injections_refuse_fields_they_do_not_use() {
        let err = Scenario::parse_inline(r#"{action = "failing_unlocks", count = 3}"#)
            .expect_err("count means nothing here");
        assert_eq!(
            err.to_string(),
            "inject #1 (FailingUnlocks): does not take `count` (only `at`, `for`, `fraction`)"
        );
        assert!(Scenario::parse_inline(r#"{action = "silent_unlocks", delay = "1s"}"#).is_err());
        assert!(Scenario::parse_inline(r#"{action = "silent_unlocks", fraction = 1.5}"#).is_err());
    }

    #[test]
    fn an_inline_injection_parses_like_a_table() {
        let i =
            Scenario::parse_inline(r#"{action = "silent", at = "5s", fraction = 0.1}"#).unwrap();
        assert_eq!(i.len(), 1);
        assert_eq!(
            (i[0].action, i[0].at, i[0].fraction),
            (Action::Silent, Duration::from_secs(5), Some(0.1))
        );
    }

    #[test]
    fn an_empty_inject_value_is_an_error_not_a_panic() {
        for empty in ["", "  ", "[]", " [ ] "] {
            let err = Scenario::parse_inline(empty).expect_err("no injection");
            assert!(
                matches!(err, ScenarioError::NoInjection),
                "{empty:?}: {err}"
            );
            assert!(err.to_string().contains("inline table"), "{err}");
        }
    }

    #[test]
    fn an_inject_value_with_two_tables_keeps_the_second() {
        let both = |text: &str| {
            let i = Scenario::parse_inline(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got: Vec<(Action, Duration, Option<&str>)> = i
                .iter()
                .map(|i| (i.action, i.at, i.code.as_deref()))
                .collect();
            assert_eq!(
                got,
                [
                    (Action::Silent, Duration::from_secs(60), None),
                    (Action::Faults, Duration::ZERO, Some("X")),
                ],
                "{text}"
            );
        };
        both(r#"{action = "silent", at = "1m"}, {action = "faults", code = "X"}"#);
        both(r#"[{action = "silent", at = "1m"}, {action = "faults", code = "X"}]"#);
    }

    #[test]
    fn the_second_inline_table_is_validated_too() {
        let err = Scenario::parse_inline(r#"{action = "silent"}, {action = "faults"}"#)
            .expect_err("the second lacks a code");
        assert!(err.to_string().starts_with("inject #2 (Faults)"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Scenario::parse("[[inject]]\naction = \"silent\"\nfractoin = 0.1").is_err());
        assert!(Scenario::parse("[[inject]]\naction = \"silent\"\nfraction = 2.0").is_err());
        assert!(Scenario::parse("[[inject]]\naction = \"faults\"").is_err());
        assert!(
            Scenario::parse("[[inject]]\naction = \"flap\"\nlow = \"9s\"\nhigh = \"5s\"").is_err()
        );
        assert!(Scenario::parse("[[inject]]\naction = \"silent\"\nat = \"soon\"").is_err());
    }

    #[test]
    fn a_fraction_selects_a_stable_subset() {
        let a = select(1000, 0.05, 3);
        assert_eq!(a.len(), 50);
        assert_eq!(a, select(1000, 0.05, 3));
        assert_ne!(a, select(1000, 0.05, 4));
    }
}
