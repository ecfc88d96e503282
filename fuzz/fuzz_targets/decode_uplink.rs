//! Uplink decoding (JSON and postcard, told apart by the first byte) on arbitrary topics
//! and payloads: never panics; whatever decodes names the sending client's own vehicle.
#![no_main]

use fleet_broker::contract::Topics;
use fleet_broker::ingest::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks the topic kind, the rest is the payload.
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let topic = match kind % 4 {
        0 => "vehicles/v1/heartbeat",
        1 => "vehicles/v1/error",
        2 => "vehicles/v1/ack",
        _ => "vehicles/v2/heartbeat",
    };
    if let Ok((vehicle, _)) = decode(&Topics::default(), "v1", topic, payload, 16 * 1024) {
        assert_eq!(vehicle, "v1");
    }
});
