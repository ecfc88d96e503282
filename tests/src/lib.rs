//! Helpers shared by the end-to-end tests: a broker on a free port with a test config,
//! an observer client that records what the broker publishes, and waiting with timeouts.

pub mod fake_slack;
pub mod postgres;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::Broker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Generous upper bound on any single wait in the tests (never a sleep).
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: MQTT and the ops HTTP API on free loopback ports, second-scale timeouts, the store in a
/// fresh temporary directory. `extra` is TOML appended to it (later keys of a section must
/// not repeat ones set here).
pub fn test_config(extra: &str) -> Config {
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\nmax_payload = 1024\n\
         [slo]\npublish_interval = \"1s\"\n{extra}"
    );
    let mut config = Config::parse(&text).expect("test config parses");
    config.store.path = fresh_store_path();
    // The ops HTTP API on a free port too (it is always served).
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.validate().expect("test config is valid");
    config
}

/// A database path in a new temporary directory. The directory is left behind (a few KB)
/// so a broker restarted on the same path finds its state; the OS cleans its temp dir.
pub fn fresh_store_path() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("fleet-tests-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    dir.join("fleet.db")
}

/// The `fleet-broker` binary cargo built in this target directory (`cargo test
/// --workspace` builds it for the broker's own binary tests).
pub fn broker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("fleet-broker"))
        .expect("the target directory");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build -p fleet-broker` (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers
/// (within 1 s).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts a broker with `config` on the system clock.
pub async fn start(config: &Config) -> Broker {
    Broker::start(config, Clock::system())
        .await
        .expect("broker starts")
}

/// Whether `program args` runs; under CI its absence is a failure (.ci/run installs
/// `package`), elsewhere the calling test is skipped with a note.
pub fn tool_installed(program: &str, args: &[&str], package: &str) -> bool {
    let found = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} must be installed in CI (apt-get install {package})"
        );
        eprintln!("{program} not installed: skipping (apt-get install {package})");
    }
    found
}

/// Whether the mosquitto clients are installed (see [`tool_installed`]).
pub fn mosquitto_clients() -> bool {
    tool_installed("mosquitto_pub", &["--help"], "mosquitto-clients")
}

/// A plain HTTP/1.0 GET on the ops API with extra header lines: (status, body).
pub async fn http_get(broker: &Broker, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(broker.http_addr())
        .await
        .expect("ops API listens");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A message the observer saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Topic.
    pub topic: String,
    /// Payload as JSON (Null when empty or not JSON).
    pub json: Value,
    /// Retain flag as delivered.
    pub retain: bool,
}

/// A backend-like client that subscribes to topics and records every message.
pub struct Observer {
    rx: mpsc::Receiver<Seen>,
    _client: AsyncClient,
    task: JoinHandle<()>,
}

fn seen(p: &rumqttc::Publish) -> Seen {
    Seen {
        topic: p.topic.clone(),
        json: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
        retain: p.retain,
    }
}

static OBSERVERS: AtomicU32 = AtomicU32::new(0);

impl Observer {
    /// Connects and subscribes to `filters`, waiting for every SUBACK.
    pub async fn connect(broker: SocketAddr, filters: &[&str]) -> Observer {
        Observer::connect_as(broker, filters, None).await
    }

    /// As [`Observer::connect`], with a username and password.
    pub async fn connect_as(
        broker: SocketAddr,
        filters: &[&str],
        credentials: Option<(String, String)>,
    ) -> Observer {
        let n = OBSERVERS.fetch_add(1, Ordering::Relaxed);
        let mut opts = MqttOptions::new(
            format!("observer-{}-{n}", std::process::id()),
            broker.ip().to_string(),
            broker.port(),
        );
        if let Some((user, password)) = credentials {
            opts.set_credentials(user, password);
        }
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe queued");
        }
        // Retained messages may arrive before the last SUBACK: keep them.
        let (tx, rx) = mpsc::channel(100_000);
        let mut acked = 0;
        tokio::time::timeout(WAIT, async {
            while acked < filters.len() {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        assert!(
                            matches!(
                                ack.return_codes.first(),
                                Some(rumqttc::SubscribeReasonCode::Success(_))
                            ),
                            "observer subscription refused: {ack:?}"
                        );
                        acked += 1;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.try_send(seen(&p));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("observer connection failed: {e}"),
                }
            }
        })
        .await
        .expect("observer subscribed in time");
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    if tx.send(seen(&p)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Observer {
            rx,
            _client: client,
            task,
        }
    }

    /// The first message (from now on) that matches, or a panic naming `what` after
    /// [`WAIT`].
    pub async fn wait_for(&mut self, what: &str, mut matches: impl FnMut(&Seen) -> bool) -> Seen {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(seen) = self.rx.recv().await {
                if matches(&seen) {
                    return Some(seen);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(seen)) => seen,
            _ => panic!("timed out waiting for {what}"),
        }
    }

    /// Every message from now on up to and including the first that matches, so the caller
    /// can inspect what came before it too; a panic naming `what` after [`WAIT`].
    pub async fn collect_until(
        &mut self,
        what: &str,
        mut matches: impl FnMut(&Seen) -> bool,
    ) -> Vec<Seen> {
        let mut out = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(seen) = self.rx.recv().await {
                let done = matches(&seen);
                out.push(seen);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => out,
            _ => panic!(
                "timed out waiting for {what}; received meanwhile: {:?}",
                out.iter().map(|s| (&s.topic, &s.json)).collect::<Vec<_>>()
            ),
        }
    }

    /// Every message received within `window` (for asserting that something did NOT
    /// happen; keep windows short).
    pub async fn collect_for(&mut self, window: Duration) -> Vec<Seen> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(window, async {
            while let Some(seen) = self.rx.recv().await {
                out.push(seen);
            }
        })
        .await;
        out
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT 3.1.1 client whose incoming packets come out of a channel; `subscribe` waits
/// for the SUBACK and says whether it was granted.
pub struct Client {
    mqtt: AsyncClient,
    packets: mpsc::UnboundedReceiver<Packet>,
}

impl Client {
    pub async fn connect(
        addr: std::net::SocketAddr,
        id: &str,
        login: Option<(&str, String)>,
    ) -> Client {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (mqtt, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        let mut c = Client { mqtt, packets };
        c.next(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        c
    }

    pub async fn next<T>(&mut self, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let p = self.packets.recv().await.expect("connection open");
                if let Some(t) = pick(&p) {
                    return t;
                }
            }
        })
        .await
        .expect("packet in time")
    }

    pub async fn subscribe(&mut self, filter: &str) -> bool {
        self.mqtt
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queued");
        self.next(|p| match p {
            Packet::SubAck(a) => Some(matches!(a.return_codes[0], SubscribeReasonCode::Success(_))),
            _ => None,
        })
        .await
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.mqtt
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("queued");
    }

    /// The payloads received on topics within `window` (to check what did NOT arrive).
    pub async fn received_for(&mut self, window: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(window, async {
            while let Some(p) = self.packets.recv().await {
                if let Packet::Publish(p) = p {
                    out.push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ));
                }
            }
        })
        .await;
        out
    }
}
