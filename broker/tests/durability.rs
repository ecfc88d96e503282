//! Crash safety of the real `fleet-broker` binary: killed with SIGKILL at random moments
//! under a load of transitions, it must never lose a transition that a client saw, neither
//! from the store nor from the state it comes back with; stopped with SIGTERM it drains,
//! flushes and exits 0; a bad database stops it with a clear message, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// The workspace bans std's Instant::now (time is injected in the product); tokio's is the
// same monotonic clock here.
use tokio::time::Instant;

use fleet_broker::store::{Location, StoreReader};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);
/// Vehicles reporting faults in each life of the broker.
const VEHICLES: usize = 12;
/// Distinct fault codes per vehicle and life (each one is a transition).
const CODES: usize = 40;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A random seed without a clock (clippy bans reading it in this workspace).
fn seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Setup {
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let db = dir.path().join("data").join("fleet.db");
        let config = format!(
            "[mqtt]\nlisten = \"127.0.0.1:{port}\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [store]\npath = \"{}\"\nsynchronous = \"normal\"\ncheckpoint_interval = \"1s\"\n\
             [heartbeat]\ntimeout = \"1h\"\n\
             [faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
             [slo]\npublish_interval = \"1s\"\n{extra}",
            db.display()
        );
        std::fs::write(dir.path().join("broker.toml"), config).expect("config written");
        Setup { dir, port }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("fleet.db")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn command(&self, life: usize) -> Command {
        let log = std::fs::File::create(self.dir.path().join(format!("broker-{life}.log")))
            .expect("log file");
        let log_too = log.try_clone().expect("log file handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet-broker"));
        cmd.arg("--config")
            .arg(self.dir.path().join("broker.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too);
        cmd
    }

    /// Starts the broker and waits until it accepts connections.
    fn start(&self, life: usize) -> Child {
        let mut child = self.command(life).spawn().expect("broker starts");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(self.addr()).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("broker exited at start ({status}): {}", self.log(life));
            }
            assert!(
                Instant::now() < deadline,
                "broker not listening: {}",
                self.log(life)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn log(&self, life: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("broker-{life}.log")))
            .unwrap_or_default()
    }
}

/// What a client saw: per vehicle, the fault codes announced as set.
type Seen = BTreeMap<String, BTreeSet<String>>;

fn faults_in(json: &serde_json::Value) -> Vec<String> {
    json["reasons"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["kind"] == "hardware_fault")
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Subscribes to `filters` and forwards (topic, json) until the connection drops.
async fn observe(
    addr: SocketAddr,
    name: &str,
    filters: &[&str],
) -> (
    mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    JoinHandle<()>,
) {
    let mut opts = MqttOptions::new(name, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    for f in filters {
        client
            .subscribe(*f, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut acks = 0;
    tokio::time::timeout(WAIT, async {
        while acks < filters.len() {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => acks += 1,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let _ = tx.send((p.topic.clone(), json));
                }
                Ok(_) => {}
                Err(e) => panic!("observer failed: {e}"),
            }
        }
    })
    .await
    .expect("observer subscribed");
    let task = tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let json = serde_json::from_slice(&p.payload).unwrap_or_default();
                if tx.send((p.topic.clone(), json)).is_err() {
                    break;
                }
            }
        }
    });
    (rx, task)
}

/// A vehicle reporting one new fault code after another until the broker goes away.
fn fault_reporter(addr: SocketAddr, id: String, codes: Vec<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut opts = MqttOptions::new(id.clone(), addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let sender = tokio::spawn(async move {
            for code in codes {
                let payload = format!("{{\"errors\":[{{\"code\":\"{code}\"}}]}}");
                if client
                    .publish(
                        format!("vehicles/{id}/error"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        while eventloop.poll().await.is_ok() {}
        sender.abort();
    })
}

fn record(seen: &mut Seen, topic: &str, json: &serde_json::Value) {
    if topic == "fleet/events" {
        if json["change"] == "set" && json["reason"]["kind"] == "hardware_fault" {
            if let (Some(v), Some(code)) =
                (json["vehicle"].as_str(), json["reason"]["code"].as_str())
            {
                seen.entry(v.to_owned())
                    .or_default()
                    .insert(code.to_owned());
            }
        }
    } else if let Some(vehicle) = topic
        .strip_prefix("vehicles/")
        .and_then(|t| t.strip_suffix("/service"))
    {
        let codes = faults_in(json);
        if !codes.is_empty() {
            seen.entry(vehicle.to_owned()).or_default().extend(codes);
        }
    }
}

/// Every fault seen is in the transition log and among the stored reasons.
fn assert_stored(db: &Path, seen: &Seen, life: usize) {
    let reader = StoreReader::open(&Location::File(db.to_owned())).expect("store readable");
    let log = reader
        .transitions(None, usize::MAX)
        .expect("transition log");
    let mut logged: Seen = BTreeMap::new();
    for t in &log {
        if t.change == "set" {
            if let Some(code) = t.reason.as_ref().and_then(|r| r["code"].as_str()) {
                logged
                    .entry(t.vehicle.clone())
                    .or_default()
                    .insert(code.to_owned());
            }
        }
    }
    let stored: BTreeMap<String, BTreeSet<String>> = reader
        .vehicle_reasons()
        .expect("stored reasons")
        .into_iter()
        .map(|(id, kinds)| {
            let codes = kinds
                .iter()
                .filter_map(|k| k.strip_prefix("hardware_fault:").map(str::to_owned))
                .collect();
            (id, codes)
        })
        .collect();
    for (vehicle, codes) in seen {
        for code in codes {
            assert!(
                logged.get(vehicle).is_some_and(|c| c.contains(code)),
                "life {life}: {vehicle} {code} was announced but is not in the transition log"
            );
            assert!(
                stored.get(vehicle).is_some_and(|c| c.contains(code)),
                "life {life}: {vehicle} {code} was announced but is not among the stored reasons"
            );
        }
    }
}

/// After a restart, the retained state of every vehicle seen holds every fault seen. The
/// vehicles' topics are subscribed a few at a time: the MQTT front bounds what it queues
/// per client (8 in flight + 32 queued by default) and drops the rest, so one
/// `vehicles/+/service` subscription does not receive the retained state of every vehicle
/// of a larger fleet (measured: 16 of 20 retained messages arrived at once).
async fn assert_recovered(setup: &Setup, seen: &Seen, life: usize) {
    let addr = setup.addr();
    let vehicles: Vec<&String> = seen.keys().collect();
    let mut state: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (group, ids) in vehicles.chunks(5).enumerate() {
        let topics: Vec<String> = ids
            .iter()
            .map(|id| format!("vehicles/{id}/service"))
            .collect();
        let filters: Vec<&str> = topics.iter().map(String::as_str).collect();
        let (mut rx, task) = observe(addr, &format!("checker-{life}-{group}"), &filters).await;
        let _ = tokio::time::timeout(WAIT, async {
            while !ids.iter().all(|id| state.contains_key(*id)) {
                let Some((topic, json)) = rx.recv().await else {
                    break;
                };
                if let Some(v) = topic
                    .strip_prefix("vehicles/")
                    .and_then(|t| t.strip_suffix("/service"))
                {
                    state.insert(v.to_owned(), faults_in(&json).into_iter().collect());
                }
            }
        })
        .await;
        task.abort();
    }
    for (vehicle, codes) in seen {
        let recovered = state.get(vehicle).cloned().unwrap_or_default();
        let missing: Vec<&String> = codes.difference(&recovered).collect();
        assert!(
            missing.is_empty(),
            "life {life}: {vehicle} came back without the announced faults {missing:?} \
             (retained state of {} vehicles received; broker log: {})",
            state.len(),
            setup.log(life)
        );
    }
}

fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL sent");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_loses_an_announced_transition() {
    let setup = Setup::new("");
    let mut rng = seed() | 1;
    println!("seed {rng}");
    let mut seen: Seen = BTreeMap::new();
    let lives = 5;
    for life in 0..lives {
        let mut child = setup.start(life);
        if life > 0 {
            assert_recovered(&setup, &seen, life).await;
        }
        let (mut rx, observer) = observe(
            setup.addr(),
            &format!("observer-{life}"),
            &["fleet/events", "vehicles/+/service"],
        )
        .await;
        let reporters: Vec<JoinHandle<()>> = (0..VEHICLES)
            .map(|i| {
                let codes = (0..CODES).map(|c| format!("L{life}C{c}")).collect();
                fault_reporter(setup.addr(), format!("life{life}-v{i}"), codes)
            })
            .collect();
        let wait = Duration::from_millis(150 + next(&mut rng) % 600);
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some((topic, json))) = tokio::time::timeout_at(until, rx.recv()).await {
            record(&mut seen, &topic, &json);
        }
        kill(&mut child);
        // What was delivered before the kill is all we may count as seen.
        while let Ok(Some((topic, json))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            record(&mut seen, &topic, &json);
        }
        observer.abort();
        for r in reporters {
            r.abort();
        }
        let total: usize = seen.values().map(BTreeSet::len).sum();
        println!("life {life}: killed after {wait:?}; {total} faults seen so far");
        assert_stored(&setup.db(), &seen, life);
    }
    let total: usize = seen.values().map(BTreeSet::len).sum();
    assert!(
        total >= 50,
        "too few transitions observed to prove anything: {total}"
    );
    // The last life ends gracefully.
    let mut child = setup.start(lives);
    assert_recovered(&setup, &seen, lives).await;
    terminate(&mut child);
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "broker did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_engine_flushes_the_store_and_exits_zero() {
    let setup = Setup::new("");
    let mut child = setup.start(0);
    let (mut rx, observer) = observe(setup.addr(), "observer", &["fleet/events"]).await;
    let codes: Vec<String> = (0..20).map(|c| format!("C{c}")).collect();
    let reporter = fault_reporter(setup.addr(), "v1".into(), codes);
    let mut seen: Seen = BTreeMap::new();
    let _ = tokio::time::timeout(WAIT, async {
        while seen.get("v1").map_or(0, BTreeSet::len) < 20 {
            match rx.recv().await {
                Some((topic, json)) => record(&mut seen, &topic, &json),
                None => break,
            }
        }
    })
    .await;
    let status = terminate(&mut child);
    observer.abort();
    reporter.abort();
    assert!(status.success(), "exit status {status}: {}", setup.log(0));
    assert_eq!(seen.get("v1").map_or(0, BTreeSet::len), 20);
    assert_stored(&setup.db(), &seen, 0);
    let mut wal = setup.db().into_os_string();
    wal.push("-wal");
    let wal_len = std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(
        wal_len, 0,
        "the WAL was checkpointed into the database at the stop"
    );
}

fn failed_start(setup: &Setup, life: usize) -> String {
    let mut child = setup.command(life).spawn().expect("spawns");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("broker kept running: {}", setup.log(life));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = setup.log(life);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_database_is_refused_with_a_clear_message() {
    let setup = Setup::new("");
    let mut first = setup.start(0);
    let other = Setup::new("");
    let config = std::fs::read_to_string(setup.dir.path().join("broker.toml"))
        .expect("config")
        .replace(
            &format!("127.0.0.1:{}", setup.port),
            &format!("127.0.0.1:{}", other.port),
        );
    std::fs::write(other.dir.path().join("broker.toml"), config).expect("config");
    let log = failed_start(&other, 1);
    assert!(
        log.contains("in use by another running fleet-broker"),
        "{log}"
    );
    kill(&mut first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_unwritable_database_stops_the_start_with_a_clear_message() {
    let setup = Setup::new("");
    std::fs::create_dir_all(setup.db().parent().expect("dir")).expect("dir");
    std::fs::write(setup.db(), vec![0x42; 8192]).expect("garbage");
    let log = failed_start(&setup, 0);
    assert!(log.contains("corrupt") && log.contains("fleet.db"), "{log}");

    let blocked = Setup::new("");
    std::fs::write(blocked.dir.path().join("data"), b"a file, not a directory").expect("file");
    let log = failed_start(&blocked, 0);
    assert!(
        log.contains("cannot create the database directory"),
        "{log}"
    );
}
