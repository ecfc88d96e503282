//! The topic rules on arbitrary client ids and topics, for every role: never panic, and
//! an allowed publish is always the client's own uplink topic.
#![no_main]

use fleet_broker::contract::{is_vehicle_id, UplinkKind};
use fleet_broker::mqtt::acl::{Acl, Allowed, Client, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (client_id, topic) = text.split_once('\n').unwrap_or(("v1", &text));
    let acl = Acl::default();
    for role in [Role::Anonymous, Role::Vehicle, Role::Observer] {
        let client = Client {
            role,
            id: client_id,
            username: None,
        };
        if let Ok(Allowed::Uplink(kind)) = acl.publish(&client, topic) {
            let expected = format!(
                "vehicles/{client_id}/{}",
                match kind {
                    UplinkKind::Heartbeat => "heartbeat",
                    UplinkKind::Error => "error",
                    UplinkKind::Ack => "ack",
                }
            );
            assert_eq!(topic, expected);
            assert!(is_vehicle_id(client_id));
            assert_ne!(role, Role::Observer);
        }
        if acl.subscribe(&client, topic).is_ok() {
            assert!(!topic.starts_with('$'));
            assert!(!topic.contains('#') || topic == "fleet/#");
            if role == Role::Vehicle {
                assert!(
                    topic == format!("vehicles/{client_id}/command")
                        || topic == format!("vehicles/{client_id}/service")
                );
            }
        }
    }
});
