//! Rider journeys end to end: a real Mosquitto on a free port, a simulated fleet answering
//! lock requests and a backend sending them, with each failure injection. Mosquitto is
//! only the relay here; without it the tests skip, except under CI where they fail.
//! Every wait is bounded, so a regression shows as a failed assertion, not a hang.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sim_device::backend::{Backend, BackendFigures, BackendOptions};
use sim_device::fleet::{Fleet, FleetOptions};
use sim_device::journey::JourneyOptions;
use sim_device::scenario::{self, Scenario};
use sim_device::stats::get;
use tokio::time::Instant;

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(20);
const VEHICLES: usize = 20;

/// A Mosquitto process on a free loopback port, killed when dropped.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mosquitto -p PORT`; `None` (skip) when it is not installed, outside CI.
fn mosquitto() -> Option<Mosquitto> {
    let installed = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto must be installed in CI (apt-get install mosquitto)"
        );
        eprintln!("mosquitto not installed: skipping (apt-get install mosquitto)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let m = Mosquitto {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    // At most WAIT in 20 ms steps.
    let mut attempts = WAIT.as_millis() / 20;
    while std::net::TcpStream::connect(m.addr).is_err() {
        attempts = attempts.saturating_sub(1);
        assert!(attempts > 0, "mosquitto did not listen on {}", m.addr);
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(m)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let limit = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < limit, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A connected fleet of `VEHICLES` (answering lock requests when `journeys`).
async fn fleet(m: &Mosquitto, prefix: &str, journeys: bool) -> Arc<Fleet> {
    let fleet = Arc::new(Fleet::start(&FleetOptions {
        brokers: vec![m.addr],
        vehicles: VEHICLES,
        prefix: prefix.into(),
        heartbeat: Duration::from_millis(200),
        ramp_per_sec: 1000,
        keep_alive: Duration::from_secs(30),
        journeys: journeys.then(JourneyOptions::answering),
        ..FleetOptions::default()
    }));
    until("every vehicle connected", || fleet.ready() == VEHICLES).await;
    fleet
}

/// Injects `action` into the whole fleet, at once and for good.
async fn inject(fleet: &Arc<Fleet>, action: &str) {
    let s = Scenario {
        inject: Scenario::parse_inline(&format!("{{action = \"{action}\", fraction = 1.0}}"))
            .unwrap(),
    };
    for t in scenario::run(fleet.clone(), &s, Instant::now()) {
        t.await.unwrap();
    }
}

/// Sends unlocks at 50/s until `requests` are sent, then waits until each one ended.
async fn unlocks(m: &Mosquitto, fleet: &Fleet, timeout: Duration, requests: u64) -> BackendFigures {
    let backend = Backend::start(BackendOptions {
        broker: m.addr,
        vehicles: fleet.ids(),
        rate: 50.0,
        timeout,
        ..BackendOptions::default()
    })
    .unwrap();
    until("enough requests sent", || {
        get(&backend.stats().sent) >= requests
    })
    .await;
    backend.set_rate(0.0).unwrap();
    until("every request ended", || {
        backend.stats().figures().pending == 0
    })
    .await;
    let f = backend.stats().figures();
    let latency = backend.stats().take_latency();
    assert_eq!(latency.n as u64, f.ok + f.failed, "{f:?}");
    if latency.n > 0 {
        // The vehicles wait 20 ms before they answer.
        assert!(latency.p50_ms >= 20.0, "{latency:?}");
    }
    backend.shutdown().await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_vehicles_answer_every_unlock_with_ok() {
    let Some(m) = mosquitto() else { return };
    let fleet = fleet(&m, "ok", true).await;
    let f = unlocks(&m, &fleet, Duration::from_secs(10), 100).await;
    assert!(f.sent >= 100, "{f:?}");
    assert_eq!(
        (
            f.ok,
            f.failed,
            f.timed_out,
            f.late,
            f.unmatched,
            f.malformed
        ),
        (f.sent, 0, 0, 0, 0, 0),
        "{f:?}"
    );
    assert_eq!(get(&fleet.stats().unlock_answers), f.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_unlocks_answer_every_request_with_ok_false() {
    let Some(m) = mosquitto() else { return };
    let fleet = fleet(&m, "jam", true).await;
    inject(&fleet, "failing_unlocks").await;
    let f = unlocks(&m, &fleet, Duration::from_secs(10), 30).await;
    assert!(f.sent >= 30, "{f:?}");
    assert_eq!(
        (f.ok, f.failed, f.timed_out, f.unmatched),
        (0, f.sent, 0, 0),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_unlocks_time_out_while_the_vehicles_keep_heartbeating() {
    let Some(m) = mosquitto() else { return };
    let fleet = fleet(&m, "mute", true).await;
    inject(&fleet, "silent_unlocks").await;
    let heartbeats = get(&fleet.stats().heartbeats);
    let f = unlocks(&m, &fleet, Duration::from_millis(300), 30).await;
    assert!(f.sent >= 30, "{f:?}");
    assert_eq!(
        (f.ok, f.failed, f.timed_out, f.late),
        (0, 0, f.sent, 0),
        "{f:?}"
    );
    let s = fleet.stats();
    assert!(get(&s.unlock_requests) >= f.sent, "the requests arrived");
    assert_eq!(get(&s.unlock_answers), 0);
    assert!(get(&s.heartbeats) > heartbeats, "heartbeats went on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_journeys_vehicles_do_not_subscribe_to_requests() {
    let Some(m) = mosquitto() else { return };
    let fleet = fleet(&m, "plain", false).await;
    let f = unlocks(&m, &fleet, Duration::from_millis(300), 10).await;
    assert_eq!((f.ok, f.failed, f.timed_out), (0, 0, f.sent), "{f:?}");
    assert_eq!(get(&fleet.stats().unlock_requests), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_vehicle_with_journeys_answers_too() {
    let Some(m) = mosquitto() else { return };
    let opts = sim_device::VehicleOptions {
        journeys: Some(JourneyOptions::answering()),
        ..sim_device::VehicleOptions::default()
    };
    let v = sim_device::Vehicle::connect(m.addr, "solo", opts)
        .await
        .unwrap();
    let backend = Backend::start(BackendOptions {
        broker: m.addr,
        vehicles: vec![v.id().to_owned()],
        rate: 50.0,
        ..BackendOptions::default()
    })
    .unwrap();
    until("ten answers", || get(&backend.stats().ok) >= 10).await;
    let f = backend.stats().figures();
    assert_eq!((f.failed, f.unmatched, f.malformed), (0, 0, 0), "{f:?}");
    backend.shutdown().await;
    v.disconnect().await;
}
