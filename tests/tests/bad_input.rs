//! End to end: hostile and broken input is refused and counted, and never disturbs the
//! rest of the fleet.

use std::time::Duration;

use fleet_tests::{start, test_config, Observer, WAIT};
use sim_device::{Vehicle, VehicleOptions};

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_vehicle_publishing_on_another_vehicles_topic_has_no_effect() {
    let broker = start(&test_config(
        "[faults.default]\nthreshold = 1\nwindow = \"1m\"\n",
    ))
    .await;
    let mut victim = Vehicle::connect(broker.mqtt_addr(), "victim", VehicleOptions::default())
        .await
        .expect("victim connects");
    victim.heartbeat().await.expect("heartbeat");
    let spoofer = Vehicle::connect(broker.mqtt_addr(), "spoofer", VehicleOptions::default())
        .await
        .expect("spoofer connects");
    let fault = br#"{"errors":[{"code":"BRAKE_SENSOR","count":5}]}"#.to_vec();
    spoofer
        .publish_to("vehicles/victim/error", fault.clone())
        .await
        .expect("queued");
    spoofer
        .publish_to(
            "vehicles/victim/command",
            br#"{"id":"x","command":"service_out","reasons":[],"issued_at":1}"#.to_vec(),
        )
        .await
        .expect("queued");
    spoofer
        .publish_to("vehicles/ghost/heartbeat", Vec::new())
        .await
        .expect("queued");
    // The spoofer's own link still works: its own heartbeat registers it.
    spoofer.heartbeat().await.expect("heartbeat");
    let engine = broker.engine().clone();
    tokio::time::timeout(WAIT, async {
        while engine.vehicle("spoofer").await.expect("engine").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("spoofer registered through its own topic");

    assert!(broker.mqtt_stats().publishes_denied >= 3);
    let victim_view = engine
        .vehicle("victim")
        .await
        .expect("engine")
        .expect("victim known");
    assert!(victim_view.reasons.is_empty(), "{victim_view:?}");
    assert_eq!(engine.vehicle("ghost").await.expect("engine"), None);
    assert_eq!(victim.next_command(Duration::from_millis(300)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_and_oversize_payloads_are_counted_and_the_rest_keeps_working() {
    let broker = start(&test_config("")).await;
    let mut events = Observer::connect(broker.mqtt_addr(), &["vehicles/+/service"]).await;
    let bad = Vehicle::connect(broker.mqtt_addr(), "noisy", VehicleOptions::default())
        .await
        .expect("connects");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("heartbeat", b"{not json".to_vec()),
        ("heartbeat", br#"{"battery":"full"}"#.to_vec()),
        ("heartbeat", br#"{"battery":250}"#.to_vec()),
        ("error", br#"{"errors":[{"code":"lowercase"}]}"#.to_vec()),
        ("error", br#"{"errors":"BRAKE"}"#.to_vec()),
        ("ack", br#"{"ok":true}"#.to_vec()),
        ("heartbeat", vec![0xff, 0xfe, 0x00]),
    ];
    for (kind, payload) in &cases {
        bad.publish(kind, payload.clone()).await.expect("queued");
    }
    // Over max_payload (but within the MQTT packet limit): refused by the front's ACL
    // before decoding, and the client stays connected.
    bad.publish("heartbeat", vec![b' '; 1500])
        .await
        .expect("queued");
    for topic in [
        "vehicles/noisy/status",
        "fleet/sli",
        "noisy",
        "vehicles/no isy/heartbeat",
    ] {
        bad.publish_to(topic, b"{}".to_vec()).await.expect("queued");
    }
    let metrics = broker.metrics().clone();
    until("every bad publish counted", || {
        metrics.rejected("malformed") + metrics.rejected("invalid") >= cases.len() as u64
            && broker.mqtt_stats().publishes_denied >= 5
    })
    .await;
    assert!(metrics.rejected("invalid") >= 2);
    let stats = broker.mqtt_stats();
    assert_eq!(
        stats.publishes_denied_for(fleet_broker::mqtt::acl::PublishDenied::Oversize),
        1
    );
    assert!(stats.publishes_denied >= 5);

    // A well-behaved vehicle is unaffected, and so is the noisy one's next good heartbeat.
    let good = Vehicle::connect(broker.mqtt_addr(), "good", VehicleOptions::default())
        .await
        .expect("connects");
    good.heartbeat().await.expect("heartbeat");
    bad.heartbeat().await.expect("heartbeat");
    events
        .wait_for("good registered", |s| s.topic == "vehicles/good/service")
        .await;
    let engine = broker.engine().clone();
    tokio::time::timeout(WAIT, async {
        while engine.vehicle("noisy").await.expect("engine").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("noisy vehicle's good heartbeat applied");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_vehicle_cannot_subscribe_to_other_vehicles_commands_but_may_read_fleet_topics() {
    let broker = start(&test_config("")).await;
    // Observer subscriptions assert SUBACK success.
    let _reader = Observer::connect(broker.mqtt_addr(), &["fleet/#", "vehicles/+/service"]).await;

    let mut opts = rumqttc::MqttOptions::new("nosy", "127.0.0.1", broker.mqtt_addr().port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 16);
    for f in ["vehicles/other/command", "vehicles/+/command", "#"] {
        client
            .subscribe(f, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("queued");
    }
    let mut refused = 0;
    tokio::time::timeout(WAIT, async {
        let mut acks = 0;
        while acks < 3 {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) =
                eventloop.poll().await.expect("connection stays up")
            {
                acks += 1;
                if matches!(
                    ack.return_codes.first(),
                    Some(rumqttc::SubscribeReasonCode::Failure)
                ) {
                    refused += 1;
                }
            }
        }
    })
    .await
    .expect("three SUBACKs");
    assert_eq!(refused, 3);
    assert!(broker.mqtt_stats().subscribes_denied >= 3);
    broker.shutdown().await;
}
