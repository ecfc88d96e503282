//! The compact binary encoding only: the postcard v1 format byte followed by arbitrary
//! bytes, on each uplink topic. Never panics, never allocates without bound.
#![no_main]

use fleet_broker::contract::Topics;
use fleet_broker::ingest::{decode, POSTCARD_V1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(POSTCARD_V1);
    payload.extend_from_slice(data);
    for topic in [
        "vehicles/v1/heartbeat",
        "vehicles/v1/error",
        "vehicles/v1/ack",
    ] {
        let _ = decode(&Topics::default(), "v1", topic, &payload, 16 * 1024);
    }
});
