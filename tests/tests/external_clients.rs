//! End to end with clients nobody here wrote: mosquitto_pub as a vehicle and
//! mosquitto_sub as a backend, against the broker on a free port.

use std::time::Duration;

use fleet_tests::{mosquitto_clients, start, test_config, WAIT};
use tokio::process::Command;

#[tokio::test]
async fn mosquitto_clients_see_a_vehicle_register_and_read_the_retained_state() {
    if !mosquitto_clients() {
        return;
    }
    let broker = start(&test_config("")).await;
    let port = broker.mqtt_addr().port().to_string();

    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "mq-scooter-1",
            "-q",
            "1",
        ])
        .args([
            "-t",
            "vehicles/mq-scooter-1/heartbeat",
            "-m",
            r#"{"battery":55,"model":"e-scooter"}"#,
        ])
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(published.success());

    // A backend subscribing afterwards gets the retained state: -C 1 exits after one.
    let out = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "8",
            ])
            .args(["-t", "vehicles/+/service", "-v"])
            .output(),
    )
    .await
    .expect("mosquitto_sub finishes")
    .expect("mosquitto_sub runs");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("vehicles/mq-scooter-1/service {"),
        "unexpected output: {line:?}"
    );
    assert!(line.contains(r#""state":"in_service""#), "{line}");

    // Publishing on a broker-only topic is refused and changes nothing.
    let spoof = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "mq-scooter-1",
            "-q",
            "1",
        ])
        .args([
            "-t",
            "vehicles/mq-scooter-1/service",
            "-r",
            "-m",
            r#"{"state":"out_of_service"}"#,
        ])
        .status()
        .await
        .expect("mosquitto_pub runs");
    let _ = spoof; // refused publishes are dropped; the client may or may not report it
    tokio::time::timeout(WAIT, async {
        while broker.mqtt_stats().publishes_denied == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the spoofed retained publish was counted as denied");
    let view = broker
        .engine()
        .vehicle("mq-scooter-1")
        .await
        .expect("engine")
        .expect("registered");
    assert!(view.reasons.is_empty());
    assert_eq!(view.model.as_deref(), Some("e-scooter"));
    broker.shutdown().await;
}
