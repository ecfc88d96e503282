//! Attach mode in the tests: a real Mosquitto on a free port as the upstream broker, and
//! a rig that runs the same end-to-end case against the embedded broker or against
//! Mosquitto + the broker attached to it (with the ACL `fleet-broker acl --for mosquitto`
//! prints, so the upstream enforces each vehicle's identity).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_broker::cli::upstream_acl::{self, Principals};
use fleet_broker::config::{Config, MqttMode};
use fleet_broker::contract::Topics;
use fleet_broker::Broker;
use sim_device::VehicleOptions;

use crate::{start, test_config, Observer, WAIT};

/// Whether `mosquitto` is installed (see [`crate::tool_installed`]).
pub fn mosquitto_installed() -> bool {
    crate::tool_installed("mosquitto", &["-h"], "mosquitto")
}

/// A Mosquitto process on a free loopback port, killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    conf: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Usernames of the observers a rig can connect (each its own client id upstream).
const OBSERVERS: usize = 8;

fn observer_name(i: usize) -> String {
    format!("observer-{i}")
}

/// A password for `user` in the tests.
pub fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// A port on 127.0.0.1 nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Mosquitto {
    /// Starts Mosquitto with `settings` (lines of mosquitto.conf) after its listener, and
    /// waits until it accepts connections. `files` are written to its directory first
    /// (`(name, contents)`; `{dir}` in `settings` is that directory; a `passwd` file of
    /// `user:password` lines is hashed).
    pub fn start(settings: &str, files: &[(&str, String)]) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("fleet-upstream-")
            .tempdir()
            .expect("a temporary directory");
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write a mosquitto file");
            if *name == "passwd" {
                hash_passwords(&path);
            }
        }
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 100000\n{}\n",
            settings.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            conf,
            port,
            _dir: dir,
        };
        m.restart();
        m
    }

    /// A Mosquitto that lets anyone connect and publish anything (for load and fault
    /// tests, where identity is not the point).
    pub fn open() -> Mosquitto {
        Mosquitto::start("allow_anonymous true", &[])
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye to any client, and (without persistence) every session and
    /// retained message is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        // At most WAIT in 20 ms steps.
        let mut attempts = WAIT.as_millis() / 20;
        while std::net::TcpStream::connect(self.addr()).is_err() {
            attempts = attempts.saturating_sub(1);
            assert!(attempts > 0, "mosquitto did not listen on {}", self.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Hashes a `user:password` file in place with `mosquitto_passwd -U`.
fn hash_passwords(path: &Path) {
    let status = Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(path)
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd -U failed");
}

/// Sets `config` to attach to `url` as `fleet-broker`.
pub fn attach_to(config: &mut Config, url: &str, credentials: bool) {
    config.mqtt.mode = MqttMode::Attach;
    config.mqtt.attach.url = fleet_broker::config::OneOrMore::One(url.to_owned());
    if credentials {
        config.mqtt.attach.username = Some("fleet-broker".to_owned());
        config.mqtt.attach.password = Some(password("fleet-broker"));
    }
}

/// Waits until the attached broker's uplink subscriptions are acknowledged.
pub async fn wait_attached(broker: &Broker) {
    tokio::time::timeout(WAIT, async {
        loop {
            if broker
                .front()
                .upstream_stats()
                .is_some_and(|s| s.connected && s.subacks > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the broker attached to the upstream in time");
}

/// Which way the broker meets the vehicles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The embedded broker.
    Embedded,
    /// Attached to a Mosquitto that enforces the generated ACL.
    Attached,
}

/// A broker and, in attach mode, its upstream.
pub struct Rig {
    /// The broker.
    pub broker: Broker,
    upstream: Option<Mosquitto>,
    observers: AtomicUsize,
}

impl Rig {
    /// Starts the broker with the test config plus `extra`; in attach mode first a
    /// Mosquitto with users for `vehicles` (username = vehicle id), the broker and the
    /// observers, and the ACL for the default layout. `None` when Mosquitto is missing
    /// outside CI (the caller skips).
    pub async fn start(mode: Mode, extra: &str, vehicles: &[String]) -> Option<Rig> {
        let mut config = test_config(extra);
        let upstream = match mode {
            Mode::Embedded => None,
            Mode::Attached => {
                if !mosquitto_installed() {
                    return None;
                }
                let observers: Vec<String> = (0..OBSERVERS).map(observer_name).collect();
                let acl = upstream_acl::render(
                    upstream_acl::Upstream::Mosquitto,
                    &Topics::default(),
                    &Principals {
                        broker: "fleet-broker".to_owned(),
                        observers: observers.clone(),
                    },
                );
                let users: String = vehicles
                    .iter()
                    .chain(&observers)
                    .chain(std::iter::once(&"fleet-broker".to_owned()))
                    .map(|u| format!("{u}:{}\n", password(u)))
                    .collect();
                let m = Mosquitto::start(
                    "allow_anonymous false\npassword_file {dir}/passwd\nacl_file {dir}/fleet.acl\nuse_username_as_clientid true",
                    &[("fleet.acl", acl), ("passwd", users)],
                );
                attach_to(&mut config, &m.url(), true);
                Some(m)
            }
        };
        let broker = start(&config).await;
        if upstream.is_some() {
            wait_attached(&broker).await;
        }
        Some(Rig {
            broker,
            upstream,
            observers: AtomicUsize::new(0),
        })
    }

    /// Where vehicles and observers connect.
    pub fn mqtt(&self) -> SocketAddr {
        match &self.upstream {
            Some(m) => m.addr(),
            None => self.broker.mqtt_addr(),
        }
    }

    /// Options for vehicle `id` (its credentials upstream in attach mode).
    pub fn vehicle(&self, id: &str) -> VehicleOptions {
        VehicleOptions {
            credentials: self
                .upstream
                .as_ref()
                .map(|_| (id.to_owned(), password(id))),
            ..VehicleOptions::default()
        }
    }

    /// An observer subscribed to `filters`.
    pub async fn observer(&self, filters: &[&str]) -> Observer {
        let credentials = self.upstream.as_ref().map(|_| {
            let n = self.observers.fetch_add(1, Ordering::Relaxed) % OBSERVERS;
            let name = observer_name(n);
            let pw = password(&name);
            (name, pw)
        });
        Observer::connect_as(self.mqtt(), filters, credentials).await
    }

    /// Stops the broker, then the upstream.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
        drop(self.upstream);
    }
}
