//! `Broker::start` as a library caller meets it: an invalid configuration is refused with
//! every problem and its key, and a start that fails halfway stops what it had started
//! (the MQTT listener, the store writer and its lock), so a second start succeeds.

use std::net::{SocketAddr, TcpListener};

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::{Broker, StartError};

fn config(mqtt: SocketAddr, http: SocketAddr, store: &std::path::Path) -> Config {
    let mut c = Config::parse("").expect("an empty config parses");
    c.mqtt.listen = mqtt;
    c.http.listen = http;
    c.store.path = store.join("fleet.db");
    c
}

/// A port nobody listens on now.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn an_invalid_config_is_refused_by_start_with_the_problems_check_config_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(free_port(), free_port(), dir.path());
    c.heartbeat.recover_after = 0;
    c.slack.webhook_url = Some("hooks.slack.com/services/T/B/SECRET".to_owned());
    c.slack.digest_at = Some("9am".to_owned());
    let listed = c.validate().expect_err("invalid");
    let Err(StartError::Config(refused)) = Broker::start(&c, Clock::system()).await else {
        panic!("an invalid config started");
    };
    assert_eq!(refused, listed);
    let keys: Vec<&str> = refused.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "heartbeat.recover_after",
            "slack.webhook_url",
            "slack.digest_at"
        ]
    );
    let text = StartError::Config(refused).to_string();
    assert!(
        text.contains("3 problem(s)") && !text.contains("SECRET"),
        "{text}"
    );
    assert!(
        !dir.path().join("fleet.db").exists(),
        "nothing is opened for a refused config"
    );
}

#[tokio::test]
async fn a_start_that_fails_after_the_mqtt_listener_is_up_closes_it_and_releases_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mqtt = free_port();
    // The ops API's port is taken: the start fails after the store and MQTT are up.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = config(mqtt, taken.local_addr().expect("addr"), dir.path());
    match Broker::start(&c, Clock::system()).await {
        Err(StartError::HttpListen { addr, .. }) => assert_eq!(addr, c.http.listen),
        Err(other) => panic!("failed for another reason: {other}"),
        Ok(_) => panic!("started on a taken port"),
    }
    assert!(
        tokio::net::TcpStream::connect(mqtt).await.is_err(),
        "the MQTT listener still accepts connections after the failed start"
    );
    // The same store (its lock released) and the same MQTT port serve a second start.
    let c = config(mqtt, free_port(), dir.path());
    let broker = Broker::start(&c, Clock::system())
        .await
        .expect("a second start on the same store and port");
    assert_eq!(broker.mqtt_addr(), mqtt);
    broker.shutdown().await;
}
