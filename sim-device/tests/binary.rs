//! The built `sim-device` binary as an SRE runs it: how `--inject` values are read, with
//! the exit status and the message. Every run is bounded (`--duration`, no vehicles, a
//! broker address nobody listens on), so a regression shows as a failed assertion, not a
//! hang.

use std::process::{Command, Output};

fn sim_device(inject: &[&str]) -> Output {
    sim_device_logging(inject, "warn")
}

/// Runs for 200 ms with no vehicles; injections at offset 0 are logged at info.
fn sim_device_logging(inject: &[&str], log: &str) -> Output {
    sim_device_with(inject, &[], log)
}

/// As [`sim_device_logging`], with `extra` arguments.
fn sim_device_with(inject: &[&str], extra: &[&str], log: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sim-device"));
    cmd.args([
        "--broker",
        "127.0.0.1:9",
        "--vehicles",
        "0",
        "--duration",
        "200ms",
    ]);
    for value in inject {
        cmd.args(["--inject", value]);
    }
    cmd.args(extra)
        .env_remove("SIM_BACKEND_USERNAME")
        .env_remove("SIM_BACKEND_PASSWORD")
        .env("RUST_LOG", log)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_empty_inject_exits_1_with_a_message_naming_the_option() {
    let out = sim_device(&[""]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("--inject ''"), "{err}");
    assert!(err.contains("no injection given"), "{err}");
}

#[test]
fn an_invalid_second_table_in_one_inject_value_is_reported_not_dropped() {
    let out = sim_device(&[r#"{action = "silent", at = "1h"}, {action = "faults", at = "1h"}"#]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("inject #2 (Faults): needs `code`"), "{err}");
}

#[test]
fn every_table_of_one_inject_value_is_injected() {
    for value in [
        r#"{action = "silent"}, {action = "spoof"}"#,
        r#"[{action = "silent"}, {action = "spoof"}]"#,
    ] {
        let out = sim_device_logging(&[value], "info");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{value}: {err}");
        let injected: Vec<&str> = err.lines().filter(|l| l.contains("injecting")).collect();
        assert_eq!(injected.len(), 2, "{value}: {err}");
        assert!(
            injected.iter().any(|l| l.contains("Silent"))
                && injected.iter().any(|l| l.contains("Spoof")),
            "{value}: {err}"
        );
    }
}

#[test]
fn an_unlock_injection_without_unlocks_exits_1_and_names_the_option() {
    let out = sim_device(&[r#"{action = "silent_unlocks"}"#]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("turn journeys on with --unlocks"), "{err}");
}

#[test]
fn an_unlock_injection_with_unlocks_is_injected() {
    let out = sim_device_with(
        &[r#"{action = "failing_unlocks", for = "1m"}"#],
        &["--unlocks", "100/s"],
        "info",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("injecting") && l.contains("FailingUnlocks")),
        "{err}"
    );
}

#[test]
fn bad_journey_flags_exit_with_a_message_naming_the_value() {
    for (args, expected) in [
        (
            &["--unlocks", "10", "--unlock-request", "vehicles/lock"][..],
            "request topic template \"vehicles/lock\": needs exactly one level",
        ),
        (
            &[
                "--unlocks",
                "10",
                "--unlock-response",
                "vehicles/{id}/lock/request",
            ][..],
            "must differ",
        ),
        (
            &["--unlocks", "10", "--backend-username", "backend"][..],
            "--backend-username and --backend-password go together",
        ),
        (&["--unlocks=-3"][..], "expected requests per second"),
        (&["--unlocks", "lots"][..], "expected requests per second"),
    ] {
        let out = sim_device_with(&[], args, "warn");
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
