//! The technician's CLI (`fleet-broker vehicles ...`, `fleet-broker slo`) against a running
//! broker: the same argument parsing and output as the binary, captured in memory.

mod api_support;

use api_support::*;
use clap::Parser as _;
use fleet_broker::cli::{self, CliError, OpsCommandLine};
use serde_json::Value;

const STEADY: &str = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
[heartbeat]\ntimeout = \"1m\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";

/// Runs `fleet-broker <args>` against `url`; the output, or the error.
async fn run(url: &str, args: &[&str]) -> Result<String, CliError> {
    let mut argv = vec!["fleet-broker"];
    argv.extend_from_slice(args);
    let parsed = OpsCommandLine::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    cli::run(&parsed.command, url, None, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

#[tokio::test]
async fn a_technician_lists_inspects_and_services_vehicles_from_the_terminal() {
    let (broker, _) = broker_with(STEADY, None).await;
    let url = format!("http://{}", broker.http_addr());
    let _a = vehicle(&broker, "scooter-1", None).await;
    let b = vehicle(&broker, "scooter-2", Some("e-bike")).await;
    b.error("BRAKE_SENSOR", 1).await.expect("error report");
    until("scooter-2 out", || async {
        broker
            .engine()
            .vehicle("scooter-2")
            .await
            .ok()
            .flatten()
            .is_some_and(|v| !v.reasons.is_empty())
    })
    .await;

    let table = run(&url, &["vehicles", "list"]).await.expect("list");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST SEEN"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("scooter-1") && lines[1].contains("in service"),
        "{table}"
    );
    assert!(
        lines[2].contains("OUT") && lines[2].contains("hardware_fault BRAKE_SENSOR"),
        "{table}"
    );
    assert_eq!(lines.last(), Some(&"2 vehicles"));

    let out = run(
        &url,
        &["vehicles", "list", "--state", "out_of_service", "--json"],
    )
    .await
    .expect("list --json");
    let json: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["vehicles"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["vehicles"][0]["id"], "scooter-2");

    let shown = run(&url, &["vehicles", "show", "scooter-2"])
        .await
        .expect("show");
    assert!(
        shown.starts_with("Vehicle scooter-2: OUT OF SERVICE"),
        "{shown}"
    );
    assert!(
        shown.contains("hardware_fault BRAKE_SENSOR") && shown.contains("since"),
        "{shown}"
    );
    assert!(shown.contains("errors      BRAKE_SENSOR 1"), "{shown}");
    assert!(shown.contains("Recent transitions"), "{shown}");

    // No token: refused, with the API's reason.
    let refused = run(
        &url,
        &[
            "vehicles",
            "service-in",
            "scooter-2",
            "--operator",
            "ana",
            "--note",
            "ok",
        ],
    )
    .await
    .expect_err("needs the token");
    assert_eq!(refused.exit_code(), 1);
    assert!(refused.to_string().contains("HTTP 401"), "{refused}");

    let done = run(
        &url,
        &[
            "vehicles",
            "service-in",
            "scooter-2",
            "--operator",
            "ana",
            "--note",
            "brake sensor replaced",
            "--token",
            TOKEN,
        ],
    )
    .await
    .expect("service-in");
    assert_eq!(
        done.trim(),
        "scooter-2 is back in service. Cleared: hardware_fault BRAKE_SENSOR."
    );
    let out = run(
        &url,
        &[
            "vehicles",
            "service-out",
            "scooter-1",
            "--operator",
            "bo",
            "--note",
            "tyre",
            "--token",
            TOKEN,
        ],
    )
    .await
    .expect("service-out");
    assert!(
        out.starts_with("scooter-1 is out of service (maintenance by bo)"),
        "{out}"
    );

    let missing = run(&url, &["vehicles", "show", "ghost"])
        .await
        .expect_err("404");
    assert!(missing.to_string().contains("HTTP 404") && missing.to_string().contains("ghost"));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_service_in_that_leaves_a_silent_vehicle_out_exits_3_and_says_why() {
    let fast = "[http]\ntoken = \"test-token-0123456789abcdef\"\n[heartbeat]\ntimeout = \"1s\"\n";
    let (broker, _) = broker_with(fast, None).await;
    let url = format!("http://{}", broker.http_addr());
    let _v = vehicle(&broker, "v1", None).await;
    until("v1 silent", || async {
        broker
            .engine()
            .vehicle("v1")
            .await
            .ok()
            .flatten()
            .is_some_and(|v| !v.reasons.is_empty())
    })
    .await;
    let e = run(
        &url,
        &[
            "vehicles",
            "service-in",
            "v1",
            "--operator",
            "ana",
            "--note",
            "x",
            "--token",
            TOKEN,
        ],
    )
    .await
    .expect_err("still out");
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains("silent since"), "{e}");
    broker.shutdown().await;
}

#[tokio::test]
async fn the_slo_command_prints_both_slos_and_the_census() {
    let (broker, _) = broker_with(STEADY, None).await;
    let url = format!("http://{}", broker.http_addr());
    let _v = vehicle(&broker, "v1", None).await;
    let out = run(&url, &["slo"]).await.expect("slo");
    assert!(
        out.starts_with("Fleet in service (fleet-in-service)   target 99.50 % over 30d"),
        "{out}"
    );
    assert!(
        out.contains("now            100.00 %  (1 of 1 vehicles counted)"),
        "{out}"
    );
    assert!(out.contains("burn rates     5m 0.00"), "{out}");
    assert!(out.contains("alerts         none firing"), "{out}");
    assert!(
        out.contains("Commands acked within 30s (command-acks)   target 99.00 %"),
        "{out}"
    );
    assert!(
        out.contains("Vehicles: 1 total, 1 in service, 0 out"),
        "{out}"
    );
    let json: Value =
        serde_json::from_str(&run(&url, &["slo", "--json"]).await.expect("json")).expect("JSON");
    assert_eq!(json["fleet_in_service"]["fleet"], 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_api_says_where_it_looked() {
    let e = run("http://127.0.0.1:1", &["slo"])
        .await
        .expect_err("nothing there");
    assert_eq!(e.exit_code(), 1);
    let message = e.to_string();
    assert!(
        message.contains("http://127.0.0.1:1") && message.contains("--url"),
        "{message}"
    );
}
