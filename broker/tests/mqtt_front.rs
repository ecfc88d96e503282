//! The MQTT front against real MQTT clients (rumqttc) on a free local port.
//!
//! "Nothing arrived" is shown without sleeping: after the refused message, something that
//! must arrive is sent on the same path, and it has to be the first thing that arrives.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fleet_broker::mqtt::acl::{PublishDenied, SubscribeDenied};
use fleet_broker::mqtt::{MqttError, MqttFront, MqttOptions, MqttStats, Uplink};
use rumqttc::{ConnectReturnCode, LastWill, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound for anything that should happen promptly on a loaded 2-core machine.
mod support;

use support::{spawn_client, Client, WAIT};

async fn start_front_with(
    opts: MqttOptions,
    capacity: usize,
) -> (MqttFront, mpsc::Receiver<Uplink>) {
    let (tx, rx) = mpsc::channel(capacity);
    let opts = MqttOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..opts
    };
    let front = timeout(WAIT, MqttFront::start(opts, tx))
        .await
        .expect("start timed out")
        .expect("front starts");
    (front, rx)
}

async fn start_front() -> (MqttFront, mpsc::Receiver<Uplink>) {
    start_front_with(MqttOptions::default(), 64).await
}

fn client_options(front: &MqttFront, id: &str) -> rumqttc::MqttOptions {
    let addr = front.local_addr();
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

impl Client {
    async fn expect_publish(&mut self) -> rumqttc::Publish {
        self.expect("a PUBLISH", |p| match p {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    async fn expect_suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.expect("a SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn expect_puback(&mut self) {
        self.expect("a PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await
    }

    /// The connection error that ends this client's event loop.
    async fn expect_connection_error(&mut self) -> String {
        let wait = async {
            loop {
                match self.packets.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => panic!("event loop gone without an error"),
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .expect("timed out waiting for the connection to end")
    }

    async fn publish(&self, topic: &str, qos: QoS, payload: &'static [u8]) {
        timeout(WAIT, self.mqtt.publish(topic, qos, false, payload))
            .await
            .expect("publish request timed out")
            .expect("publish request queued");
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        timeout(WAIT, self.mqtt.subscribe_many(filters))
            .await
            .expect("subscribe request timed out")
            .expect("subscribe request queued");
        self.expect_suback().await
    }
}

async fn connect_with(opts: rumqttc::MqttOptions) -> Client {
    let mut client = spawn_client(opts);
    let code = client
        .expect("a CONNACK", |p| match p {
            Packet::ConnAck(ack) => Some(ack.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ConnectReturnCode::Success);
    client
}

async fn connect(front: &MqttFront, id: &str) -> Client {
    connect_with(client_options(front, id)).await
}

async fn next_uplink(rx: &mut mpsc::Receiver<Uplink>) -> Uplink {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for an uplink")
        .expect("uplink channel open")
}

/// Waits until the front's counters satisfy `cond` (they are updated by connection tasks).
async fn wait_for_stats(front: &MqttFront, what: &str, cond: impl Fn(&MqttStats) -> bool) {
    let wait = async {
        while !cond(&front.stats()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if timeout(WAIT, wait).await.is_err() {
        panic!("timed out waiting for {what}; stats: {:?}", front.stats());
    }
}

fn uplink(client_id: &str, topic: &str, payload: &'static [u8]) -> Uplink {
    Uplink {
        client_id: client_id.to_owned(),
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload),
        ack: None,
        journey: None,
    }
}

#[tokio::test]
async fn a_vehicles_heartbeat_arrives_on_the_uplink_channel_with_its_client_id() {
    let (front, mut rx) = start_front().await;
    let mut v1 = connect(&front, "v1").await;

    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, br#"{"seq":1}"#)
        .await;
    v1.expect_puback().await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtMostOnce, b"")
        .await;

    assert_eq!(
        next_uplink(&mut rx).await,
        uplink("v1", "vehicles/v1/heartbeat", br#"{"seq":1}"#)
    );
    assert_eq!(
        next_uplink(&mut rx).await,
        uplink("v1", "vehicles/v1/heartbeat", b"")
    );
    // Counters are bumped by the connection task right after the hand-over.
    wait_for_stats(&front, "2 uplinks from 1 client", |s| {
        s.uplinks == 2 && s.connected_clients == 1
    })
    .await;
    assert_eq!(front.stats().publishes_denied, 0);
    front.shutdown().await;
}

#[tokio::test]
async fn error_and_ack_uplinks_arrive_too() {
    let (front, mut rx) = start_front().await;
    let v1 = connect(&front, "v1").await;

    v1.publish(
        "vehicles/v1/error",
        QoS::AtLeastOnce,
        br#"{"errors":[{"code":"BRAKE_SENSOR"}]}"#,
    )
    .await;
    v1.publish(
        "vehicles/v1/ack",
        QoS::AtLeastOnce,
        br#"{"id":"c1","ok":true}"#,
    )
    .await;

    assert_eq!(next_uplink(&mut rx).await.topic, "vehicles/v1/error");
    assert_eq!(next_uplink(&mut rx).await.topic, "vehicles/v1/ack");
    front.shutdown().await;
}

#[tokio::test]
async fn a_vehicle_publishing_on_another_vehicles_topic_is_dropped_counted_and_stays_connected() {
    let (front, mut rx) = start_front().await;
    let mut v1 = connect(&front, "v1").await;

    // QoS 1: MQTT 3.1.1 has no negative PUBACK, so the broker acks and drops it.
    v1.publish("vehicles/v2/heartbeat", QoS::AtLeastOnce, b"forged")
        .await;
    v1.expect_puback().await;
    v1.publish("vehicles/v2/error", QoS::AtMostOnce, b"forged")
        .await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, b"own")
        .await;
    v1.expect_puback().await;

    assert_eq!(
        next_uplink(&mut rx).await,
        uplink("v1", "vehicles/v1/heartbeat", b"own"),
        "the forged uplinks must not arrive"
    );
    let stats = front.stats();
    assert_eq!(stats.publishes_denied_for(PublishDenied::OtherVehicle), 2);
    assert_eq!(stats.publishes_denied, 2);
    assert_eq!(stats.connected_clients, 1, "the connection stays up");
    front.shutdown().await;
}

#[tokio::test]
async fn publishing_to_fleet_sli_or_its_own_command_topic_is_denied() {
    let (front, mut rx) = start_front().await;
    let mut observer = connect(&front, "ops-dashboard").await;
    assert_eq!(
        observer.subscribe(&["fleet/sli"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut v1 = connect(&front, "v1").await;
    assert_eq!(
        v1.subscribe(&["vehicles/v1/command"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    v1.publish("fleet/sli", QoS::AtLeastOnce, b"forged sli")
        .await;
    v1.publish("vehicles/v1/command", QoS::AtLeastOnce, b"forged command")
        .await;
    v1.publish("vehicles/v1/service", QoS::AtLeastOnce, b"forged state")
        .await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, b"own")
        .await;
    assert_eq!(
        next_uplink(&mut rx).await.payload,
        Bytes::from_static(b"own")
    );

    // The broker's own messages are the first thing either subscriber receives.
    front
        .publish("fleet/sli", Bytes::from_static(b"real sli"), true, false)
        .await
        .expect("broker publishes fleet/sli");
    front
        .publish(
            "vehicles/v1/command",
            Bytes::from_static(b"real command"),
            true,
            false,
        )
        .await
        .expect("broker publishes a command");
    assert_eq!(
        observer.expect_publish().await.payload,
        Bytes::from_static(b"real sli")
    );
    assert_eq!(
        v1.expect_publish().await.payload,
        Bytes::from_static(b"real command")
    );

    assert_eq!(
        front
            .stats()
            .publishes_denied_for(PublishDenied::BrokerOnly),
        3
    );
    front.shutdown().await;
}

#[tokio::test]
async fn unknown_topics_and_oversize_payloads_are_denied_and_counted() {
    let opts = MqttOptions {
        max_payload: 64,
        ..MqttOptions::default()
    };
    let (front, mut rx) = start_front_with(opts, 64).await;
    let v1 = connect(&front, "v1").await;

    v1.publish("vehicles/v1/status", QoS::AtLeastOnce, b"{}")
        .await;
    v1.publish("some/other/topic", QoS::AtMostOnce, b"{}").await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, &[b'x'; 65])
        .await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, &[b'x'; 64])
        .await;

    assert_eq!(next_uplink(&mut rx).await.payload.len(), 64);
    let stats = front.stats();
    assert_eq!(stats.publishes_denied_for(PublishDenied::UnknownTopic), 2);
    assert_eq!(stats.publishes_denied_for(PublishDenied::Oversize), 1);
    front.shutdown().await;
}

#[tokio::test]
async fn subscribing_to_another_vehicles_command_topic_is_refused_while_its_own_works() {
    let (front, _rx) = start_front().await;
    let mut v1 = connect(&front, "v1").await;

    let codes = v1
        .subscribe(&[
            "vehicles/v2/command",
            "vehicles/v1/command",
            "vehicles/+/command",
            "#",
            "$SYS/#",
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );

    front
        .publish(
            "vehicles/v2/command",
            Bytes::from_static(b"for v2"),
            true,
            false,
        )
        .await
        .expect("publish to v2");
    front
        .publish(
            "vehicles/v1/command",
            Bytes::from_static(b"for v1"),
            true,
            false,
        )
        .await
        .expect("publish to v1");
    assert_eq!(
        v1.expect_publish().await.payload,
        Bytes::from_static(b"for v1")
    );

    let stats = front.stats();
    assert_eq!(
        stats.subscribes_denied_for(SubscribeDenied::OtherVehicle),
        1
    );
    assert_eq!(stats.subscribes_denied_for(SubscribeDenied::TooBroad), 2);
    assert_eq!(stats.subscribes_denied_for(SubscribeDenied::SystemTopic), 1);
    assert_eq!(stats.subscribes_denied, 4);
    front.shutdown().await;
}

#[tokio::test]
async fn observers_may_subscribe_to_fleet_topics_and_all_service_states() {
    let (front, _rx) = start_front().await;
    let mut observer = connect(&front, "ops-dashboard-1").await;
    let codes = observer
        .subscribe(&["fleet/#", "vehicles/+/service", "vehicles/+/heartbeat"])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
        ]
    );

    front
        .publish("fleet/events", Bytes::from_static(b"event"), true, false)
        .await
        .expect("publish event");
    assert_eq!(observer.expect_publish().await.topic, "fleet/events");
    front
        .publish(
            "vehicles/v7/service",
            Bytes::from_static(b"state"),
            true,
            false,
        )
        .await
        .expect("publish state");
    assert_eq!(observer.expect_publish().await.topic, "vehicles/v7/service");
    front.shutdown().await;
}

#[tokio::test]
async fn a_broker_side_command_reaches_the_vehicle_at_qos_1() {
    let (front, _rx) = start_front().await;
    let mut v1 = connect(&front, "v1").await;
    v1.subscribe(&["vehicles/v1/command"]).await;

    front
        .publish(
            "vehicles/v1/command",
            Bytes::from_static(br#"{"id":"c1","command":"service_out"}"#),
            true,
            false,
        )
        .await
        .expect("publish command");

    let command = v1.expect_publish().await;
    assert_eq!(command.topic, "vehicles/v1/command");
    assert_eq!(command.qos, QoS::AtLeastOnce);
    assert!(!command.retain);
    assert_eq!(
        command.payload,
        Bytes::from_static(br#"{"id":"c1","command":"service_out"}"#)
    );
    front.shutdown().await;
}

#[tokio::test]
async fn a_retained_service_state_reaches_a_subscriber_that_connects_later() {
    let (front, _rx) = start_front().await;
    front
        .publish(
            "vehicles/v1/service",
            Bytes::from_static(br#"{"state":"in_service"}"#),
            true,
            true,
        )
        .await
        .expect("publish retained state");
    front
        .publish(
            "vehicles/v1/service",
            Bytes::from_static(br#"{"state":"out_of_service"}"#),
            true,
            true,
        )
        .await
        .expect("replace retained state");
    front
        .publish("fleet/sli", Bytes::from_static(b"sli"), true, true)
        .await
        .expect("publish retained sli");
    assert_eq!(front.stats().retained_messages, 2);

    let mut v1 = connect(&front, "v1").await;
    v1.subscribe(&["vehicles/v1/service"]).await;
    let state = v1.expect_publish().await;
    assert!(state.retain);
    assert_eq!(
        state.payload,
        Bytes::from_static(br#"{"state":"out_of_service"}"#),
        "only the latest retained state is kept"
    );

    let mut observer = connect(&front, "ops").await;
    observer.subscribe(&["fleet/sli"]).await;
    let sli = observer.expect_publish().await;
    assert!(sli.retain);
    assert_eq!(sli.payload, Bytes::from_static(b"sli"));

    // An empty retained payload clears the topic.
    front
        .publish("fleet/sli", Bytes::new(), true, true)
        .await
        .expect("clear retained sli");
    assert_eq!(front.stats().retained_messages, 1);
    front.shutdown().await;
}

#[tokio::test]
async fn a_retained_uplink_from_a_client_is_forwarded_but_not_stored() {
    let (front, mut rx) = start_front().await;
    let v1 = connect(&front, "v1").await;

    timeout(
        WAIT,
        v1.mqtt
            .publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, true, "{}"),
    )
    .await
    .expect("publish request timed out")
    .expect("publish request queued");
    assert_eq!(next_uplink(&mut rx).await.topic, "vehicles/v1/heartbeat");
    wait_for_stats(&front, "the retain request to be ignored", |s| {
        s.retained_ignored == 1
    })
    .await;
    assert_eq!(front.stats().retained_messages, 0);
    front.shutdown().await;
}

#[tokio::test]
async fn a_client_connecting_with_keep_alive_zero_is_accepted() {
    let (front, mut rx) = start_front().await;
    let mut opts = client_options(&front, "v1");
    opts.set_keep_alive(Duration::ZERO);
    let v1 = connect_with(opts).await;

    v1.publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, b"{}")
        .await;
    assert_eq!(next_uplink(&mut rx).await.client_id, "v1");
    front.shutdown().await;
}

#[tokio::test]
async fn a_will_on_a_topic_the_client_may_not_publish_is_refused_at_connect() {
    let (front, _rx) = start_front().await;
    let mut opts = client_options(&front, "v1");
    opts.set_last_will(LastWill::new(
        "vehicles/v2/command",
        "forged",
        QoS::AtLeastOnce,
        false,
    ));
    let mut v1 = spawn_client(opts);
    let error = v1.expect_connection_error().await;
    assert!(error.contains("NotAuthorized"), "{error}");
    assert_eq!(front.stats().connects_refused_will, 1);

    // A will on its own uplink topic is fine.
    let mut opts = client_options(&front, "v1");
    opts.set_last_will(LastWill::new(
        "vehicles/v1/heartbeat",
        "",
        QoS::AtMostOnce,
        false,
    ));
    connect_with(opts).await;
    front.shutdown().await;
}

#[tokio::test]
async fn a_full_uplink_channel_holds_the_publisher_until_there_is_room_and_counts_it() {
    let (front, mut rx) = start_front_with(MqttOptions::default(), 1).await;
    let v1 = connect(&front, "v1").await;

    v1.publish("vehicles/v1/heartbeat", QoS::AtMostOnce, b"1")
        .await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtMostOnce, b"2")
        .await;
    v1.publish("vehicles/v1/heartbeat", QoS::AtMostOnce, b"3")
        .await;
    wait_for_stats(&front, "the channel to be full", |s| {
        s.uplink_queue_full >= 1
    })
    .await;

    for expected in [b"1", b"2", b"3"] {
        assert_eq!(
            next_uplink(&mut rx).await.payload,
            Bytes::from_static(expected)
        );
    }
    wait_for_stats(&front, "3 uplinks handed over", |s| s.uplinks == 3).await;
    assert_eq!(
        front.stats().uplinks_dropped_closed,
        0,
        "nothing is dropped while the engine is slow"
    );
    front.shutdown().await;
}

#[tokio::test]
async fn an_mqtt_5_client_can_publish_uplinks_receive_commands_and_sees_denials() {
    use rumqttc::v5::mqttbytes::v5::{
        Packet as Packet5, PubAckReason, SubscribeReasonCode as Sub5,
    };
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let (front, mut rx) = start_front().await;
    let addr = front.local_addr();
    let mut opts = Options5::new("v5car", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = Client5::new(opts, 16);
    let (tx, mut packets) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event5::Incoming(packet) = event {
                if tx.send(packet).is_err() {
                    return;
                }
            }
        }
    });
    let mut next = async || {
        timeout(WAIT, packets.recv())
            .await
            .expect("timed out waiting for an MQTT 5 packet")
            .expect("MQTT 5 event loop ended")
    };

    assert!(matches!(next().await, Packet5::ConnAck(_)));
    client
        .subscribe("vehicles/v5car/command", QoS5::AtLeastOnce)
        .await
        .expect("subscribe queued");
    match next().await {
        Packet5::SubAck(ack) => {
            assert_eq!(ack.return_codes, vec![Sub5::Success(QoS5::AtLeastOnce)])
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
        .subscribe("vehicles/other/command", QoS5::AtLeastOnce)
        .await
        .expect("subscribe queued");
    match next().await {
        Packet5::SubAck(ack) => assert_eq!(ack.return_codes, vec![Sub5::NotAuthorized]),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    client
        .publish("fleet/sli", QoS5::AtLeastOnce, false, "forged")
        .await
        .expect("publish queued");
    match next().await {
        Packet5::PubAck(ack) => assert_eq!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    client
        .publish("vehicles/v5car/heartbeat", QoS5::AtLeastOnce, false, "{}")
        .await
        .expect("publish queued");
    match next().await {
        Packet5::PubAck(ack) => assert_eq!(ack.reason, PubAckReason::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(
        next_uplink(&mut rx).await,
        uplink("v5car", "vehicles/v5car/heartbeat", b"{}")
    );

    front
        .publish(
            "vehicles/v5car/command",
            Bytes::from_static(b"cmd"),
            true,
            false,
        )
        .await
        .expect("publish command");
    match next().await {
        Packet5::Publish(p) => assert_eq!(p.payload, Bytes::from_static(b"cmd")),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    front.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_stops_accepting_and_refuses_later_publishes() {
    let (front, _rx) = start_front().await;
    let addr = front.local_addr();
    let mut v1 = connect(&front, "v1").await;
    let handle = front.clone();

    timeout(WAIT, front.shutdown())
        .await
        .expect("shutdown timed out");

    v1.expect_connection_error().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    assert!(matches!(
        handle
            .publish("fleet/sli", Bytes::from_static(b"x"), false, false)
            .await,
        Err(MqttError::ShutDown)
    ));
}

#[tokio::test]
async fn broker_side_publishes_to_wildcard_or_system_topics_are_rejected() {
    let (front, _rx) = start_front().await;
    for topic in ["vehicles/+/command", "fleet/#", "$SYS/x", ""] {
        assert!(
            matches!(
                front.publish(topic, Bytes::new(), false, false).await,
                Err(MqttError::InvalidTopic { .. })
            ),
            "{topic:?}"
        );
    }
    front.shutdown().await;
}
