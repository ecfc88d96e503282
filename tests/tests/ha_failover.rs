//! Two `fleet-broker` processes as an active/standby pair: the store and the lease in one
//! real PostgreSQL 15, both attached to one real Mosquitto, vehicles talking through
//! Mosquitto. One leads; the other stands by: it watches the uplinks, says who leads, has
//! the leader answer its reads and refuses writes. 1,000 vehicles heartbeat every second
//! and ten of them report a fault each second. Five times the leader acts on a fault and
//! is killed with SIGKILL a moment later, and comes back as the standby: each time the
//! standby takes over within 5 s and knows every fault recorded before; a vehicle that
//! fell silent just before the kill is taken out at its own deadline, not a restart grace
//! later; in the end every fault announced on fleet/events was announced once, with the
//! epoch of the term that decided it, is stored, and is in the retained state; nobody
//! still talking is taken out for the gaps; no transition's command goes out twice. Each
//! takeover's duration is printed, with the median and the maximum (`HA_TEST_TTL` and
//! `HA_TEST_RENEW` set other lease timings than the test's 1.5 s / 0.3 s). And a leader
//! cut off from PostgreSQL but not from the upstream stops before its standby takes over,
//! and one cut off from the upstream but not from PostgreSQL hands over to the standby
//! that sees it.
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
        Engine::start_via(dir, node, &pg.url(), &upstream.url(), "")
    }

    /// As [`Engine::start`], reaching PostgreSQL at `pg_url` and the upstream at
    /// `upstream_url`, with `attach` added to `[mqtt.attach]`.
    fn start_via(dir: &Path, node: &str, pg_url: &str, upstream_url: &str, attach: &str) -> Engine {
        let http = free_port();
        let config = dir.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nmode = \"attach\"\n\
                 [mqtt.attach]\nurl = \"{}\"\nclient_id = \"fleet-engine\"\nack = \"stored\"\n{attach}\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [store]\nurl = \"{}\"\n\
                 [ha]\nnode = \"{node}\"\nttl = \"{ttl}\"\nrenew_every = \"{renew}\"\n\
                 [heartbeat]\ntimeout = \"4s\"\n\
                 [faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
                 [slo]\npublish_interval = \"1s\"\n",
                upstream_url,
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

    /// Waits until the standby's watch on the uplinks is connected.
    async fn watching(&self) {
        let started = Instant::now();
        loop {
            let (_, metrics) = http(self.http, "GET", "/metrics").await;
            if metrics.contains("fleet_standby_watching 1") {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the standby does not watch: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    // Uplinks are acknowledged once stored: the engine's session needs an in-flight
    // window for the fleet's rate times the commit latency (Mosquitto's default is 20).
    let upstream = Mosquitto::start("allow_anonymous true\nmax_inflight_messages 1000", &[]);
    let dir = tempfile::tempdir().expect("tempdir");

    let mut leader = Engine::start(dir.path(), "a", &pg, &upstream);
    until("engine a leads and is ready", WAIT, || leader.ready()).await;
    let mut standby = Engine::start(dir.path(), "b", &pg, &upstream);
    standby.watching().await;
    the_standby_points_at_the_leader(&standby, &leader, "a").await;
    status_shows_the_pair(&pg, "a", "b");

    let mut events =
        Observer::connect(upstream.addr(), &["fleet/events", "vehicles/+/command"]).await;
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
    let mut quiets = Vec::new();
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
        // A vehicle falls silent 3 s before the kill, its deadline (4 s) shortly before
        // the takeover: the standby heard its last heartbeat, so the successor finds it
        // silent at once, not a restart grace (4 s) after the takeover.
        standby.watching().await;
        let quiet = format!("quiet-{round}");
        let q = Vehicle::connect(upstream.addr(), &quiet, VehicleOptions::default())
            .await
            .expect("connects");
        q.heartbeat().await.expect("heartbeat");
        quiets.push((quiet, unix_ms(), q));
        tokio::time::sleep(Duration::from_millis(3_000 + 150 * round as u64)).await;
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
    // Every report sent before now must be acted on within the next 5 s.
    let n = reported.load(std::sync::atomic::Ordering::Relaxed);
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
    // A successor publishes the dying leader's last announcements again, identical (it
    // cannot know which of them went out): a consumer drops the copies.
    let mut copies = std::collections::HashSet::new();
    let once: Vec<&fleet_tests::Seen> = seen
        .iter()
        .filter(|s| s.topic != "fleet/events" || copies.insert(s.json.to_string()))
        .collect();
    println!(
        "{} fleet/events copies published again after the kills",
        seen.len() - once.len()
    );
    let mut announced: Vec<String> = once
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
    let missing: Vec<String> = (0..n.min(VEHICLES))
        .map(|i| format!("v-{i}"))
        .filter(|id| !announced.contains(id))
        .collect();
    println!(
        "{} faults reported before the end, all announced across {KILLS} takeovers, each once",
        n + 2 * KILLS
    );
    // The upstream keeps an uplink until what it caused is stored: a report the dying
    // leader had received but not stored goes to its successor.
    assert!(
        missing.is_empty(),
        "reported but never announced: {missing:?}"
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
    // A vehicle silent since before a kill is out at its own deadline (timeout 4 s after
    // the heartbeat the standby heard), not at the takeover plus a restart grace.
    for (id, last_heartbeat, _) in &quiets {
        let since = seen
            .iter()
            .find(|s| {
                s.json["vehicle"] == id.as_str() && s.json["reason"]["kind"] == "heartbeat_lost"
            })
            .and_then(|s| s.json["reason"]["since"].as_u64());
        let Some(since) = since else {
            panic!("{id} was not taken out for silence");
        };
        let after = since.saturating_sub(*last_heartbeat);
        println!("{id}: out {after} ms after its last heartbeat (timeout 4,000 ms)");
        assert!(
            (4_000..4_800).contains(&after),
            "{id} out {after} ms after its last heartbeat: the successor gave it a restart grace"
        );
    }
    // Every event carries the epoch of the term that decided it; each term's is higher.
    let epochs: Vec<u64> = faulty
        .iter()
        .filter(|id| id.starts_with("faulty-"))
        .map(|id| {
            seen.iter()
                .find(|s| s.json["vehicle"] == id.as_str() && s.json["change"] == "set")
                .and_then(|s| s.json["epoch"].as_u64())
                .unwrap_or_else(|| panic!("{id}'s event has no epoch"))
        })
        .collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs of the five terms: {epochs:?}"
    );
    assert!(
        seen.iter()
            .filter(|s| s.topic == "fleet/events")
            .all(|s| s.json["epoch"].as_u64().is_some()),
        "an event without an epoch"
    );
    // Each transition's command went out once, whichever term decided it: no successor
    // sent a second service_out for a transition already announced (a resend, after a
    // vehicle reports another state, is decided anew and has its own issued_at).
    let mut commands: Vec<(String, String, u64)> = seen
        .iter()
        .filter(|s| s.topic.ends_with("/command"))
        .map(|s| {
            (
                s.topic.clone(),
                s.json["command"].as_str().unwrap_or_default().to_owned(),
                s.json["issued_at"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let ids: std::collections::HashSet<String> = seen
        .iter()
        .filter(|s| s.topic.ends_with("/command"))
        .filter_map(|s| s.json["id"].as_str().map(str::to_owned))
        .collect();
    let sent = commands.len();
    assert_eq!(ids.len(), sent, "two commands with one id");
    commands.sort();
    commands.dedup();
    assert_eq!(
        commands.len(),
        sent,
        "a transition's command was sent twice"
    );
    for id in &faulty {
        let topic = format!("vehicles/{id}/command");
        assert!(
            commands
                .iter()
                .any(|(t, c, _)| *t == topic && c == "service_out"),
            "{id} got no service_out"
        );
    }
    println!("{sent} commands, each transition's once");
}

/// While `leader` (node `name`) leads, `standby` says so, has it answer reads, refuses
/// writes with its address, and both export the lease in /metrics.
async fn the_standby_points_at_the_leader(standby: &Engine, leader: &Engine, name: &str) {
    let (status, body) = http(standby.http, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["error"], "standby");
    assert_eq!(ready["leader"]["node"], name, "{ready}");
    let address = format!("http://127.0.0.1:{}", leader.http);
    assert_eq!(ready["leader"]["address"], address.as_str());
    let (status, body) = http(standby.http, "GET", "/api/v1/slo").await;
    assert_eq!(status, 200, "a read is answered by the leader: {body}");
    assert!(body.contains("\"fleet\""), "{body}");
    let (status, body) = http(standby.http, "POST", "/api/v1/vehicles/v-1/service-out").await;
    assert_eq!(status, 421, "{body}");
    assert!(
        body.contains(&address),
        "the refusal names the leader: {body}"
    );
    let (_, metrics) = http(standby.http, "GET", "/metrics").await;
    assert!(metrics.contains("fleet_leader{node=\"b\"} 0"), "{metrics}");
    let (_, metrics) = http(leader.http, "GET", "/metrics").await;
    assert!(
        metrics.contains(&format!("fleet_leader{{node=\"{name}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("fleet_lease_epoch 1"), "{metrics}");
}

/// `fleet-broker status` names the leader and lists both engines with their roles.
fn status_shows_the_pair(pg: &Postgres, leader: &str, standby: &str) {
    let out = Command::new(broker_binary())
        .arg("status")
        .env("FLEET_STORE_URL", pg.url())
        .env("RUST_LOG", "error")
        .output()
        .expect("fleet-broker status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("leader: {leader} at http://127.0.0.1:")),
        "{text}"
    );
    assert!(text.contains("(epoch 1)"), "{text}");
    for (node, role) in [(leader, "leader"), (standby, "standby")] {
        let row = text
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default();
        assert!(row.contains(role), "{node} is not shown as {role}: {text}");
    }
}

/// Unix ms on the system clock (the engines' clock).
fn unix_ms() -> u64 {
    fleet_broker::clock::Clock::system().now()
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
    let a = Engine::start_via(
        dir.path(),
        "a",
        &pg.url_via(proxy.port),
        &upstream.url(),
        "",
    );
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
    // And nothing more of it after (a announcing what it decided in the partition).
    taken_out_once(&mut events, "faulty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_upstream_hands_over_to_the_standby_that_sees_it() {
    if !mosquitto_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let upstream = Mosquitto::open();
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Cuttable::start(upstream.addr().port()).await;
    // A 1 s keep-alive: a silent partition is noticed within about 2 s.
    let quick = "keep_alive = \"1s\"";
    let via_proxy = format!("mqtt://127.0.0.1:{}", proxy.port);
    let a = Engine::start_via(dir.path(), "a", &pg.url(), &via_proxy, quick);
    until("engine a leads and is ready", WAIT, || a.ready()).await;
    let b = Engine::start_via(dir.path(), "b", &pg.url(), &upstream.url(), quick);
    b.watching().await;
    let mut events = Observer::connect(upstream.addr(), &["fleet/events"]).await;

    // a keeps PostgreSQL but loses the upstream; b sees it.
    let cut = Instant::now();
    proxy.cut();
    let v = Vehicle::connect(upstream.addr(), "faulty", VehicleOptions::default())
        .await
        .expect("connects");
    v.error("BRAKE_SENSOR", 1).await.expect("report");
    until("b takes over", Duration::from_secs(10), || b.ready()).await;
    let b_leads = cut.elapsed();
    println!(
        "upstream lost: b ready {:.2} s after the cut",
        b_leads.as_secs_f64()
    );
    assert!(
        b_leads <= Duration::from_secs(5),
        "takeover took {b_leads:?}"
    );
    assert!(!a.ready(), "a still ready");
    // The fault reported during the cut went to the shared session: b acts on it, once.
    taken_out_once(&mut events, "faulty").await;
    let (_, readyz) = http(a.http, "GET", "/readyz").await;
    assert!(readyz.contains("\"standby\""), "a stands by: {readyz}");
}

/// `vehicle` is taken out, and its reason set is announced once (none in the 2 s after).
async fn taken_out_once(events: &mut Observer, vehicle: &str) {
    let set = |s: &fleet_tests::Seen| s.json["vehicle"] == vehicle && s.json["change"] == "set";
    let mut seen = events
        .collect_until("the successor takes the vehicle out", set)
        .await;
    seen.extend(events.collect_for(Duration::from_secs(2)).await);
    let sets = seen.iter().filter(|s| set(s)).count();
    assert_eq!(sets, 1, "{seen:?}");
}

/// `GET path` on the engine's ops API, as JSON.
async fn http_get_json(port: u16, path: &str) -> serde_json::Value {
    let (_, body) = http(port, "GET", path).await;
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// `method path` (no body) on the engine's ops API: the status and the body; status 0 when
/// nothing answers.
async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut text = String::new();
        if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
            return (0, text);
        }
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    })
    .await
    .expect("request task")
}
