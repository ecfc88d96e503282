//! End to end: the compact binary (postcard v1) uplink encoding beside JSON on one topic.

use std::time::Duration;

use fleet_tests::{start, test_config, WAIT};
use sim_device::{Vehicle, VehicleOptions};

#[tokio::test]
async fn a_binary_heartbeat_and_error_report_act_like_their_json_twins() {
    let broker = start(&test_config(
        "[faults.codes.BRAKE_SENSOR]\nthreshold = 2\nwindow = \"1m\"\n",
    ))
    .await;
    let mut v = Vehicle::connect(broker.mqtt_addr(), "cell-1", VehicleOptions::default())
        .await
        .expect("vehicle connects");
    // 0x01, then seq None, battery Some(87), model Some("e-bike"), fw/service/ts None.
    let heartbeat = [
        0x01, 0x00, 0x01, 87, 0x01, 6, b'e', b'-', b'b', b'i', b'k', b'e', 0x00, 0x00, 0x00,
    ];
    v.publish("heartbeat", heartbeat.to_vec())
        .await
        .expect("queued");
    // 0x01, errors: [{BRAKE_SENSOR, 2}], ts None.
    let mut error = vec![0x01, 1, 12];
    error.extend_from_slice(b"BRAKE_SENSOR");
    error.extend_from_slice(&[2, 0x00]);
    v.publish("error", error).await.expect("queued");

    let out = v.next_command(WAIT).await.expect("service_out arrives");
    assert_eq!(out.command, "service_out");
    assert_eq!(out.reasons[0]["code"], "BRAKE_SENSOR");
    let view = broker
        .engine()
        .vehicle("cell-1")
        .await
        .expect("engine")
        .expect("registered by the binary heartbeat");
    assert_eq!(view.model.as_deref(), Some("e-bike"));
    assert_eq!(broker.metrics().rejected("malformed"), 0);
    assert_eq!(v.next_command(Duration::from_millis(200)).await, None);
    broker.shutdown().await;
}
