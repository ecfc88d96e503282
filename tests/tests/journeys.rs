//! Rider journeys end to end: a backend user sends unlock requests to vehicles over MQTT,
//! the vehicles answer, and the broker measures each journey (success, failure, timeout,
//! late and unmatched answers), refuses a vehicle answering for another (ACL), takes out
//! a vehicle whose unlocks keep failing and brings it back at its next success, and
//! reports the precision figures, on the embedded broker and attached to Mosquitto.

use std::time::Duration;

use fleet_broker::mqtt::secret::{vehicle_password, Secret, SecretHash};
use fleet_broker::Broker;
use fleet_rules::{JourneyStatus, Reason, ServiceState};
use fleet_tests::upstream::{attach_to, mosquitto_installed, wait_attached, Mosquitto};
use fleet_tests::{http_get, start, test_config, Client, WAIT};
use rumqttc::Packet;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const BACKEND_PASSWORD: &str = "backend-password-123";

/// The unlock journey on the fleet's lock topics: matched by `request_id`, success is
/// `ok = true`, 700 ms to answer, two failures within a minute take a vehicle out.
const UNLOCK: &str = r#"
[[journeys]]
name = "unlock"
request = "vehicles/{id}/lock/request"
response = "vehicles/{id}/lock/result"
key = "request_id"
success = { field = "ok", equals = true }
timeout = "700ms"
failures = 2
failures_window = "1m"
recovery = "auto"
"#;

/// Who may use the lock topics: the backend sends requests and reads results, each
/// vehicle reads its own requests and answers on its own result topic.
const LOCK_ACL: &str = r#"
[[acl]]
topic = "vehicles/+/lock/request"
access = "write"
who = "backend"
[[acl]]
topic = "vehicles/%c/lock/request"
access = "read"
who = "vehicles"
[[acl]]
topic = "vehicles/%c/lock/result"
access = "write"
who = "vehicles"
[[acl]]
topic = "vehicles/+/lock/result"
access = "read"
who = "backend"
"#;

fn config() -> fleet_broker::config::Config {
    let hash = SecretHash::compute(BACKEND_PASSWORD.as_bytes(), b"saltsalt", 10);
    test_config(&format!(
        "[auth]\nmode = \"hmac\"\nfleet_key = \"{KEY}\"\n\
         [[auth.users]]\nname = \"backend\"\npassword_hash = \"{hash}\"\nrole = \"backend\"\n\
         {LOCK_ACL}{UNLOCK}"
    ))
}

async fn vehicle(broker: &Broker, id: &str) -> Client {
    let key = Secret::new(KEY.as_bytes().to_vec());
    let mut v = Client::connect(
        broker.mqtt_addr(),
        id,
        Some((id, vehicle_password(&key, id))),
    )
    .await;
    assert!(v.subscribe(&format!("vehicles/{id}/lock/request")).await);
    v.publish(
        &format!("vehicles/{id}/heartbeat"),
        r#"{"model":"e-scooter"}"#,
    )
    .await;
    v
}

/// The request id of the next request `v` receives.
async fn next_request(v: &mut Client) -> String {
    let payload = v
        .next(|p| match p {
            Packet::Publish(p) if p.topic.ends_with("/lock/request") => Some(p.payload.clone()),
            _ => None,
        })
        .await;
    let json: serde_json::Value = serde_json::from_slice(&payload).expect("a JSON request");
    json["request_id"].as_str().expect("request_id").to_owned()
}

async fn answer(v: &Client, id: &str, request: &str, ok: bool) {
    v.publish(
        &format!("vehicles/{id}/lock/result"),
        &format!(r#"{{"request_id":"{request}","ok":{ok}}}"#),
    )
    .await;
}

async fn unlock_status(broker: &Broker) -> JourneyStatus {
    let mut s = broker.engine().snapshot().await.expect("engine").journeys;
    assert_eq!(s.len(), 1);
    s.remove(0)
}

/// Polls the journey's figures until `done` (at most [`WAIT`]).
async fn until(
    broker: &Broker,
    what: &str,
    done: impl Fn(&JourneyStatus) -> bool,
) -> JourneyStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = unlock_status(broker).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            s.report.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next retained service state in `state` the observer receives.
async fn service_state(observer: &mut Client, state: &str) -> serde_json::Value {
    observer
        .next(|p| match p {
            Packet::Publish(p) => serde_json::from_slice::<serde_json::Value>(&p.payload)
                .ok()
                .filter(|j| j["state"] == state),
            _ => None,
        })
        .await
}

fn precision(s: &JourneyStatus, outcome: &str, state: &str) -> u64 {
    s.precision
        .iter()
        .filter(|r| r.outcome == outcome && r.state == state)
        .map(|r| r.total)
        .sum()
}

#[tokio::test]
async fn unlocks_are_measured_from_the_fleets_own_traffic() {
    let broker = start(&config()).await;
    let addr = broker.mqtt_addr();
    let mut backend =
        Client::connect(addr, "backend", Some(("backend", BACKEND_PASSWORD.into()))).await;
    assert!(backend.subscribe("vehicles/+/lock/result").await);
    let mut ok = vehicle(&broker, "ok-1").await;
    let mut broken = vehicle(&broker, "broken-1").await;
    let mut mute = vehicle(&broker, "mute-1").await;
    let forger = vehicle(&broker, "forger-1").await;

    // Success.
    backend
        .publish("vehicles/ok-1/lock/request", r#"{"request_id":"r1"}"#)
        .await;
    let r1 = next_request(&mut ok).await;
    answer(&ok, "ok-1", &r1, true).await;
    // Failure.
    backend
        .publish("vehicles/broken-1/lock/request", r#"{"request_id":"r2"}"#)
        .await;
    let r2 = next_request(&mut broken).await;
    answer(&broken, "broken-1", &r2, false).await;
    // No answer: timed out after 700 ms; then a late answer.
    backend
        .publish("vehicles/mute-1/lock/request", r#"{"request_id":"r3"}"#)
        .await;
    let r3 = next_request(&mut mute).await;
    until(&broker, "r3 timed out", |s| s.report.counts.timed_out == 1).await;
    answer(&mute, "mute-1", &r3, true).await;
    // An answer nobody asked for.
    answer(&ok, "ok-1", "r-unknown", true).await;
    // Another vehicle answering for ok-1 is refused by the ACL: ok-1's own answer counts.
    backend
        .publish("vehicles/ok-1/lock/request", r#"{"request_id":"r4"}"#)
        .await;
    let r4 = next_request(&mut ok).await;
    forger
        .publish(
            "vehicles/ok-1/lock/result",
            &format!(r#"{{"request_id":"{r4}","ok":false}}"#),
        )
        .await;
    answer(&ok, "ok-1", &r4, true).await;

    let s = until(&broker, "every answer read", |s| {
        let c = &s.report.counts;
        c.succeeded == 2 && c.late == 1 && c.unmatched == 1
    })
    .await;
    let c = &s.report.counts;
    assert_eq!(
        (
            c.requested,
            c.succeeded,
            c.failed,
            c.timed_out,
            c.late,
            c.unmatched
        ),
        (4, 2, 1, 1, 1, 1),
        "{c:?}"
    );
    assert_eq!((s.report.sli.good, s.report.sli.valid), (2, 4));
    assert_eq!(s.report.pending, 0);
    assert_eq!(precision(&s, "failed", "in_service"), 1);
    assert_eq!(precision(&s, "timed_out", "in_service"), 1);
    assert_eq!(precision(&s, "succeeded", "in_service"), 2);
    // The backend got exactly the vehicles' own answers (the forged one was dropped).
    let results = backend.received_for(Duration::from_millis(200)).await;
    assert!(
        results
            .iter()
            .all(|(topic, payload)| topic != "vehicles/ok-1/lock/result"
                || !payload.contains(r#""ok":false"#)),
        "{results:?}"
    );

    // The API and the metrics say the same.
    let (status, body) = http_get(&broker, "/api/v1/slo", "").await;
    assert_eq!(status, 200);
    let slo: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let j = &slo["journeys"][0];
    assert_eq!(j["name"], "journey-unlock");
    assert_eq!(j["counts"]["timed_out"], 1);
    assert_eq!(j["good"], 2);
    let (_, metrics) = http_get(&broker, "/metrics", "").await;
    assert!(
        metrics.contains(r#"fleet_journey_ends_total{journey="unlock",outcome="succeeded"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"fleet_slo_target_ratio{slo="journey-unlock"} 0.99"#));
    // The SLO page says it in plain words: two of the four failed on vehicles in service.
    let (status, page) = http_get(&broker, "/", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("Rider journey: unlock"), "{page}");
    assert!(
        page.contains("<strong>2</strong> failed on vehicles shown as in service"),
        "{page}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_vehicle_whose_unlocks_keep_failing_is_taken_out_and_its_next_success_brings_it_back() {
    let broker = start(&config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = Client::connect(
        addr,
        "backend:observer",
        Some(("backend", BACKEND_PASSWORD.into())),
    )
    .await;
    assert!(observer.subscribe("vehicles/jam-1/service").await);
    let backend =
        Client::connect(addr, "backend", Some(("backend", BACKEND_PASSWORD.into()))).await;
    let mut v = vehicle(&broker, "jam-1").await;
    service_state(&mut observer, "in_service").await;
    for i in 0..2 {
        backend
            .publish(
                "vehicles/jam-1/lock/request",
                &format!(r#"{{"request_id":"f{i}"}}"#),
            )
            .await;
        let r = next_request(&mut v).await;
        answer(&v, "jam-1", &r, false).await;
    }
    let out = service_state(&mut observer, "out_of_service").await;
    assert_eq!(out["reasons"][0]["kind"], "journey_failures", "{out}");
    assert_eq!(out["reasons"][0]["journey"], "unlock");
    let view = broker
        .engine()
        .vehicle("jam-1")
        .await
        .expect("engine")
        .expect("known");
    assert!(matches!(
        &view.reasons[..],
        [Reason::JourneyFailures { failures: 2, .. }]
    ));

    // A heartbeat does not bring it back; its next successful unlock does.
    v.publish("vehicles/jam-1/heartbeat", "{}").await;
    backend
        .publish("vehicles/jam-1/lock/request", r#"{"request_id":"ok"}"#)
        .await;
    let r = next_request(&mut v).await;
    answer(&v, "jam-1", &r, true).await;
    service_state(&mut observer, "in_service").await;
    // The success went to a vehicle the broker showed as out of service.
    let s = until(&broker, "the success counted", |s| {
        s.report.counts.succeeded == 1
    })
    .await;
    let row = s
        .precision
        .iter()
        .find(|r| r.outcome == "succeeded")
        .expect("a success row");
    assert_eq!(
        (row.state, row.reason),
        ("out_of_service", "journey_failures")
    );
    assert_eq!(row.model.as_deref(), Some("e-scooter"));
    assert_eq!(precision(&s, "failed", "in_service"), 2);
    let view = broker
        .engine()
        .vehicle("jam-1")
        .await
        .expect("engine")
        .expect("known");
    assert_eq!(view.state, ServiceState::InService);
    broker.shutdown().await;
}

#[tokio::test]
async fn unlocks_through_an_attached_mosquitto_are_measured_too() {
    if !mosquitto_installed() {
        return;
    }
    let upstream = Mosquitto::open();
    let mut config = test_config(UNLOCK);
    attach_to(&mut config, &upstream.url(), false);
    let broker = start(&config).await;
    wait_attached(&broker).await;
    let backend = Client::connect(upstream.addr(), "backend", None).await;
    let mut v = Client::connect(upstream.addr(), "att-1", None).await;
    assert!(v.subscribe("vehicles/att-1/lock/request").await);
    v.publish("vehicles/att-1/heartbeat", "{}").await;
    for (i, ok) in [true, false, true].into_iter().enumerate() {
        backend
            .publish(
                "vehicles/att-1/lock/request",
                &format!(r#"{{"request_id":"a{i}"}}"#),
            )
            .await;
        let r = next_request(&mut v).await;
        answer(&v, "att-1", &r, ok).await;
    }
    let s = until(&broker, "three unlocks", |s| {
        s.report.counts.succeeded + s.report.counts.failed == 3
    })
    .await;
    assert_eq!((s.report.counts.succeeded, s.report.counts.failed), (2, 1));
    assert_eq!(precision(&s, "failed", "in_service"), 1);
    broker.shutdown().await;
}

/// An MQTT 5 client whose incoming publishes come out of a channel.
async fn v5_client(
    addr: std::net::SocketAddr,
    id: &str,
    filter: Option<&str>,
) -> (
    rumqttc::v5::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    if let Some(f) = filter {
        client
            .subscribe(f, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .expect("queued");
    }
    let needs_suback = filter.is_some();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            let ready = match event {
                Event::Incoming(P5::ConnAck(_)) => !needs_suback,
                Event::Incoming(P5::SubAck(_)) => true,
                Event::Incoming(P5::Publish(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                    false
                }
                _ => false,
            };
            if let Some(t) = subscribed_tx.take_if(|_| ready) {
                let _ = t.send(());
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("connected in time")
        .expect("connection open");
    (client, rx)
}

#[tokio::test]
async fn mqtt5_correlation_data_matches_answers_to_requests() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS;
    let config = test_config(
        r#"
[[acl]]
topic = "vehicles/+/lock/#"
access = "readwrite"
who = "anyone"
[[journeys]]
name = "unlock"
request = "vehicles/{id}/lock/request"
response = "vehicles/{id}/lock/result"
key = "$correlation_data"
success = { field = "result", equals = "unlocked" }
"#,
    );
    let broker = start(&config).await;
    let addr = broker.mqtt_addr();
    let (backend, _) = v5_client(addr, "backend-5", None).await;
    let (vehicle, mut requests) = v5_client(addr, "cd-1", Some("vehicles/cd-1/lock/request")).await;
    let with = |data: &'static [u8]| PublishProperties {
        correlation_data: Some(bytes::Bytes::from_static(data)),
        ..PublishProperties::default()
    };
    for data in [&b"c-1"[..], &b"c-2"[..]] {
        backend
            .publish_with_properties(
                "vehicles/cd-1/lock/request",
                QoS::AtLeastOnce,
                false,
                r#"{"action":"unlock"}"#,
                with(data),
            )
            .await
            .expect("queued");
    }
    // The vehicle answers the second first, each with its request's correlation data.
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = tokio::time::timeout(WAIT, requests.recv())
            .await
            .expect("a request in time")
            .expect("open");
        got.push(
            p.properties
                .and_then(|p| p.correlation_data)
                .expect("correlation data kept"),
        );
    }
    let answer = |data: bytes::Bytes, result: &str| {
        let props = PublishProperties {
            correlation_data: Some(data),
            ..PublishProperties::default()
        };
        vehicle.publish_with_properties(
            "vehicles/cd-1/lock/result",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"result":"{result}"}}"#),
            props,
        )
    };
    answer(got[1].clone(), "jammed").await.expect("queued");
    answer(got[0].clone(), "unlocked").await.expect("queued");
    answer(bytes::Bytes::from_static(b"c-9"), "unlocked")
        .await
        .expect("queued");
    let s = until(&broker, "three answers", |s| {
        let c = &s.report.counts;
        c.succeeded + c.failed + c.unmatched == 3
    })
    .await;
    let c = &s.report.counts;
    assert_eq!((c.succeeded, c.failed, c.unmatched), (1, 1, 1), "{c:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn the_journey_slo_window_survives_a_restart() {
    let config = config();
    let broker = start(&config).await;
    let backend = Client::connect(
        broker.mqtt_addr(),
        "backend",
        Some(("backend", BACKEND_PASSWORD.into())),
    )
    .await;
    let mut v = vehicle(&broker, "rs-1").await;
    for (i, ok) in [true, false, true].into_iter().enumerate() {
        backend
            .publish(
                "vehicles/rs-1/lock/request",
                &format!(r#"{{"request_id":"s{i}"}}"#),
            )
            .await;
        let r = next_request(&mut v).await;
        answer(&v, "rs-1", &r, ok).await;
    }
    until(&broker, "three ends", |s| s.report.sli.valid == 3).await;
    broker.shutdown().await;

    let again = start(&config).await;
    let s = unlock_status(&again).await;
    assert_eq!((s.report.sli.good, s.report.sli.valid), (2, 3));
    again.shutdown().await;
}
