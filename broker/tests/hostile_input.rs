//! Fuzz-style property tests that run on stable with every `cargo test`: the topic
//! parser and ACL, and every payload decoder (JSON and postcard v1), on arbitrary input.
//! They check the same properties as the cargo-fuzz targets in `fuzz/`, and replay every
//! input kept in `fuzz/regressions/` (crashes found by fuzzing, kept as regression tests).

use std::path::Path;

use fleet_broker::contract::{is_vehicle_id, Topics};
use fleet_broker::ingest::{
    decode, Ack, ErrorEntry, ErrorReport, Heartbeat, Message, ReportedState, POSTCARD_V1,
};
use fleet_broker::mqtt::acl::{Acl, Client, Role};
use fleet_broker::mqtt::auth::parse_credentials;
use fleet_broker::mqtt::secret::SecretHash;
use proptest::prelude::*;

const MAX: usize = 16 * 1024;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The checks of `fuzz/fuzz_targets/topic_acl.rs`.
fn acl_properties(client_id: &str, topic: &str) {
    let acl = Acl::default();
    for role in [Role::Anonymous, Role::Vehicle, Role::Observer] {
        let client = Client {
            role,
            id: client_id,
            username: None,
        };
        if acl.publish(&client, topic).is_ok() {
            assert!(is_vehicle_id(client_id), "{role:?} {client_id:?} {topic:?}");
            assert_ne!(role, Role::Observer);
            let own = ["heartbeat", "error", "ack"]
                .iter()
                .any(|k| topic == format!("vehicles/{client_id}/{k}"));
            assert!(own, "{role:?} {client_id:?} published on {topic:?}");
        }
        if acl.subscribe(&client, topic).is_ok() {
            assert!(!topic.starts_with('$'), "{topic:?}");
            assert!(!topic.contains('#') || topic == "fleet/#", "{topic:?}");
            if role == Role::Vehicle {
                assert!(
                    topic == format!("vehicles/{client_id}/command")
                        || topic == format!("vehicles/{client_id}/service"),
                    "vehicle {client_id:?} subscribed to {topic:?}"
                );
            }
        }
    }
}

/// The checks of `fuzz/fuzz_targets/decode_uplink.rs` and `decode_postcard.rs`.
fn decode_properties(payload: &[u8]) {
    for topic in [
        "vehicles/v1/heartbeat",
        "vehicles/v1/error",
        "vehicles/v1/ack",
        "vehicles/v2/heartbeat",
    ] {
        if let Ok((vehicle, _)) = decode(&Topics::default(), "v1", topic, payload, MAX) {
            assert_eq!(vehicle, "v1");
        }
        let mut binary = vec![POSTCARD_V1];
        binary.extend_from_slice(payload);
        let _ = decode(&Topics::default(), "v1", topic, &binary, MAX);
    }
}

/// The checks of `fuzz/fuzz_targets/credentials.rs`.
fn credentials_properties(text: &str) {
    let _ = parse_credentials(text);
    if let Ok(hash) = SecretHash::parse(text) {
        assert_eq!(SecretHash::parse(&hash.to_string()), Ok(hash));
    }
}

/// Topic-like strings: mostly contract levels and wildcards, sometimes anything.
fn topic() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just("vehicles".to_owned()),
        Just("fleet".to_owned()),
        Just("v1".to_owned()),
        Just("v2".to_owned()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        Just("heartbeat".to_owned()),
        Just("error".to_owned()),
        Just("ack".to_owned()),
        Just("command".to_owned()),
        Just("service".to_owned()),
        Just("sli".to_owned()),
        Just("$SYS".to_owned()),
        Just(String::new()),
        "\\PC{0,8}",
    ];
    prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

fn client_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_owned()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        Just("ops".to_owned()),
        Just(String::new()),
        "\\PC{0,10}",
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        any::<Option<u64>>(),
        prop::option::of(0u8..=100),
        prop::option::of("[a-z0-9-]{1,64}"),
        prop::option::of("\\PC{0,20}"),
        prop::option::of(prop_oneof![
            Just(ReportedState::InService),
            Just(ReportedState::OutOfService)
        ]),
        any::<Option<u64>>(),
    )
        .prop_map(|(seq, battery, model, fw, service, ts)| Heartbeat {
            seq,
            battery,
            model,
            fw,
            service,
            ts,
        })
}

fn error_report() -> impl Strategy<Value = ErrorReport> {
    (
        prop::collection::vec(
            ("[A-Z0-9_]{1,64}", 1u32..=1000).prop_map(|(code, count)| ErrorEntry { code, count }),
            1..=32,
        ),
        any::<Option<u64>>(),
    )
        .prop_map(|(errors, ts)| ErrorReport { errors, ts })
}

fn ack() -> impl Strategy<Value = Ack> {
    ("\\PC{1,40}", any::<bool>(), prop::option::of("\\PC{0,40}")).prop_map(|(id, ok, error)| Ack {
        id,
        ok,
        error,
    })
}

fn postcard(value: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = vec![POSTCARD_V1];
    bytes.extend(postcard::to_stdvec(value).expect("encodes"));
    bytes
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn the_acl_never_lets_a_client_publish_beyond_its_own_uplinks(
        client in client_id(),
        topic in topic(),
    ) {
        acl_properties(&client, &topic);
    }

    #[test]
    fn the_acl_on_arbitrary_strings_never_panics_and_keeps_its_rules(
        client in "\\PC{0,70}",
        topic in "\\PC{0,70}",
    ) {
        acl_properties(&client, &topic);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_properties(&payload);
    }

    #[test]
    fn decoding_json_shaped_garbage_never_panics(
        payload in "[{}\\[\\]\":,0-9a-z_ .eE+-]{0,120}",
    ) {
        decode_properties(payload.as_bytes());
    }

    #[test]
    fn credentials_text_never_panics(text in "\\PC{0,200}") {
        credentials_properties(&text);
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn a_valid_heartbeat_round_trips_through_json_and_postcard(hb in heartbeat()) {
        let json = serde_json::to_vec(&hb).expect("json");
        for bytes in [json, postcard(&hb)] {
            let (_, m) = decode(&Topics::default(), "v1", "vehicles/v1/heartbeat", &bytes, MAX).expect("decodes");
            prop_assert_eq!(m, Message::Heartbeat(hb.clone()));
        }
    }

    #[test]
    fn a_valid_error_report_round_trips_through_json_and_postcard(report in error_report()) {
        let json = serde_json::to_vec(&report).expect("json");
        for bytes in [json, postcard(&report)] {
            let (_, m) = decode(&Topics::default(), "v1", "vehicles/v1/error", &bytes, MAX).expect("decodes");
            prop_assert_eq!(m, Message::Error(report.clone()));
        }
    }

    #[test]
    fn a_valid_ack_round_trips_through_json_and_postcard(a in ack()) {
        let json = serde_json::to_vec(&a).expect("json");
        for bytes in [json, postcard(&a)] {
            let (_, m) = decode(&Topics::default(), "v1", "vehicles/v1/ack", &bytes, MAX).expect("decodes");
            prop_assert_eq!(m, Message::Ack(a.clone()));
        }
    }

    #[test]
    fn a_postcard_message_cut_short_or_extended_is_rejected_not_misread(
        hb in heartbeat(),
        cut in 1usize..8,
    ) {
        let bytes = postcard(&hb);
        let short = &bytes[..bytes.len().saturating_sub(cut).max(1)];
        if short.len() < bytes.len() {
            if let Ok((_, m)) = decode(&Topics::default(), "v1", "vehicles/v1/heartbeat", short, MAX) {
                prop_assert_ne!(m, Message::Heartbeat(hb.clone()));
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        prop_assert!(decode(&Topics::default(), "v1", "vehicles/v1/heartbeat", &long, MAX).is_err());
    }
}

/// Every file under `fuzz/regressions/TARGET/` is an input that once crashed TARGET (or
/// a seed worth keeping); each must now pass TARGET's checks.
#[test]
fn every_kept_fuzz_input_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for target in [
        "topic_acl",
        "decode_uplink",
        "decode_postcard",
        "credentials",
    ] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for file in dir.flatten() {
            let data = std::fs::read(file.path()).expect("read kept input");
            match target {
                "topic_acl" => {
                    let text = String::from_utf8_lossy(&data);
                    let (client, topic) = text.split_once('\n').unwrap_or(("v1", &text));
                    acl_properties(client, topic);
                }
                "credentials" => credentials_properties(&String::from_utf8_lossy(&data)),
                _ => decode_properties(&data),
            }
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no kept inputs found under {}",
        root.display()
    );
}
