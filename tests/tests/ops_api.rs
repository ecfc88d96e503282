//! The ops HTTP API end to end: a broker on free ports, simulated vehicles over MQTT, and
//! every endpoint and error path of DESIGN.md "Ops HTTP API".

mod api_support;

use api_support::*;
use serde_json::{json, Value};

/// Vehicles stay talking for the length of a test.
const STEADY: &str = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
[heartbeat]\ntimeout = \"1m\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";

#[tokio::test]
async fn health_and_readiness_answer_in_json_and_the_api_stops_with_the_broker() {
    let (broker, api) = broker_with(STEADY, None).await;
    assert_eq!(get(&api, "/healthz").await, (200, json!({"status": "ok"})));
    let (status, ready) = get(&api, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "ready");
    broker.shutdown().await;
    assert!(
        api.get("/healthz").await.is_err(),
        "still serving after shutdown"
    );
}

#[tokio::test]
async fn vehicles_are_filtered_by_state_reason_and_model_and_come_in_pages() {
    let (broker, api) = broker_with(STEADY, Some(TOKEN)).await;
    let _a = vehicle(&broker, "a", None).await;
    let b = vehicle(&broker, "b", None).await;
    let _c = vehicle(&broker, "c", Some("e-bike")).await;
    let _d = vehicle(&broker, "d", None).await;
    b.error("BRAKE_SENSOR", 1).await.expect("error report");
    assert_eq!(
        post(&api, "/api/v1/vehicles/d/service-out", "ana", "tyre")
            .await
            .status,
        200
    );
    until("b faulted", || async {
        get(&api, "/api/v1/vehicles/b").await.1["state"] == "out_of_service"
    })
    .await;

    let ids = |body: &Value| -> Vec<String> {
        body["vehicles"]
            .as_array()
            .expect("a vehicles array")
            .iter()
            .map(|v| v["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (status, first) = get(&api, "/api/v1/vehicles?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&first), ["a", "b"]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = get(&api, &format!("/api/v1/vehicles?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), ["c", "d"]);
    assert_eq!(second["next_cursor"], Value::Null);
    assert!(first["at"].as_u64().is_some());

    let listed = |q: &'static str| {
        let api = &api;
        async move { ids(&get(api, &format!("/api/v1/vehicles?{q}")).await.1) }
    };
    assert_eq!(listed("state=out_of_service").await, ["b", "d"]);
    assert_eq!(listed("state=in_service").await, ["a", "c"]);
    assert_eq!(listed("reason=hardware_fault").await, ["b"]);
    assert_eq!(listed("reason=maintenance").await, ["d"]);
    assert_eq!(listed("model=e-bike").await, ["c"]);
    assert!(listed("state=in_service&reason=maintenance")
        .await
        .is_empty());

    let b_row = &get(&api, "/api/v1/vehicles?reason=hardware_fault").await.1["vehicles"][0];
    assert_eq!(kinds(&b_row["reasons"]), ["hardware_fault"]);
    assert_eq!(b_row["reasons"][0]["code"], "BRAKE_SENSOR");
    assert!(b_row["last_seen"].as_u64().is_some());

    for (query, code) in [
        ("state=broken", "bad_parameter"),
        ("reason=flat", "bad_parameter"),
        ("limit=0", "bad_parameter"),
        ("limit=5000", "bad_parameter"),
        ("cursor=abc", "bad_cursor"),
        ("status=out_of_service", "unknown_parameter"),
        (
            "state=in_service&state=out_of_service",
            "repeated_parameter",
        ),
    ] {
        let (status, body) = get(&api, &format!("/api/v1/vehicles?{query}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_vehicle_shows_its_reasons_since_when_error_counters_and_audit_trail() {
    let (broker, api) = broker_with(STEADY, Some(TOKEN)).await;
    let v = vehicle(&broker, "scooter-7", Some("e-bike")).await;
    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    v.error("LOW_BATTERY", 2).await.expect("error report");
    until("the fault and its acked command", || async {
        let d = get(&api, "/api/v1/vehicles/scooter-7").await.1;
        d["state"] == "out_of_service" && d["recent_commands"][0]["ok"] == true
    })
    .await;
    let (status, d) = get(&api, "/api/v1/vehicles/scooter-7").await;
    assert_eq!(status, 200);
    assert_eq!(d["id"], "scooter-7");
    assert_eq!(d["model"], "e-bike");
    assert_eq!(kinds(&d["reasons"]), ["hardware_fault"]);
    let since = d["reasons"][0]["since"].as_u64().expect("since");
    assert!(since <= d["at"].as_u64().expect("at"));
    assert!(d["last_seen"].as_u64().is_some());
    assert_eq!(
        d["error_counts"],
        json!({"BRAKE_SENSOR": 1, "LOW_BATTERY": 2})
    );
    let t = &d["recent_transitions"][0];
    assert_eq!(t["change"], "set");
    assert_eq!(t["reason"]["kind"], "hardware_fault");
    assert_eq!(t["cause"], "rule");
    assert_eq!(t["to"], "out_of_service");
    assert_eq!(d["recent_commands"][0]["command"], "service_out");
    assert!(d.get("history_error").is_none());
    assert_eq!(d["mds_device_id"].as_str().map(str::len), Some(36));

    let (status, body) = get(&api, "/api/v1/vehicles/ghost").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_vehicle"))
    );
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("ghost")));
    let (status, body) = get(&api, "/api/v1/vehicles/no%20spaces").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_vehicle_id"))
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_token_every_write_is_refused_with_how_to_set_one() {
    let (broker, api) = broker_with("", Some(TOKEN)).await;
    let _v = vehicle(&broker, "v1", None).await;
    for path in [
        "/api/v1/vehicles/v1/service-out",
        "/api/v1/vehicles/v1/service-in",
    ] {
        let r = post(&api, path, "ana", "x").await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error"], "writes_disabled");
        let message = r.json()["message"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("FLEET_API_TOKEN") && message.contains("[http] token"));
    }
    let (_, d) = get(&api, "/api/v1/vehicles/v1").await;
    assert_eq!(d["state"], "in_service", "a refused write changed nothing");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_reads_need_none() {
    let (broker, open) = broker_with(STEADY, None).await;
    let _v = vehicle(&broker, "v1", None).await;
    let path = "/api/v1/vehicles/v1/service-out";
    let r = post(&open, path, "ana", "x").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let wrong = fleet_broker::cli::ApiClient::new(
        &format!("http://{}", broker.http_addr()),
        Some("not-the-token-0123456789".into()),
    )
    .expect("url");
    assert_eq!(post(&wrong, path, "ana", "x").await.status, 401);
    let (status, d) = get(&open, "/api/v1/vehicles/v1").await;
    assert_eq!((status, d["state"].as_str()), (200, Some("in_service")));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_service_in_of_a_silent_faulted_vehicle_clears_the_fault_and_answers_409() {
    let fast = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
                [heartbeat]\ntimeout = \"1s\"\n\
                [faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";
    let (broker, api) = broker_with(fast, Some(TOKEN)).await;
    let v = vehicle(&broker, "v1", None).await;
    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    until("v1 faulted and silent", || async {
        let reasons = get(&api, "/api/v1/vehicles/v1").await.1["reasons"].clone();
        kinds(&reasons) == ["heartbeat_lost", "hardware_fault"]
    })
    .await;

    let r = post(
        &api,
        "/api/v1/vehicles/v1/service-in",
        "ana",
        "brake replaced",
    )
    .await;
    let body = r.json();
    assert_eq!(r.status, 409, "{body}");
    assert_eq!(body["error"], "still_out_of_service");
    assert_eq!(body["state"], "out_of_service");
    assert_eq!(kinds(&body["remaining"]), ["heartbeat_lost"]);
    assert_eq!(kinds(&body["cleared"]), ["hardware_fault"]);
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("silent since") && message.contains("hardware_fault BRAKE_SENSOR"),
        "{message}"
    );
    let (_, d) = get(&api, "/api/v1/vehicles/v1").await;
    assert_eq!(kinds(&d["reasons"]), ["heartbeat_lost"]);

    // The vehicle talks again: back in service by itself.
    v.heartbeat().await.expect("heartbeat");
    until("v1 back in service", || async {
        get(&api, "/api/v1/vehicles/v1").await.1["state"] == "in_service"
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn taking_a_vehicle_out_and_back_by_hand_is_recorded_with_operator_and_note() {
    out_and_back_by_hand(STEADY).await;
}

#[tokio::test]
async fn on_postgres_the_audit_trail_of_a_manual_out_and_back_is_read_from_the_database() {
    let Some(pg) = fleet_tests::postgres::Postgres::start() else {
        return;
    };
    out_and_back_by_hand(&format!("{STEADY}[store]\nurl = \"{}\"\n", pg.url())).await;
}

async fn out_and_back_by_hand(config: &str) {
    let (broker, api) = broker_with(config, Some(TOKEN)).await;
    let _v = vehicle(&broker, "v1", None).await;
    let r = post(&api, "/api/v1/vehicles/v1/service-out", "ana", "tyre swap").await;
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["state"], "out_of_service");
    assert_eq!(body["reasons"][0]["kind"], "maintenance");
    assert_eq!(body["reasons"][0]["by"], "ana");
    assert_eq!(body["reasons"][0]["note"], "tyre swap");

    let r = post(&api, "/api/v1/vehicles/v1/service-in", "bo", "tyre ok").await;
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["state"], "in_service");
    assert_eq!(kinds(&body["cleared"]), ["maintenance"]);
    assert_eq!(body["remaining"], json!([]));

    let (_, d) = get(&api, "/api/v1/vehicles/v1").await;
    let trail = d["recent_transitions"].as_array().expect("trail");
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[0]["change"], "cleared");
    assert_eq!(trail[0]["cause"], "operator");
    assert_eq!(trail[0]["operator"], "bo");
    assert_eq!(trail[0]["note"], "tyre ok");
    assert_eq!(trail[1]["change"], "set");
    assert_eq!(trail[1]["operator"], "ana");
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_that_say_what_to_fix() {
    let (broker, api) = broker_with(STEADY, Some(TOKEN)).await;
    let _v = vehicle(&broker, "v1", None).await;
    let addr = broker.http_addr();
    let path = "/api/v1/vehicles/v1/service-in";
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            post_request(path, "application/json", b"not json"),
            400,
            "bad_body",
        ),
        (
            post_request(path, "application/json", br#"{"operator":"ana"}"#),
            400,
            "bad_body",
        ),
        (
            post_request(
                path,
                "application/json",
                br#"{"operator":"ana","note":"x","extra":1}"#,
            ),
            400,
            "bad_body",
        ),
        (
            post_request(path, "application/json", br#"{"operator":" ","note":"x"}"#),
            400,
            "bad_operator",
        ),
        (
            post_request(path, "application/json", br#"{"operator":"ana","note":""}"#),
            400,
            "bad_note",
        ),
        (
            post_request(path, "text/plain", br#"{"operator":"ana","note":"x"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            post_request(path, "application/json", &vec![b' '; 20 * 1024]),
            413,
            "bad_body",
        ),
        (
            post_request(
                "/api/v1/vehicles/ghost/service-in",
                "application/json",
                br#"{"operator":"ana","note":"x"}"#,
            ),
            404,
            "unknown_vehicle",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = raw_request(addr, &request).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.len() > 10),
            "{body}"
        );
    }
    let (status, body) = get(&api, "/api/v2/everything").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no_such_endpoint"))
    );
    let (status, body) = raw_request(
        addr,
        b"DELETE /api/v1/slo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (_, d) = get(&api, "/api/v1/vehicles/v1").await;
    assert_eq!(d["state"], "in_service", "no bad request changed anything");
    broker.shutdown().await;
}

#[tokio::test]
async fn the_slo_report_has_both_slis_their_budgets_burn_rates_and_the_census() {
    let (broker, api) = broker_with(STEADY, Some(TOKEN)).await;
    let _a = vehicle(&broker, "a", None).await;
    let b = vehicle(&broker, "b", None).await;
    b.error("BRAKE_SENSOR", 1).await.expect("error report");
    // The simulated vehicle acks the service_out: one good command-ack event.
    until("the ack judged", || async {
        get(&api, "/api/v1/slo").await.1["command_acks"]["good"] == 1
    })
    .await;
    let (status, r) = get(&api, "/api/v1/slo").await;
    assert_eq!(status, 200);
    let f = &r["fleet_in_service"];
    assert_eq!(f["name"], "fleet-in-service");
    assert_eq!(f["target"], 0.995);
    assert_eq!(f["window"], "30d");
    assert_eq!(
        (f["in_service"].as_u64(), f["fleet"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(f["sli_now"], 0.5);
    // a was in service all along, b from its registration (after a's) until its fault:
    // over the history (seconds, inside every window) more than half and not all of the
    // fleet-time was good, so every window burns the same, above 0 and below 100.
    let window_sli = f["window_sli"].as_f64().expect("window_sli");
    assert!(
        window_sli > 0.5 && window_sli < 1.0,
        "window SLI {window_sli}"
    );
    for w in ["5m", "30m", "1h", "6h", "1d", "3d"] {
        let burn = f["burn_rates"][w].as_f64().expect("a burn rate");
        assert!(
            (burn - (1.0 - window_sli) / 0.005).abs() < 1e-6,
            "{w}: {burn} for window SLI {window_sli}"
        );
    }
    let budget = f["error_budget_remaining"].as_f64().expect("budget");
    assert!(budget > 0.999 && budget < 1.0, "budget left {budget}");
    // Alerts are evaluated at minute boundaries: none yet, or, once one passed, both
    // (every window burns above the page's 6x-over-6h-and-30m and the ticket's 1x).
    let firing = &f["alerts_firing"];
    assert!(
        *firing == json!([]) || *firing == json!(["page", "ticket"]),
        "{firing}"
    );
    let a = &r["command_acks"];
    assert_eq!(a["name"], "command-acks");
    assert_eq!(a["target"], 0.99);
    assert_eq!(a["ack_within_s"], 30);
    assert_eq!(
        (a["good"].as_u64(), a["valid"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(a["window_sli"], 1.0);
    let v = &r["vehicles"];
    assert_eq!(
        (
            v["total"].as_u64(),
            v["out_of_service"].as_u64(),
            v["hardware_fault"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert!(r["alert_policy"]["page"]
        .as_str()
        .is_some_and(|p| p.contains("14.4")));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_decommissioned_vehicle_is_gone_for_the_api() {
    let (broker, api) = broker_with(STEADY, Some(TOKEN)).await;
    let _v = vehicle(&broker, "old-1", None).await;
    broker
        .engine()
        .decommission("old-1", "ana")
        .await
        .expect("engine answers")
        .expect("decommissioned");
    let r = post(&api, "/api/v1/vehicles/old-1/service-in", "ana", "x").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (410, Some("decommissioned"))
    );
    let (status, _) = get(&api, "/api/v1/vehicles/old-1").await;
    assert_eq!(status, 404);
    broker.shutdown().await;
}
