//! Two `fleet-broker` processes as an active/standby pair: the store and the lease in one
//! real PostgreSQL 15, both attached to one real Mosquitto, vehicles talking through
//! Mosquitto. One leads; the other stands by with nothing open. 1,000 vehicles heartbeat
//! every second and ten of them report a fault each second. Five times the leader acts on
//! a fault and is killed with SIGKILL a moment later, and comes back as the standby: each
//! time the standby takes over within 5 s and knows every fault recorded before; in the
//! end every fault announced on fleet/events was announced once, is stored, and is in the
//! retained state; nobody still talking is taken out for the gaps. Each
//! takeover's duration is printed, with the median and the maximum (`HA_TEST_TTL` and
//! `HA_TEST_RENEW` set other lease timings than the test's 1.5 s / 0.3 s). And a leader
//! cut off from PostgreSQL but not from the upstream stops before its standby takes over.
//!
//! The engines are the `fleet-broker` binary of this target directory: `cargo test
//! --workspace` builds it; `cargo test -p fleet-tests` alone runs whatever was built last.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_tests::postgres::{Cuttable, Postgres};
use fleet_tests::upstream::{free_port, mosquitto_installed, Mosquitto};
use fleet_tests::{broker_binary, http_status, Observer, WAIT};
use sim_device::{Vehicle, VehicleOptions};
use tokio::time::Instant;

/// Vehicles talking through the failovers.
const VEHICLES: usize = 1000;

/// Motor faults reported per second through the test.
const FAULTS_PER_S: usize = 10;

/// Leaders killed, one after the other.
const KILLS: usize = 5;

/// One engine of the pair.
struct Engine {
    child: Child,
    http: u16,
}

impl Engine {
    fn start(dir: &Path, node: &str, pg: &Postgres, upstream: &Mosquitto) -> Engine {
        Engine::start_via(dir, node, &pg.url(), upstream)
    }

    /// As [`Engine::start`], reaching PostgreSQL at `pg_url`.
    fn start_via(dir: &Path, node: &str, pg_url: &str, upstream: &Mosquitto) -> Engine {
        let http = free_port();
        let config = dir.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nmode = \"attach\"\n\
                 [mqtt.attach]\nurl = \"{}\"\nclient_id = \"fleet-engine\"\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [store]\nurl = \"{}\"\n\
                 [ha]\nnode = \"{node}\"\nttl = \"{ttl}\"\nrenew_every = \"{renew}\"\n\
                 [heartbeat]\ntimeout = \"4s\"\n\
                 [faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
                 [slo]\npublish_interval = \"1s\"\n",
                upstream.url(),
                pg_url,
                ttl = std::env::var("HA_TEST_TTL").unwrap_or("1500ms".into()),
                renew = std::env::var("HA_TEST_RENEW").unwrap_or("300ms".into()),
            ),
        )
        .expect("write the config");
        let child = Command::new(broker_binary())
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                "warn,fleet_broker=info,fleet_broker::engine=warn",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fleet-broker starts");
        Engine { child, http }
    }

    /// Ready: leading, attached, the engine answering.
    fn ready(&self) -> bool {
        http_status(self.http, "/readyz") == Some(200)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raises this process's soft limit on open files (inherited by the Mosquitto it starts)
/// to what 1,000 vehicles need, up to the hard limit; fails saying what to do when the
/// hard limit is lower.
fn enough_open_files() {
    const NEED: libc::rlim_t = 4 * VEHICLES as libc::rlim_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit failed");
    if limit.rlim_cur >= NEED {
        return;
    }
    assert!(
        limit.rlim_max >= NEED,
        "{VEHICLES} vehicles need {NEED} open files and the hard limit is {}: raise it (ulimit -Hn)",
        limit.rlim_max
    );
    limit.rlim_cur = NEED;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit failed");
}

/// Waits (bounded by `within`) until `ok`; the time it took.
async fn until(what: &str, within: Duration, ok: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_within_five_seconds_at_each_of_five_kills_of_the_leader() {
    if !mosquitto_installed() {
        return;
    }
    enough_open_files();
    let Some(pg) = Postgres::start() else { return };
    let upstream = Mosquitto::open();
    let dir = tempfile::tempdir().expect("tempdir");

    let mut leader = Engine::start(dir.path(), "a", &pg, &upstream);
    until("engine a leads and is ready", WAIT, || leader.ready()).await;
    let mut standby = Engine::start(dir.path(), "b", &pg, &upstream);
    // A standby opens nothing: no ops API, no upstream link, no store writer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        http_status(standby.http, "/readyz"),
        None,
        "the standby serves"
    );

    let mut events = Observer::connect(upstream.addr(), &["fleet/events"]).await;
    let mut beating = Vec::new();
    for i in 0..VEHICLES {
        let v = Vehicle::connect(
            upstream.addr(),
            &format!("v-{i}"),
            VehicleOptions::default(),
        )
        .await
        .expect("vehicle connects");
        v.heartbeat().await.expect("heartbeat");
        beating.push(v);
    }
    // Heartbeats go on through every failover, every second; and a fault load: every
    // second the next FAULTS_PER_S vehicles report a motor fault (which takes them out).
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reported.clone();
    let beat = tokio::spawn(async move {
        let mut next = 0;
        loop {
            for v in &beating {
                let _ = v.heartbeat().await;
            }
            for _ in 0..FAULTS_PER_S {
                let _ = beating[next % beating.len()].error("MOTOR", 1).await;
                next += 1;
                counter.store(next, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let mut seen = Vec::new();
    let mut takeovers = Vec::new();
    let mut faulty: Vec<String> = Vec::new();
    for round in 0..KILLS {
        // The leader acts on a fault, then dies a moment later (a different moment each
        // round).
        let id = format!("faulty-{round}");
        let v = Vehicle::connect(upstream.addr(), &id, VehicleOptions::default())
            .await
            .expect("connects");
        v.error("BRAKE_SENSOR", 1).await.expect("report");
        // Everything announced meanwhile is kept: the fault load's events too.
        seen.extend(
            events
                .collect_until("the leader takes the faulty vehicle out", |s| {
                    s.json["vehicle"] == id.as_str() && s.json["change"] == "set"
                })
                .await,
        );
        faulty.push(id);
        tokio::time::sleep(Duration::from_millis(150 * round as u64)).await;
        leader.kill();
        // A fault reported while nobody leads: the engines share one persistent session
        // upstream, so Mosquitto keeps it for the successor.
        let gap = format!("gap-{round}");
        let g = Vehicle::connect(upstream.addr(), &gap, VehicleOptions::default())
            .await
            .expect("connects");
        g.error("BRAKE_SENSOR", 1).await.expect("report");
        faulty.push(gap);
        let took = until("the standby takes over", Duration::from_secs(10), || {
            standby.ready()
        })
        .await;
        println!(
            "takeover {} after SIGKILL: {:.2} s",
            round + 1,
            took.as_secs_f64()
        );
        takeovers.push(took);
        // The new leader knows every fault recorded before it.
        for id in faulty.iter().filter(|id| !id.starts_with("gap-")) {
            let detail = http_get_json(standby.http, &format!("/api/v1/vehicles/{id}")).await;
            assert_eq!(detail["state"], "out_of_service", "{id}: {detail}");
        }
        // The killed engine comes back as the standby.
        let node = if round % 2 == 0 { "a" } else { "b" };
        let back = Engine::start(dir.path(), node, &pg, &upstream);
        leader = std::mem::replace(&mut standby, back);
    }
    seen.extend(events.collect_for(Duration::from_secs(5)).await);
    beat.abort();
    let _ = beat.await;

    takeovers.sort();
    println!(
        "takeovers: p50 {:.2} s, max {:.2} s over {KILLS} kills",
        takeovers[KILLS / 2].as_secs_f64(),
        takeovers[KILLS - 1].as_secs_f64()
    );
    assert!(
        takeovers[KILLS - 1] <= Duration::from_secs(5),
        "a takeover took over 5 s: {takeovers:?}"
    );
    // Each fault announced once: a takeover does not announce it again.
    let mut announced: Vec<String> = seen
        .iter()
        .filter(|s| s.json["change"] == "set" && s.json["reason"]["kind"] == "hardware_fault")
        .filter_map(|s| s.json["vehicle"].as_str().map(str::to_owned))
        .collect();
    announced.sort();
    let total = announced.len();
    announced.dedup();
    assert_eq!(total, announced.len(), "a fault was announced twice");
    for id in &faulty {
        assert!(announced.contains(id), "{id}'s fault not announced");
    }
    println!(
        "{} of {} faults reported were announced across {KILLS} takeovers, each once (a report \
         the dying leader had taken from the upstream but not yet stored is lost)",
        announced.len(),
        reported.load(std::sync::atomic::Ordering::Relaxed) + 2 * KILLS
    );
    assert!(
        announced.len() > KILLS + 2 * FAULTS_PER_S,
        "the fault load did not run: {} announced",
        announced.len()
    );
    // Every announced fault is stored and in the retained state the last leader holds.
    until("the last standby leads", WAIT, || leader.ready()).await;
    let mut retained = Observer::connect(upstream.addr(), &["vehicles/+/service"]).await;
    let states = retained.collect_for(Duration::from_secs(2)).await;
    for id in &announced {
        let detail = http_get_json(leader.http, &format!("/api/v1/vehicles/{id}")).await;
        assert_eq!(detail["state"], "out_of_service", "{id}: {detail}");
        let topic = format!("vehicles/{id}/service");
        let state = states.iter().rev().find(|s| s.topic == topic);
        assert_eq!(
            state.map(|s| s.json["state"].clone()),
            Some("out_of_service".into()),
            "{id}'s retained state"
        );
    }
    // Nobody still talking was taken out for silence across the takeovers.
    let lost: Vec<String> = seen
        .iter()
        .filter(|s| s.json["reason"]["kind"] == "heartbeat_lost")
        .filter_map(|s| s.json["vehicle"].as_str().map(str::to_owned))
        .filter(|v| v.starts_with("v-"))
        .collect();
    assert!(lost.is_empty(), "taken out for silence: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_postgres_stops_acting_before_the_standby_takes_over() {
    if !mosquitto_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let upstream = Mosquitto::open();
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Cuttable::start(pg.port).await;
    let a = Engine::start_via(dir.path(), "a", &pg.url_via(proxy.port), &upstream);
    until("engine a leads and is ready", WAIT, || a.ready()).await;
    let b = Engine::start(dir.path(), "b", &pg, &upstream);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut events = Observer::connect(upstream.addr(), &["fleet/events"]).await;

    // a keeps the upstream but loses the database.
    let cut = Instant::now();
    proxy.cut();
    let v = Vehicle::connect(upstream.addr(), "faulty", VehicleOptions::default())
        .await
        .expect("connects");
    v.error("BRAKE_SENSOR", 1).await.expect("report");
    until("a stops being ready", Duration::from_secs(10), || {
        !a.ready()
    })
    .await;
    let a_stopped = cut.elapsed();
    until("b takes over", Duration::from_secs(10), || b.ready()).await;
    let b_leads = cut.elapsed();
    println!(
        "partition: a not ready {:.2} s after the cut, b ready {:.2} s after it",
        a_stopped.as_secs_f64(),
        b_leads.as_secs_f64()
    );
    assert!(
        b_leads <= Duration::from_secs(5),
        "takeover took {b_leads:?}"
    );
    assert!(a_stopped < b_leads, "both acted at once");
    // The fault reported during the partition: a could not store it, so it never
    // announced it; b acts on the vehicle's next report.
    v.error("BRAKE_SENSOR", 1).await.expect("report");
    let mut seen = events
        .collect_until("b takes the faulty vehicle out", |s| {
            s.json["vehicle"] == "faulty" && s.json["change"] == "set"
        })
        .await;
    // And nothing more of it after (a announcing what it decided in the partition).
    seen.extend(events.collect_for(Duration::from_secs(2)).await);
    let sets = seen
        .iter()
        .filter(|s| s.json["vehicle"] == "faulty" && s.json["change"] == "set")
        .count();
    assert_eq!(sets, 1, "{seen:?}");
}

/// `GET path` on the engine's ops API, as JSON.
async fn http_get_json(port: u16, path: &str) -> serde_json::Value {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("answer");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    })
    .await
    .expect("request task")
}
