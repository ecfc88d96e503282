//! The exports a person or another system reads: the OpenSLO document (parsed back as
//! YAML), and the MDS 2.0 views with the transitions mapped as `fleet_rules::mds` says.

mod api_support;

use api_support::*;
use serde_json::Value;

/// One-second timeouts, a one-report brake rule, a 99 % / 7-day SLO, a 95 % / 20 s
/// command-ack SLO and an MDS provider id.
async fn broker(token: Option<&str>) -> (fleet_broker::Broker, fleet_broker::cli::ApiClient) {
    use fleet_broker::config::HumanDuration;
    let mut config = fleet_tests::test_config(
        "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
         [heartbeat]\ntimeout = \"1s\"\n\
         [faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n\
         [mds]\nprovider_id = \"63f13c48-34ff-49d2-aca7-cf6a5b6171c3\"\n",
    );
    config.slo.target = 0.99;
    config.slo.window = HumanDuration::from_secs(7 * 24 * 3600);
    config.slo.command_ack_target = 0.95;
    config.slo.command_ack_within = HumanDuration::from_secs(20);
    config.validate().expect("valid");
    broker_from(&config, token).await
}

#[tokio::test]
async fn the_openslo_export_parses_back_with_the_configured_slos_and_policies() {
    let (broker, api) = broker(None).await;
    let r = api.get("/api/v1/slo/openslo").await.expect("answers");
    assert_eq!(r.status, 200);
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&r.text())
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is valid YAML"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Service",
            "SLO",
            "AlertPolicy",
            "AlertPolicy",
            "AlertNotificationTarget",
            "SLO"
        ]
    );
    assert!(docs.iter().all(|d| d["apiVersion"] == "openslo/v1"));
    let named = |name: &str| {
        docs.iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no document {name}"))
            .clone()
    };

    let fleet = named("fleet-in-service");
    assert_eq!(fleet["spec"]["service"], "fleet-health");
    assert_eq!(fleet["spec"]["objectives"][0]["target"], 0.99);
    assert_eq!(fleet["spec"]["timeWindow"][0]["duration"], "7d");
    assert_eq!(fleet["spec"]["timeWindow"][0]["isRolling"], true);
    assert_eq!(fleet["spec"]["budgetingMethod"], "Occurrences");
    let ratio = &fleet["spec"]["indicator"]["spec"]["ratioMetric"];
    assert_eq!(ratio["good"]["metricSource"]["type"], "Prometheus");
    assert_eq!(
        ratio["good"]["metricSource"]["spec"]["query"],
        "sum(fleet_slo_good_vehicles)"
    );
    let policies: Vec<&str> = fleet["spec"]["alertPolicies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["alertPolicyRef"].as_str())
        .collect();
    assert_eq!(
        policies,
        ["fleet-in-service-page", "fleet-in-service-ticket"]
    );

    // The built-in policy, condition by condition.
    let conditions = |policy: &str| -> Vec<(f64, String, String, String)> {
        named(policy)["spec"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                let k = &c["spec"]["condition"];
                assert_eq!(k["kind"], "burnrate");
                assert_eq!(k["op"], "gt");
                (
                    k["threshold"].as_f64().expect("threshold"),
                    k["lookbackWindow"].as_str().unwrap_or("").to_owned(),
                    k["alertAfter"].as_str().unwrap_or("").to_owned(),
                    c["spec"]["severity"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        conditions("fleet-in-service-page"),
        [
            (14.4, s("1h"), s("5m"), s("page")),
            (6.0, s("6h"), s("30m"), s("page"))
        ]
    );
    assert_eq!(
        conditions("fleet-in-service-ticket"),
        [(1.0, s("3d"), s("6h"), s("ticket"))]
    );
    assert_eq!(named("fleet-alerts-mqtt")["spec"]["target"], "mqtt");

    let acks = named("command-acks");
    assert_eq!(acks["spec"]["objectives"][0]["target"], 0.95);
    assert!(acks["spec"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("20s")));
    broker.shutdown().await;
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[tokio::test]
async fn the_mds_views_show_each_vehicle_last_event_and_the_recent_events() {
    let (broker, api) = broker(Some(TOKEN)).await;
    let started = fleet_broker::clock::Clock::system().now();
    let faulty = vehicle(&broker, "faulty", None).await;
    let _quiet = vehicle(&broker, "quiet", None).await;
    faulty.error("BRAKE_SENSOR", 1).await.expect("error report");
    // Both go silent after 1 s: comms_lost for each.
    until("both silent", || async {
        get(&api, "/api/v1/vehicles?reason=heartbeat_lost").await.1["vehicles"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;

    let r = api
        .get("/api/v1/mds/vehicles/status?limit=1")
        .await
        .expect("answers");
    assert_eq!(r.status, 200);
    let page = r.json();
    assert_eq!(page["version"], "2.0.0");
    assert!(page["last_updated"].as_u64().is_some() && page["ttl"].as_u64().is_some());
    let next = page["links"]["next"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = get(&api, &next).await;
    assert_eq!(second["links"]["next"], Value::Null);
    let statuses: Vec<Value> = [page, second]
        .iter()
        .flat_map(|p| p["vehicles_status"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(statuses.len(), 2);
    for s in &statuses {
        assert!(is_uuid(s["device_id"].as_str().unwrap_or("")), "{s}");
        assert_eq!(s["provider_id"], "63f13c48-34ff-49d2-aca7-cf6a5b6171c3");
        assert_eq!(s["last_event"]["device_id"], s["device_id"]);
        assert!(is_uuid(s["last_event"]["event_id"].as_str().unwrap_or("")));
        assert_eq!(s["last_event"]["event_types"][0], "comms_lost");
        assert!(s["last_event"]["timestamp"].as_u64().is_some());
    }
    // faulty was out for its fault before it went silent: non_contactable now either way.
    assert!(statuses
        .iter()
        .all(|s| s["last_event"]["vehicle_state"] == "non_contactable"));

    let now = fleet_broker::clock::Clock::system().now();
    let (status, events) = get(
        &api,
        &format!(
            "/api/v1/mds/events/recent?start_time={}&end_time={}",
            started - 1000,
            now + 1000
        ),
    )
    .await;
    assert_eq!(status, 200);
    let types: Vec<(String, String)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["event_types"][0].as_str().unwrap_or("").to_owned(),
                e["vehicle_state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        types[0],
        s("maintenance", "non_operational"),
        "the fault first: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| t.0 == "comms_lost").count(),
        2,
        "{types:?}"
    );
    let times: Vec<u64> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["timestamp"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // Putting the faulty one back by hand is an MDS maintenance event too.
    let r = post(&api, "/api/v1/vehicles/faulty/service-in", "ana", "fixed").await;
    assert_eq!(r.status, 409, "still silent");
    let (_, events) = get(
        &api,
        &format!(
            "/api/v1/mds/events/recent?start_time={}&end_time={}",
            started - 1000,
            fleet_broker::clock::Clock::system().now() + 1000
        ),
    )
    .await;
    let last = events["events"].as_array().and_then(|e| e.last()).cloned();
    assert_eq!(
        last.as_ref().map(|e| e["event_types"][0].clone()),
        Some("maintenance".into())
    );
    assert_eq!(
        last.map(|e| e["vehicle_state"].clone()),
        Some("non_contactable".into())
    );

    for bad in [
        "/api/v1/mds/events/recent",
        "/api/v1/mds/events/recent?start_time=10&end_time=5",
        "/api/v1/mds/events/recent?start_time=1&end_time=2",
    ] {
        let (status, body) = get(&api, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    broker.shutdown().await;
}
