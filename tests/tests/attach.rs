//! Attach mode against real upstream brokers: an upstream outage makes the broker blind,
//! not trigger-happy; nats-server (MQTT over JetStream) as a second kind of upstream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_broker::Broker;
use fleet_tests::upstream::{attach_to, mosquitto_installed, wait_attached, Mosquitto};
use fleet_tests::{start, test_config, Observer, WAIT};
use sim_device::fleet::{Fleet, FleetOptions};

/// Polls `check` every 50 ms for up to `limit`.
async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let polls = limit.as_millis() / 50;
    for _ in 0..polls {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}

async fn in_service(broker: &Broker) -> (usize, usize) {
    let sli = broker.engine().sli().await.expect("engine answers");
    (sli.in_service, sli.fleet)
}

/// `GET path` on the ops API: the status code.
async fn http_status(broker: &Broker, path: &str) -> u16 {
    fleet_tests::http_get(broker, path, "").await.0
}

const VEHICLES: usize = 1000;
const OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_for_ten_seconds_takes_no_vehicle_out_and_the_blind_time_is_reported() {
    if !mosquitto_installed() {
        return;
    }
    let mut upstream = Mosquitto::open();
    // A 5 s timeout: without blindness every vehicle would be silent for twice that.
    let mut config = test_config("[heartbeat]\ntimeout = \"5s\"\nrestart_grace = \"15s\"\n");
    attach_to(&mut config, &upstream.url(), false);
    let broker = start(&config).await;
    wait_attached(&broker).await;

    let fleet = Fleet::start(&FleetOptions {
        brokers: vec![upstream.addr()],
        vehicles: VEHICLES,
        prefix: "u".into(),
        heartbeat: Duration::from_secs(1),
        ramp_per_sec: 5000,
        keep_alive: Duration::from_secs(30),
        ..FleetOptions::default()
    });
    until("the whole fleet in service", 3 * WAIT, async || {
        in_service(&broker).await == (VEHICLES, VEHICLES)
    })
    .await;
    assert_eq!(http_status(&broker, "/readyz").await, 200);

    upstream.kill();
    until("the broker sees the link down", WAIT, async || {
        broker.metrics().blind.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        http_status(&broker, "/readyz").await,
        503,
        "blind: not ready"
    );
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        in_service(&broker).await,
        (VEHICLES, VEHICLES),
        "nobody is taken out while blind"
    );
    upstream.restart();

    until("the link is back", WAIT, async || {
        broker.metrics().blind.load(Ordering::Relaxed) == 0
    })
    .await;
    // Every vehicle talks again within the grace: the fleet is tracked from new uplinks.
    let heartbeats_at_restore = broker.metrics().heartbeats.load(Ordering::Relaxed);
    until("every vehicle heard again", 3 * WAIT, async || {
        fleet.ready() == VEHICLES
            && broker.metrics().heartbeats.load(Ordering::Relaxed)
                >= heartbeats_at_restore + 2 * VEHICLES as u64
    })
    .await;
    // Past the grace of the restore: anyone not talking would be out by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(in_service(&broker).await, (VEHICLES, VEHICLES));
    assert_eq!(
        broker.metrics().transitions.load(Ordering::Relaxed),
        0,
        "no transition at all"
    );
    let blind_ms = broker.metrics().blind_ms.load(Ordering::Relaxed);
    assert!(
        (OUTAGE.as_millis() as u64..OUTAGE.as_millis() as u64 + 8_000).contains(&blind_ms),
        "blind for {blind_ms} ms"
    );
    let sli = broker.engine().sli().await.expect("engine");
    assert!(
        sli.downtime_ms >= OUTAGE.as_millis() as u64,
        "blind time is downtime in the SLI: {sli:?}"
    );
    let up = broker.front().upstream_stats().expect("attach mode");
    assert_eq!(up.connects, 2, "{up:?}");
    assert_eq!(http_status(&broker, "/readyz").await, 200);

    // Mosquitto without persistence lost every retained message: they are published again.
    let mut backend = Observer::connect(upstream.addr(), &["vehicles/+/service"]).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < VEHICLES {
        let s = backend
            .wait_for("retained service state after the upstream restart", |s| {
                s.retain
            })
            .await;
        seen.insert(s.topic);
    }
    fleet.shutdown().await;
    broker.shutdown().await;
}

/// Whether `nats-server` is installed (see [`fleet_tests::tool_installed`]).
fn nats_installed() -> bool {
    fleet_tests::tool_installed("nats-server", &["--version"], "nats-server")
}

/// nats-server with the configuration `fleet-broker acl --for nats` prints (MQTT over
/// JetStream, one user per vehicle): the health flow works and a vehicle cannot publish
/// another's heartbeat.
#[tokio::test]
async fn nats_server_with_the_generated_permissions_carries_the_health_flow() {
    if !nats_installed() {
        return;
    }
    use fleet_broker::cli::upstream_acl::{render, Principals, Upstream};
    let dir = tempfile::tempdir().expect("temp dir");
    let (mqtt_port, nats_port) = (free_port(), free_port());
    let conf = render(
        Upstream::Nats,
        &fleet_broker::contract::Topics::default(),
        &Principals {
            broker: "fleet-broker".into(),
            observers: vec!["observer".into()],
        },
    )
    .replace(
        "/var/lib/nats",
        &dir.path().join("js").display().to_string(),
    )
    .replace(
        "mqtt { port: 1883 }",
        &format!("mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\nlisten: 127.0.0.1:{nats_port}"),
    )
    .replace("VEHICLE_ID", "n-1");
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf).expect("write nats.conf");
    let env = [
        ("FLEET_UPSTREAM_PASSWORD", "pw-broker"),
        ("OBSERVER_PASSWORD", "pw-observer"),
        ("VEHICLE_PASSWORD", "pw-n-1"),
    ];
    let check = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .arg("-t")
        .envs(env)
        .status()
        .expect("nats-server -t runs");
    assert!(check.success(), "the generated configuration is valid");
    let mut server = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .envs(env)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt_port));
    until("nats-server listens for MQTT", WAIT, async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;

    let mut config = test_config("[heartbeat]\ntimeout = \"2s\"\n");
    attach_to(&mut config, &format!("mqtt://{addr}"), false);
    config.mqtt.attach.username = Some("fleet-broker".into());
    config.mqtt.attach.password = Some("pw-broker".into());
    let broker = start(&config).await;
    wait_attached(&broker).await;
    let up = broker.front().upstream_stats().expect("attach mode");
    assert_eq!(up.subscriptions_refused, 0, "{up:?}");

    let opts = sim_device::VehicleOptions {
        credentials: Some(("n-1".into(), "pw-n-1".into())),
        ..Default::default()
    };
    let mut v = sim_device::Vehicle::connect(addr, "n-1", opts)
        .await
        .expect("vehicle connects to nats-server");
    v.publish_to("vehicles/n-2/heartbeat", b"{}".to_vec())
        .await
        .expect("sent");
    v.heartbeat().await.expect("heartbeat");
    let out = v
        .next_command(WAIT)
        .await
        .expect("service_out through NATS");
    assert_eq!(out.command, "service_out");
    let sli = broker.engine().sli().await.expect("engine");
    assert_eq!(
        sli.fleet, 1,
        "only n-1 is known: the spoof was refused upstream"
    );
    broker.shutdown().await;
    let _ = server.kill();
    let _ = server.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
