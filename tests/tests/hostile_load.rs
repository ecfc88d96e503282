//! Hostile load on the whole broker: one vehicle floods malformed and forbidden messages
//! as fast as its socket allows while 1,000 others heartbeat. The flood is rate-limited
//! and counted; no healthy vehicle is taken out, and a vehicle that really goes silent is
//! still taken out on time. Bounded: about five seconds of traffic on loopback.
//!
//! The vehicles speak raw MQTT 3.1.1 (a CONNECT, then QoS 0 PUBLISHes) so 1,000 of them
//! cost a socket and a small task each.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleet_tests::{start, test_config, Observer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

const HEALTHY: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
const RUN_FOR: Duration = Duration::from_millis(4_500);

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt_string(&mut body, id.as_bytes());
    packet(0x10, body)
}

fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(0x30, body)
}

async fn raw_vehicle(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream
        .write_all(&connect_packet(id))
        .await
        .expect("send CONNECT");
    let mut ack = [0u8; 4];
    timeout(WAIT, stream.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("read CONNACK");
    assert_eq!(ack, [0x20, 2, 0, 0], "{id} connected");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_vehicle_does_not_delay_heartbeat_loss_detection_for_1000_others() {
    let config = test_config(&format!(
        "[heartbeat]\ntimeout = \"{}s\"\n\
         [limits]\npublish_rate = 20\npublish_burst = 20\ndisconnect_after = 0\n",
        TIMEOUT.as_secs()
    ));
    let broker = start(&config).await;
    let addr = broker.mqtt_addr();
    let mut events = Observer::connect(addr, &["fleet/events"]).await;

    let mut healthy = Vec::with_capacity(HEALTHY);
    for i in 0..HEALTHY {
        let id = format!("hb-{i}");
        healthy.push((raw_vehicle(addr, &id).await, id));
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (mut stream, id) in healthy {
        tasks.spawn(async move {
            let heartbeat = publish_packet(&format!("vehicles/{id}/heartbeat"), b"{}");
            while started.elapsed() < RUN_FOR {
                if stream.write_all(&heartbeat).await.is_err() {
                    return Err(id);
                }
                sleep(HEARTBEAT_EVERY).await;
            }
            Ok(())
        });
    }

    let mut flooder = raw_vehicle(addr, "flooder").await;
    let flood = tokio::spawn(async move {
        let mut batch = Vec::new();
        for (topic, payload) in [
            ("vehicles/flooder/heartbeat", &b"{not json"[..]),
            ("vehicles/flooder/error", &b"\x01\xff\xff\xff\xff\xff"[..]),
            ("vehicles/flooder/ack", &b"{\"id\":\"\"}"[..]),
            ("vehicles/hb-1/heartbeat", &b"{}"[..]),
            ("fleet/sli", &b"forged"[..]),
        ] {
            batch.extend(publish_packet(topic, payload));
        }
        let mut sent = 0u64;
        while started.elapsed() < RUN_FOR {
            if flooder.write_all(&batch).await.is_err() {
                break;
            }
            sent += 5;
            tokio::task::yield_now().await;
        }
        sent
    });

    let silent = raw_vehicle(addr, "goes-silent").await;
    let mut silent = silent;
    silent
        .write_all(&publish_packet("vehicles/goes-silent/heartbeat", b"{}"))
        .await
        .expect("last heartbeat");
    let last_heard = Instant::now();

    let lost = events
        .wait_for("goes-silent to be taken out", |s| {
            s.json["vehicle"] == "goes-silent" && s.json["to"] == "out_of_service"
        })
        .await;
    let detected_after = last_heard.elapsed();
    assert_eq!(lost.json["mds"]["event_types"][0], "comms_lost");
    assert!(
        detected_after < TIMEOUT + Duration::from_millis(1_500),
        "heartbeat loss detected {detected_after:?} after the last heartbeat (timeout {TIMEOUT:?})"
    );

    let rest = RUN_FOR.saturating_sub(started.elapsed());
    let seen = events.collect_for(rest).await;
    let wrongly_out: HashSet<String> = seen
        .iter()
        .filter(|s| s.json["to"] == "out_of_service")
        .filter_map(|s| s.json["vehicle"].as_str().map(str::to_owned))
        .filter(|v| v.starts_with("hb-"))
        .collect();
    assert!(
        wrongly_out.is_empty(),
        "healthy vehicles taken out during the flood: {wrongly_out:?}"
    );

    while let Some(done) = tasks.join_next().await {
        if let Err(id) = done.expect("heartbeat task") {
            panic!("{id} lost its connection during the flood");
        }
    }
    let flooded = flood.await.expect("flood task");
    let stats = broker.mqtt_stats();
    assert!(flooded > 1_000, "the flooder sent only {flooded} messages");
    assert!(
        stats.publishes_rate_limited > 0,
        "the flood was not rate-limited: {stats:?}"
    );
    broker.shutdown().await;
}
