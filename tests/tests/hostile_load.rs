//! Hostile load on the whole broker: one vehicle floods malformed and forbidden messages
//! as fast as its socket allows while 1,000 others heartbeat. The flood is rate-limited
//! and counted; no healthy vehicle is ever taken out (every event of the run is looked
//! at), a vehicle that really goes silent is taken out, and the engine's census agrees.
//! Bounded: about five seconds of traffic on loopback, every wait limited.
//!
//! The vehicles speak raw MQTT 3.1.1 (a CONNECT, then QoS 0 PUBLISHes) so 1,000 of them
//! cost a socket and a small task each.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleet_rules::{Census, Reason};
use fleet_tests::{start, test_config, Observer, Seen, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

const HEALTHY: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
const RUN_FOR: Duration = Duration::from_millis(4_500);
const PUBLISH_RATE: u32 = 20;
const PUBLISH_BURST: u32 = 20;

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

fn event_of(s: &Seen) -> (String, String, String, String) {
    let field = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    (
        field(&s.json["vehicle"]),
        field(&s.json["change"]),
        field(&s.json["reason"]["kind"]),
        field(&s.json["to"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_rate_limited_while_1000_others_stay_in_service_and_a_silent_one_goes_out() {
    let config = test_config(&format!(
        "[heartbeat]\ntimeout = \"{}s\"\n\
         [limits]\npublish_rate = {PUBLISH_RATE}\npublish_burst = {PUBLISH_BURST}\n\
         disconnect_after = 0\n",
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
    // The healthy vehicles heartbeat until the end is checked, not for a fixed time: a
    // vehicle that stopped early would rightly go out and blur the census.
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (mut stream, id) in healthy {
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            let heartbeat = publish_packet(&format!("vehicles/{id}/heartbeat"), b"{}");
            while !*stopped.borrow() {
                if stream.write_all(&heartbeat).await.is_err() {
                    return Err(id);
                }
                tokio::select! {
                    _ = sleep(HEARTBEAT_EVERY) => {}
                    changed = stopped.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
    }

    let flood_began = Instant::now();
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
        while flood_began.elapsed() < RUN_FOR {
            if flooder.write_all(&batch).await.is_err() {
                break;
            }
            sent += 5;
            tokio::task::yield_now().await;
        }
        sent
    });

    let mut silent = raw_vehicle(addr, "goes-silent").await;
    silent
        .write_all(&publish_packet("vehicles/goes-silent/heartbeat", b"{}"))
        .await
        .expect("last heartbeat");

    // Every event of the run is kept: the ones before the silent vehicle's loss too.
    let mut seen = events
        .collect_until("goes-silent to be taken out", |s| {
            s.json["vehicle"] == "goes-silent" && s.json["to"] == "out_of_service"
        })
        .await;
    let lost = seen.last().expect("the loss").json.clone();
    assert_eq!(
        (&lost["from"], &lost["change"], &lost["reason"]["kind"]),
        (
            &serde_json::json!("in_service"),
            &serde_json::json!("set"),
            &serde_json::json!("heartbeat_lost")
        ),
        "{lost}"
    );
    assert_eq!(
        lost["mds"]["event_types"],
        serde_json::json!(["comms_lost"])
    );

    let flooded = timeout(RUN_FOR + WAIT, flood)
        .await
        .expect("the flood ends")
        .expect("flood task");

    // The census while the healthy vehicles still heartbeat: all of them in, the silent
    // one out for heartbeat_lost, and the flooder unknown: everything it sent was
    // refused (forbidden topics) or rejected (malformed), and rejected input registers
    // nothing.
    let engine = broker.engine();
    let snapshot = timeout(WAIT, engine.snapshot())
        .await
        .expect("the engine answers")
        .expect("engine running");
    assert_eq!(
        snapshot.census,
        Census {
            total: HEALTHY + 1,
            in_service: HEALTHY,
            out_of_service: 1,
            heartbeat_lost: 1,
            hardware_fault: 0,
            journey_failures: 0,
            maintenance: 0,
            held: 0,
        }
    );
    let gone = engine
        .vehicle("goes-silent")
        .await
        .expect("engine running")
        .expect("goes-silent is known");
    assert!(
        matches!(gone.reasons[..], [Reason::HeartbeatLost { .. }]),
        "{:?}",
        gone.reasons
    );
    let flooder = engine.vehicle("flooder").await.expect("engine running");
    assert!(flooder.is_none(), "the flooder registered: {flooder:?}");

    // The silent vehicle comes back. Its event is published after every event before it,
    // so once it is seen, nothing of the run is still on its way.
    silent
        .write_all(&publish_packet("vehicles/goes-silent/heartbeat", b"{}"))
        .await
        .expect("heartbeat again");
    seen.extend(
        events
            .collect_until("goes-silent back in service", |s| {
                s.json["vehicle"] == "goes-silent" && s.json["to"] == "in_service"
            })
            .await,
    );
    let wrongly_out: BTreeSet<String> = seen
        .iter()
        .filter(|s| s.json["to"] == "out_of_service")
        .filter_map(|s| s.json["vehicle"].as_str().map(str::to_owned))
        .filter(|v| v.starts_with("hb-"))
        .collect();
    assert!(
        wrongly_out.is_empty(),
        "healthy vehicles taken out during the flood: {wrongly_out:?}"
    );
    let all: Vec<_> = seen.iter().map(event_of).collect();
    let expected = |change: &str, to: &str| {
        (
            "goes-silent".to_owned(),
            change.to_owned(),
            "heartbeat_lost".to_owned(),
            to.to_owned(),
        )
    };
    assert_eq!(
        all,
        [
            expected("set", "out_of_service"),
            expected("cleared", "in_service")
        ],
        "the only events of the run are the silent vehicle's loss and return"
    );

    stop.send(true).expect("heartbeat tasks listen");
    let joined = timeout(WAIT, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(id) = done.expect("heartbeat task") {
                panic!("{id} lost its connection during the flood");
            }
        }
    })
    .await;
    assert!(joined.is_ok(), "heartbeat tasks did not stop");

    // The flood was rate-limited: what got past the limiter (then refused by the topic
    // ACL, or rejected by ingest) is at most the bucket's burst plus its refill over the
    // flooder's whole connection, and the flooder's excess was dropped and counted.
    let flood_lasted = flood_began.elapsed().as_secs_f64();
    let stats = broker.mqtt_stats();
    let rejected: u64 = broker.metrics().rejections().iter().map(|(_, n)| n).sum();
    let passed = stats.publishes_denied + rejected;
    let allowed = f64::from(PUBLISH_BURST) + f64::from(PUBLISH_RATE) * flood_lasted;
    assert!(flooded > 1_000, "the flooder sent only {flooded} messages");
    assert!(
        passed >= u64::from(PUBLISH_BURST) && passed as f64 <= allowed,
        "{passed} flood messages got past the limiter (allowed {allowed:.0}): {stats:?}"
    );
    assert!(
        stats.publishes_rate_limited > 0 && stats.publishes_rate_limited + passed <= flooded,
        "the flood was not rate-limited as sent ({flooded}): {stats:?}"
    );
    broker.shutdown().await;
}
