//! The Slack outbox across a crash of the real binary: notifications decided while Slack
//! fails are stored with the transitions behind them; after SIGKILL and a restart each is
//! delivered exactly once, in the message composed before the crash. A post Slack accepted
//! just before the kill (its answer never recorded) is found in the channel after the
//! restart, not posted twice (bot token).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{MqttOptions, Packet, QoS};
use tokio::time::Instant;

#[path = "../../tests/src/fake_slack.rs"]
#[allow(dead_code)]
mod fake_slack;
mod support;

use fake_slack::{listed, FakeSlack, Reply, Request};
use support::{spawn_client, WAIT};

const VEHICLES: usize = 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Setup {
    dir: tempfile::TempDir,
    mqtt: SocketAddr,
    http: SocketAddr,
}

impl Setup {
    /// `slack`: the `[slack]` lines that name the target.
    fn new(slack: &str, request_timeout: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "[mqtt]\nlisten = \"{mqtt}\"\n[http]\nlisten = \"{http}\"\n\
             [store]\npath = \"{}\"\nsynchronous = \"normal\"\n\
             [heartbeat]\ntimeout = \"1h\"\n\
             [faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
             [slack]\n{slack}\ngroup_window = \"200ms\"\n\
             min_interval = \"20ms\"\nrequest_timeout = \"{request_timeout}\"\n",
            dir.path().join("fleet.db").display()
        );
        std::fs::write(dir.path().join("broker.toml"), config).expect("config written");
        Setup { dir, mqtt, http }
    }

    fn start(&self, life: usize) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("broker-{life}.log")))
            .expect("log file");
        let log_too = log.try_clone().expect("log handle");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet-broker"))
            .arg("--config")
            .arg(self.dir.path().join("broker.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too)
            .spawn()
            .expect("broker starts");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(self.mqtt).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("broker exited at start ({status}): {}", self.log(life));
            }
            assert!(Instant::now() < deadline, "broker not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn log(&self, life: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("broker-{life}.log")))
            .unwrap_or_default()
    }

    /// One sample of the broker's /metrics, or None when not answering.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut s = TcpStream::connect(self.http).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

async fn report_faults(addr: SocketAddr, ids: &[String]) {
    for id in ids {
        let mut opts = MqttOptions::new(id.clone(), addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let mut client = spawn_client(opts);
        client
            .mqtt
            .publish(
                format!("vehicles/{id}/error"),
                QoS::AtLeastOnce,
                false,
                r#"{"errors":[{"code":"MOTOR"}]}"#,
            )
            .await
            .expect("publish queued");
        client
            .expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
        let _ = client.mqtt.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_outbox_is_delivered_exactly_once_after_a_kill_and_restart() {
    let fake = FakeSlack::start().await;
    fake.set_default(Reply::Status(500, "internal_error"));
    let setup = Setup::new(&fake.webhook_lines(), "500ms");
    let ids: Vec<String> = (0..VEHICLES).map(|i| format!("crash-{i:02}")).collect();

    let mut first = setup.start(1);
    report_faults(setup.mqtt, &ids).await;
    // Composed and tried at least once, so the message exists with its key.
    let tried = fake
        .wait_until("a failed attempt", WAIT, |r| r.iter().any(Request::is_post))
        .await;
    let tried_keys: BTreeSet<String> = tried.iter().filter_map(Request::key).collect();
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert!(fake.delivered().is_empty());

    fake.set_default(Reply::Ok);
    let mut second = setup.start(2);
    fake.wait_until("every vehicle delivered", WAIT, |_| {
        listed(&fake.delivered(), &ids).len() == ids.len()
    })
    .await;
    // Quiet outbox: nothing left to send that could be a duplicate.
    let deadline = Instant::now() + WAIT;
    while setup.metric("fleet_slack_outbox_depth") != Some(0.0)
        || setup.metric("fleet_slack_messages_pending") != Some(0.0)
    {
        assert!(
            Instant::now() < deadline,
            "outbox never drained: {}",
            setup.log(2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = fake.delivered();
    let counts = listed(&delivered, &ids);
    assert!(
        counts.values().all(|n| *n == 1),
        "each vehicle exactly once: {counts:?}"
    );
    let keys: Vec<String> = delivered.iter().filter_map(Request::key).collect();
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "no key delivered twice: {keys:?}");
    assert!(
        tried_keys.is_subset(&unique),
        "the message composed before the crash is the one delivered: {tried_keys:?} vs {unique:?}"
    );
    second.kill().expect("stop");
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_accepted_just_before_a_kill_is_found_in_the_channel_not_posted_again() {
    let fake = FakeSlack::start().await;
    // Slack takes the message and the broker dies before the answer arrives.
    fake.script([Reply::AcceptThenHang]);
    let setup = Setup::new(&fake.bot_lines(), "30s");
    let ids = vec!["crash-window".to_owned()];

    let mut first = setup.start(1);
    report_faults(setup.mqtt, &ids).await;
    let posted = fake
        .wait_until("the post in flight", WAIT, |r| {
            r.iter().any(Request::is_post)
        })
        .await;
    let key = posted.iter().find_map(Request::key).expect("a key");
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let mut second = setup.start(2);
    let deadline = Instant::now() + WAIT;
    while setup.metric("fleet_slack_found_posted_total") != Some(1.0)
        || setup.metric("fleet_slack_outbox_depth") != Some(0.0)
    {
        assert!(
            Instant::now() < deadline,
            "the delivered message was not found: {}",
            setup.log(2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = fake.requests();
    assert!(requests
        .iter()
        .any(|r| r.path == "/api/conversations.history"));
    let posts: Vec<Option<String>> = requests
        .iter()
        .filter(|r| r.is_post())
        .map(Request::key)
        .collect();
    assert_eq!(posts, vec![Some(key)], "posted again after the restart");
    second.kill().expect("stop");
    let _ = second.wait();
}
