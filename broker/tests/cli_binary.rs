//! The built `fleet-broker` binary as a technician runs it: `vehicles list`, `vehicles
//! show`, `vehicles service-in` and `slo` against a broker on free ports, with their exit
//! status and output.

use std::process::{Command, Output};
use std::time::Duration;

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::Broker;
use rumqttc::{AsyncClient, MqttOptions, QoS};

const TOKEN: &str = "binary-test-token-0123456789";

async fn fleet_broker(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fleet-broker"))
            .args(args)
            .env_remove("FLEET_API_URL")
            .env_remove("FLEET_API_TOKEN")
            .output()
            .expect("the binary runs")
    })
    .await
    .expect("joined")
}

/// Registers `id` with one error report that takes it out (threshold 1).
async fn faulty_vehicle(broker: &Broker, id: &str) {
    let addr = broker.mqtt_addr();
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            format!("vehicles/{id}/error"),
            QoS::AtLeastOnce,
            false,
            br#"{"errors":[{"code":"BRAKE_SENSOR"}]}"#.to_vec(),
        )
        .await
        .expect("publish queued");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let out = broker
                .engine()
                .vehicle(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|v| !v.reasons.is_empty());
            if out {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the vehicle goes out");
}

#[tokio::test]
async fn the_binary_lists_shows_services_and_reports_the_slo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [store]\npath = \"{}\"\n[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n",
        dir.path().join("fleet.db").display()
    );
    let config = Config::parse(&text).expect("config");
    let broker = Broker::start(&config, Clock::system())
        .await
        .expect("broker starts");
    faulty_vehicle(&broker, "bike-9").await;
    let url = format!("http://{}", broker.http_addr());
    let args = |a: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = a.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--url".to_owned(), url.clone()]);
        v
    };

    let out = fleet_broker(args(&["vehicles", "list", "--json"])).await;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["vehicles"][0]["id"], "bike-9");
    assert_eq!(json["vehicles"][0]["state"], "out_of_service");

    let out = fleet_broker(args(&["vehicles", "show", "bike-9"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("hardware_fault BRAKE_SENSOR"),
        "{text}"
    );

    // Without the token: exit 1 and the API's reason on stderr.
    let out = fleet_broker(args(&[
        "vehicles",
        "service-in",
        "bike-9",
        "--operator",
        "ana",
        "--note",
        "fixed",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));

    let out = fleet_broker(args(&[
        "vehicles",
        "service-in",
        "bike-9",
        "--operator",
        "ana",
        "--note",
        "fixed",
        "--token",
        TOKEN,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bike-9 is back in service"));

    let out = fleet_broker(args(&["slo"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Fleet in service"),
        "{text}"
    );

    // Unknown subcommand arguments are a usage error (clap's exit status 2).
    let out = fleet_broker(args(&["vehicles", "list", "--state", "broken"])).await;
    assert_eq!(out.status.code(), Some(2));
    broker.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the broker process this test started, whatever happens.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_broker_binary_takes_its_api_token_from_fleet_api_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mqtt, http) = (free_port(), free_port());
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [store]\npath = \"{}\"\n",
            dir.path().join("fleet.db").display()
        ),
    )
    .expect("config written");
    let _broker = Running(
        Command::new(env!("CARGO_BIN_EXE_fleet-broker"))
            .arg("--config")
            .arg(&config)
            .env("FLEET_API_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the broker starts"),
    );
    let url = format!("http://127.0.0.1:{http}");
    let api = fleet_broker::cli::ApiClient::new(&url, None).expect("url");
    tokio::time::timeout(Duration::from_secs(20), async {
        while api.get("/readyz").await.ok().map(|r| r.status) != Some(200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the broker gets ready");

    let mut opts = MqttOptions::new("v1", "127.0.0.1", mqtt);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish("vehicles/v1/heartbeat", QoS::AtLeastOnce, false, Vec::new())
        .await
        .expect("publish queued");
    tokio::time::timeout(Duration::from_secs(10), async {
        while api.get("/api/v1/vehicles/v1").await.ok().map(|r| r.status) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("v1 registers");

    let service_out = |token: &str| {
        vec![
            "vehicles",
            "service-out",
            "v1",
            "--operator",
            "ana",
            "--note",
            "tyre",
            "--url",
            &url,
            "--token",
            token,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let out = fleet_broker(service_out("wrong-token-0123456789")).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = fleet_broker(service_out(TOKEN)).await;
    assert!(out.status.success(), "{out:?}");
    let shown = api
        .get("/api/v1/vehicles/v1")
        .await
        .expect("answers")
        .json();
    assert_eq!(shown["reasons"][0]["kind"], "maintenance");
}

#[tokio::test]
async fn a_bad_slack_webhook_url_or_token_stops_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broker.toml");
    std::fs::write(
        &file,
        "[slack]\nwebhook_url = \"hooks.slack.com/services/T/B/SECRETPART\"\n",
    )
    .expect("config written");
    let out = fleet_broker(vec!["check-config".into(), file.display().to_string()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("slack.webhook_url"), "{stderr}");
    assert!(
        !stderr.contains("SECRETPART"),
        "the secret is not echoed: {stderr}"
    );

    std::fs::write(
        &file,
        "[slack]\nbot_token = \"not-a-token\"\nchannel = \"C1\"\n",
    )
    .expect("config written");
    let out = fleet_broker(vec!["--config".into(), file.display().to_string()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("slack.bot_token"), "{stderr}");
    assert!(
        stderr.contains("xoxb-"),
        "says what a token looks like: {stderr}"
    );
}
