//! The fleet's own MQTT on the broker: the whole health flow on a custom topic layout
//! (mosquitto_pub/sub as the clients), telemetry on a liveness topic keeping a vehicle in
//! service, and lock commands from a backend user that only their vehicle receives, with
//! results only the backend reads.

use std::process::Stdio;
use std::time::Duration;

use fleet_broker::mqtt::secret::{vehicle_password, Secret, SecretHash};
use fleet_tests::{mosquitto_clients, start, test_config, Client, WAIT};
use rumqttc::Packet;
use sim_device::{Vehicle, VehicleOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const LAYOUT: &str = "[topics]\nheartbeat = \"scooters/{id}/hb\"\nerror = \"scooters/{id}/err\"\n\
    ack = \"scooters/{id}/ack\"\ncommand = \"scooters/{id}/cmd\"\nservice = \"scooters/{id}/state\"\n\
    events = \"ops/events\"\nsli = \"ops/sli\"\nalerts = \"ops/alerts\"\n";

async fn mosquitto_pub(port: u16, id: &str, topic: &str, message: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            id,
            "-q",
            "1",
        ])
        .args(["-t", topic, "-m", message])
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub -t {topic}");
}

/// `mosquitto_sub -v` on `topics`, its lines on a channel.
fn mosquitto_sub(port: u16, topics: &[&str]) -> (Child, mpsc::UnboundedReceiver<String>) {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"]);
    for t in topics {
        cmd.args(["-t", t]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next line that satisfies `want`, within [`WAIT`]; panics naming `what`.
async fn line(
    rx: &mut mpsc::UnboundedReceiver<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    tokio::time::timeout(WAIT, async {
        while let Some(l) = rx.recv().await {
            if want(&l) {
                return l;
            }
        }
        panic!("mosquitto_sub ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn the_health_flow_runs_on_a_custom_topic_layout_with_mosquitto_clients() {
    if !mosquitto_clients() {
        return;
    }
    let config = test_config(&format!(
        "{LAYOUT}[heartbeat]\ntimeout = \"1s\"\n[faults.default]\nthreshold = 1\nwindow = \"1m\"\n"
    ));
    let broker = start(&config).await;
    let port = broker.mqtt_addr().port();
    let (_sub, mut seen) = mosquitto_sub(port, &["ops/events", "scooters/+/state"]);
    // mosquitto_sub has subscribed once the retained SLI is there for it (ops/sli is not
    // subscribed: the state topic of a first vehicle tells instead).
    mosquitto_pub(port, "s1", "scooters/s1/hb", r#"{"battery":70}"#).await;
    let state = line(&mut seen, "s1 registered", |l| {
        l.starts_with("scooters/s1/state ")
    })
    .await;
    assert!(state.contains(r#""state":"in_service""#), "{state}");

    // The contract v1 names mean nothing in this layout: nothing registers s9.
    mosquitto_pub(port, "s9", "vehicles/s9/heartbeat", "{}").await;

    let lost = line(&mut seen, "s1 lost", |l| {
        l.starts_with("ops/events ") && l.contains("comms_lost")
    })
    .await;
    assert!(lost.contains(r#""vehicle":"s1""#), "{lost}");
    mosquitto_pub(port, "s1", "scooters/s1/hb", "{}").await;
    line(&mut seen, "s1 back", |l| {
        l.starts_with("ops/events ") && l.contains("comms_restored")
    })
    .await;
    mosquitto_pub(
        port,
        "s1",
        "scooters/s1/err",
        r#"{"errors":[{"code":"BRAKE_SENSOR"}]}"#,
    )
    .await;
    let fault = line(&mut seen, "s1 faulted", |l| {
        l.starts_with("scooters/s1/state ") && l.contains("hardware_fault")
    })
    .await;
    assert!(fault.contains("out_of_service"), "{fault}");

    // A vehicle gets its commands on its command template.
    let layout = fleet_contract::LayoutSection {
        heartbeat: "scooters/{id}/hb".into(),
        error: "scooters/{id}/err".into(),
        ack: "scooters/{id}/ack".into(),
        command: "scooters/{id}/cmd".into(),
        service: "scooters/{id}/state".into(),
        ..Default::default()
    };
    let opts = VehicleOptions {
        topics: layout.topics().expect("layout"),
        ..VehicleOptions::default()
    };
    let mut s2 = Vehicle::connect(broker.mqtt_addr(), "s2", opts)
        .await
        .expect("s2 connects to scooters/s2/cmd");
    s2.heartbeat().await.expect("heartbeat");
    let command = s2
        .next_command(WAIT)
        .await
        .expect("a command on scooters/s2/cmd");
    assert_eq!(command.command, "service_out");

    assert!(broker
        .engine()
        .vehicle("s9")
        .await
        .expect("engine")
        .is_none());
    s2.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn telemetry_on_a_liveness_topic_keeps_a_vehicle_in_service_without_heartbeats() {
    let config = test_config(
        "[topics]\nliveness = [\"vehicles/{id}/telemetry/#\"]\n[heartbeat]\ntimeout = \"1s\"\n\
         [[acl]]\ntopic = \"vehicles/+/telemetry/#\"\naccess = \"read\"\nwho = \"observers\"\n",
    );
    let broker = start(&config).await;
    let mut backend = Client::connect(broker.mqtt_addr(), "telemetry-backend", None).await;
    assert!(backend.subscribe("vehicles/+/telemetry/#").await);
    let v = Client::connect(broker.mqtt_addr(), "tele-1", None).await;
    // Three timeouts long, telemetry only: never taken out.
    for i in 0..10 {
        v.publish("vehicles/tele-1/telemetry/gps", &format!("{{\"lat\":{i}}}"))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let view = broker
        .engine()
        .vehicle("tele-1")
        .await
        .expect("engine")
        .expect("registered");
    assert_eq!(view.state, fleet_rules::ServiceState::InService, "{view:?}");
    assert!(view.reasons.is_empty());
    // The telemetry is the fleet's traffic: routed to its reader, unchanged.
    let got = backend.received_for(Duration::from_millis(200)).await;
    assert_eq!(
        got.iter()
            .filter(|(t, _)| t == "vehicles/tele-1/telemetry/gps")
            .count(),
        10,
        "{got:?}"
    );
    // Silent: out after the timeout, like any vehicle.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view = broker
            .engine()
            .vehicle("tele-1")
            .await
            .expect("engine")
            .expect("known");
        if view.state == fleet_rules::ServiceState::OutOfService {
            assert!(matches!(
                view.reasons[0],
                fleet_rules::Reason::HeartbeatLost { .. }
            ));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never taken out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_backend_locks_one_vehicle_and_only_it_sees_the_command_and_only_the_backend_its_result()
{
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let backend_password = "backend-password-123";
    let hash = SecretHash::compute(backend_password.as_bytes(), b"saltsalt", 10);
    let config = test_config(&format!(
        "[auth]\nmode = \"hmac\"\nfleet_key = \"{KEY}\"\n\
         [[auth.users]]\nname = \"backend\"\npassword_hash = \"{hash}\"\nrole = \"backend\"\n\
         [[acl]]\ntopic = \"vehicles/+/lock\"\naccess = \"write\"\nwho = \"backend\"\n\
         [[acl]]\ntopic = \"vehicles/%c/lock\"\naccess = \"read\"\nwho = \"vehicles\"\n\
         [[acl]]\ntopic = \"vehicles/%c/lock/result\"\naccess = \"write\"\nwho = \"vehicles\"\n\
         [[acl]]\ntopic = \"vehicles/+/lock/result\"\naccess = \"read\"\nwho = \"backend\"\n"
    ));
    let broker = start(&config).await;
    let addr = broker.mqtt_addr();
    let key = Secret::new(KEY.as_bytes().to_vec());
    let login = |id: &'static str| Some((id, vehicle_password(&key, id)));
    let mut backend =
        Client::connect(addr, "backend", Some(("backend", backend_password.into()))).await;
    let mut v1 = Client::connect(addr, "v1", login("v1")).await;
    let mut v2 = Client::connect(addr, "v2", login("v2")).await;
    assert!(backend.subscribe("vehicles/+/lock/result").await);
    assert!(v1.subscribe("vehicles/v1/lock").await);
    assert!(v2.subscribe("vehicles/v2/lock").await);
    // Another vehicle's commands and everyone's results are not for a vehicle.
    assert!(!v2.subscribe("vehicles/v1/lock").await);
    assert!(!v2.subscribe("vehicles/+/lock").await);
    assert!(!v1.subscribe("vehicles/+/lock/result").await);

    backend
        .publish(
            "vehicles/v1/lock",
            r#"{"request_id":"r1","action":"unlock"}"#,
        )
        .await;
    let got = v1
        .next(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.payload.clone())),
            _ => None,
        })
        .await;
    assert_eq!(got.0, "vehicles/v1/lock");
    v1.publish(
        "vehicles/v1/lock/result",
        r#"{"request_id":"r1","ok":true}"#,
    )
    .await;
    // v2 may not forge v1's result, nor command itself.
    v2.publish(
        "vehicles/v1/lock/result",
        r#"{"request_id":"r1","ok":false}"#,
    )
    .await;
    v2.publish("vehicles/v2/lock", r#"{"action":"unlock"}"#)
        .await;
    let results = backend.received_for(Duration::from_millis(500)).await;
    assert_eq!(
        results,
        vec![(
            "vehicles/v1/lock/result".to_owned(),
            r#"{"request_id":"r1","ok":true}"#.to_owned()
        )]
    );
    assert!(
        v2.received_for(Duration::from_millis(200)).await.is_empty(),
        "v2 saw another vehicle's traffic"
    );
    let stats = broker.mqtt_stats();
    let rule = |name: &str| {
        stats
            .passthrough_by_rule
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    };
    assert_eq!(rule("acl[0]"), 1, "{:?}", stats.passthrough_by_rule);
    assert_eq!(rule("acl[2]"), 1, "{:?}", stats.passthrough_by_rule);
    broker.shutdown().await;
}
