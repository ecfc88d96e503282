//! The built-in rules on contract v1, as the firmware and backends meet them, and the
//! `[[acl]]` entries for the fleet's own topics.

use super::*;

const MAX: usize = 16 * 1024;

fn v1_acl() -> Acl {
    Acl::default()
}

fn check_publish_as(
    role: Role,
    client_id: &str,
    topic: &str,
    payload_len: usize,
    max_payload: usize,
) -> Result<UplinkKind, PublishDenied> {
    if payload_len > max_payload {
        return Err(PublishDenied::Oversize);
    }
    let acl = Acl::default();
    let client = Client {
        role,
        id: client_id,
        username: None,
    };
    acl.publish(&client, topic).map(|a| match a {
        Allowed::Uplink(kind) => kind,
        other => panic!("v1 without entries allowed {other:?}"),
    })
}

fn check_publish(
    client_id: &str,
    topic: &str,
    payload_len: usize,
    max_payload: usize,
) -> Result<UplinkKind, PublishDenied> {
    check_publish_as(Role::Anonymous, client_id, topic, payload_len, max_payload)
}

fn check_subscribe_as(role: Role, client_id: &str, filter: &str) -> Result<(), SubscribeDenied> {
    let client = Client {
        role,
        id: client_id,
        username: None,
    };
    v1_acl().subscribe(&client, filter).map(|_| ())
}

fn check_subscribe(client_id: &str, filter: &str) -> Result<(), SubscribeDenied> {
    check_subscribe_as(Role::Anonymous, client_id, filter)
}

fn publish(client: &str, topic: &str) -> Result<UplinkKind, PublishDenied> {
    check_publish(client, topic, 10, MAX)
}

#[test]
fn a_vehicle_may_publish_its_own_heartbeat_error_and_ack() {
    assert_eq!(
        publish("v1", "vehicles/v1/heartbeat"),
        Ok(UplinkKind::Heartbeat)
    );
    assert_eq!(publish("v1", "vehicles/v1/error"), Ok(UplinkKind::Error));
    assert_eq!(publish("v1", "vehicles/v1/ack"), Ok(UplinkKind::Ack));
}

#[test]
fn a_vehicle_may_not_publish_on_another_vehicles_uplink_topics() {
    assert_eq!(
        publish("v1", "vehicles/v2/heartbeat"),
        Err(PublishDenied::OtherVehicle)
    );
    assert_eq!(
        publish("v1", "vehicles/v2/error"),
        Err(PublishDenied::OtherVehicle)
    );
    assert_eq!(
        publish("v1", "vehicles/v10/ack"),
        Err(PublishDenied::OtherVehicle)
    );
}

#[test]
fn nobody_may_publish_commands_service_state_or_fleet_topics() {
    assert_eq!(
        publish("v1", "vehicles/v1/command"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(
        publish("v1", "vehicles/v1/service"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(
        publish("v1", "vehicles/v2/command"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(publish("v1", "fleet/sli"), Err(PublishDenied::BrokerOnly));
    assert_eq!(
        publish("v1", "fleet/events"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(publish("v1", "fleet"), Err(PublishDenied::BrokerOnly));
}

#[test]
fn unknown_topics_are_denied() {
    for topic in [
        "",
        "/",
        "vehicles",
        "vehicles/v1",
        "vehicles/v1/",
        "vehicles/v1/status",
        "vehicles/v1/heartbeat/extra",
        "vehicles//heartbeat",
        "/vehicles/v1/heartbeat",
        "Vehicles/v1/heartbeat",
        "$SYS/broker",
        "anything",
    ] {
        let denied = publish("v1", topic);
        assert!(
            matches!(
                denied,
                Err(PublishDenied::UnknownTopic) | Err(PublishDenied::OtherVehicle)
            ),
            "{topic:?} gave {denied:?}"
        );
    }
    assert_eq!(
        publish("v1", "vehicles/v1/status"),
        Err(PublishDenied::UnknownTopic)
    );
}

#[test]
fn publishing_to_a_wildcard_topic_is_denied() {
    assert_eq!(
        publish("v1", "vehicles/+/heartbeat"),
        Err(PublishDenied::Wildcard)
    );
    assert_eq!(publish("v1", "vehicles/v1/#"), Err(PublishDenied::Wildcard));
    assert_eq!(
        publish("+", "vehicles/+/heartbeat"),
        Err(PublishDenied::Wildcard)
    );
}

#[test]
fn a_client_whose_id_is_not_a_vehicle_id_owns_no_uplink_topic() {
    assert_eq!(
        publish("a b", "vehicles/a b/heartbeat"),
        Err(PublishDenied::NotAVehicle)
    );
    assert_eq!(
        publish("", "vehicles//heartbeat"),
        Err(PublishDenied::NotAVehicle)
    );
    let long = "a".repeat(65);
    assert_eq!(
        publish(&long, &format!("vehicles/{long}/heartbeat")),
        Err(PublishDenied::NotAVehicle)
    );
}

#[test]
fn a_payload_over_the_limit_is_denied_even_on_an_allowed_topic() {
    assert_eq!(
        check_publish("v1", "vehicles/v1/heartbeat", MAX + 1, MAX),
        Err(PublishDenied::Oversize)
    );
    assert_eq!(
        check_publish("v1", "vehicles/v1/heartbeat", MAX, MAX),
        Ok(UplinkKind::Heartbeat)
    );
    assert_eq!(
        check_publish("v1", "vehicles/v1/heartbeat", 0, MAX),
        Ok(UplinkKind::Heartbeat)
    );
}

#[test]
fn a_vehicle_may_subscribe_to_its_own_command_and_service_topics() {
    assert_eq!(check_subscribe("v1", "vehicles/v1/command"), Ok(()));
    assert_eq!(check_subscribe("v1", "vehicles/v1/service"), Ok(()));
}

#[test]
fn anyone_may_subscribe_to_the_read_only_observer_topics() {
    for filter in [
        "vehicles/+/service",
        "vehicles/v2/service",
        "fleet/events",
        "fleet/sli",
        "fleet/alerts",
        "fleet/+",
        "fleet/#",
    ] {
        assert_eq!(check_subscribe("v1", filter), Ok(()), "{filter}");
        assert_eq!(check_subscribe("ops dashboard", filter), Ok(()), "{filter}");
    }
}

#[test]
fn a_vehicle_may_not_subscribe_to_another_vehicles_command_topic() {
    assert_eq!(
        check_subscribe("v1", "vehicles/v2/command"),
        Err(SubscribeDenied::OtherVehicle)
    );
    assert_eq!(
        check_subscribe("v1", "vehicles/v10/command"),
        Err(SubscribeDenied::OtherVehicle)
    );
}

#[test]
fn wildcards_that_reach_other_vehicles_commands_are_too_broad() {
    for filter in [
        "#",
        "+/v1/command",
        "+/+/+",
        "vehicles/#",
        "vehicles/+/command",
        "vehicles/+/#",
        "vehicles/+/+",
    ] {
        let denied = check_subscribe("v1", filter);
        assert!(
            matches!(
                denied,
                Err(SubscribeDenied::TooBroad) | Err(SubscribeDenied::Uplink)
            ),
            "{filter:?} gave {denied:?}"
        );
    }
    assert_eq!(check_subscribe("v1", "#"), Err(SubscribeDenied::TooBroad));
    assert_eq!(
        check_subscribe("v1", "vehicles/+/command"),
        Err(SubscribeDenied::TooBroad)
    );
    assert_eq!(
        check_subscribe("v1", "vehicles/#"),
        Err(SubscribeDenied::TooBroad)
    );
    // Wildcards that fit no contract topic are the fleet's own traffic: no entry opens them.
    for filter in ["+", "vehicles/+"] {
        assert_eq!(
            check_subscribe("v1", filter),
            Err(SubscribeDenied::UnknownTopic),
            "{filter}"
        );
    }
}

#[test]
fn nobody_may_read_vehicle_uplinks() {
    for filter in [
        "vehicles/v1/heartbeat",
        "vehicles/v2/heartbeat",
        "vehicles/v1/error",
        "vehicles/v1/ack",
        "vehicles/v1/+",
        "vehicles/v1/#",
        "vehicles/+/heartbeat",
    ] {
        assert_eq!(
            check_subscribe("v1", filter),
            Err(SubscribeDenied::Uplink),
            "{filter}"
        );
    }
}

#[test]
fn system_topics_are_refused_and_a_shared_subscription_reads_what_its_filter_reads() {
    assert_eq!(
        check_subscribe("v1", "$SYS/#"),
        Err(SubscribeDenied::SystemTopic)
    );
    assert_eq!(
        check_subscribe_as(Role::Vehicle, "v1", "$share/g/vehicles/v1/command"),
        Ok(())
    );
    assert_eq!(
        check_subscribe_as(Role::Vehicle, "v1", "$share/g/vehicles/v2/command"),
        Err(SubscribeDenied::OtherVehicle)
    );
    assert_eq!(
        check_subscribe_as(Role::Observer, "ops", "$share/g/fleet/events"),
        Ok(())
    );
    assert_eq!(
        check_subscribe("v1", "$share/g/#"),
        Err(SubscribeDenied::TooBroad)
    );
    for malformed in [
        "$share/",
        "$share//x",
        "$share/g",
        "$share/+/x",
        "$share/g/",
    ] {
        assert_eq!(
            check_subscribe("v1", malformed),
            Err(SubscribeDenied::SystemTopic),
            "{malformed}"
        );
    }
}

#[test]
fn a_client_whose_id_is_not_a_vehicle_id_owns_no_command_topic() {
    assert_eq!(
        check_subscribe("a b", "vehicles/v1/command"),
        Err(SubscribeDenied::NotAVehicle)
    );
    // A client id such as "+" must not turn a wildcard into "its own" topic.
    assert_eq!(
        check_subscribe("+", "vehicles/+/command"),
        Err(SubscribeDenied::TooBroad)
    );
}

#[test]
fn unknown_filters_are_refused() {
    for filter in [
        "",
        "fleet",
        "fleet/other",
        "fleet/+/x",
        "fleet/sli/x",
        "vehicles",
        "vehicles/v1/status",
        "vehicles/a b/service",
        "other/topic",
    ] {
        assert_eq!(
            check_subscribe("v1", filter),
            Err(SubscribeDenied::UnknownTopic),
            "{filter:?}"
        );
    }
}

#[test]
fn the_broker_may_publish_any_concrete_topic_but_no_wildcard_or_system_topic() {
    assert!(is_publishable_topic("vehicles/v1/command"));
    assert!(is_publishable_topic("fleet/sli"));
    assert!(!is_publishable_topic(""));
    assert!(!is_publishable_topic("vehicles/+/command"));
    assert!(!is_publishable_topic("fleet/#"));
    assert!(!is_publishable_topic("$SYS/x"));
    assert!(!is_publishable_topic("a\0b"));
}

#[test]
fn every_reason_has_a_distinct_index_matching_its_position_in_all() {
    for (i, r) in PublishDenied::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    for (i, r) in SubscribeDenied::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

#[test]
fn with_auth_on_a_vehicle_may_subscribe_only_to_its_own_command_and_service() {
    let v = Role::Vehicle;
    assert_eq!(check_subscribe_as(v, "v1", "vehicles/v1/command"), Ok(()));
    assert_eq!(check_subscribe_as(v, "v1", "vehicles/v1/service"), Ok(()));
    for (filter, reason) in [
        ("#", SubscribeDenied::TooBroad),
        ("+/+/+", SubscribeDenied::TooBroad),
        ("vehicles/#", SubscribeDenied::TooBroad),
        ("vehicles/+/service", SubscribeDenied::TooBroad),
        ("vehicles/+/command", SubscribeDenied::TooBroad),
        ("vehicles/+/+", SubscribeDenied::Uplink),
        ("vehicles/v2/service", SubscribeDenied::OtherVehicle),
        ("vehicles/v2/command", SubscribeDenied::OtherVehicle),
        ("vehicles/v2/heartbeat", SubscribeDenied::Uplink),
        ("fleet/#", SubscribeDenied::ObserversOnly),
        ("fleet/events", SubscribeDenied::ObserversOnly),
        ("fleet/sli", SubscribeDenied::ObserversOnly),
        ("fleet/+", SubscribeDenied::ObserversOnly),
        ("$SYS/#", SubscribeDenied::SystemTopic),
    ] {
        assert_eq!(check_subscribe_as(v, "v1", filter), Err(reason), "{filter}");
    }
}

#[test]
fn with_auth_on_an_observer_reads_fleet_topics_and_service_states_and_nothing_else() {
    let o = Role::Observer;
    for filter in [
        "fleet/#",
        "fleet/+",
        "fleet/events",
        "fleet/sli",
        "fleet/alerts",
        "vehicles/+/service",
        "vehicles/v1/service",
    ] {
        assert_eq!(check_subscribe_as(o, "ops", filter), Ok(()), "{filter}");
    }
    for (filter, reason) in [
        ("#", SubscribeDenied::TooBroad),
        ("vehicles/#", SubscribeDenied::TooBroad),
        ("vehicles/+/command", SubscribeDenied::TooBroad),
        ("vehicles/v1/command", SubscribeDenied::NotAVehicle),
        ("vehicles/ops/command", SubscribeDenied::NotAVehicle),
        ("vehicles/+/heartbeat", SubscribeDenied::Uplink),
        ("vehicles/v1/error", SubscribeDenied::Uplink),
        ("$share/g/vehicles/v1/command", SubscribeDenied::NotAVehicle),
    ] {
        assert_eq!(
            check_subscribe_as(o, "ops", filter),
            Err(reason),
            "{filter}"
        );
    }
}

#[test]
fn with_auth_on_an_observer_may_not_publish_even_on_its_own_named_topics() {
    for topic in [
        "vehicles/ops/heartbeat",
        "vehicles/v1/heartbeat",
        "vehicles/v1/error",
        "vehicles/v1/ack",
    ] {
        assert_eq!(
            check_publish_as(Role::Observer, "ops", topic, 2, MAX),
            Err(PublishDenied::ReadOnly),
            "{topic}"
        );
    }
    assert_eq!(
        check_publish_as(Role::Observer, "ops", "fleet/sli", 2, MAX),
        Err(PublishDenied::BrokerOnly)
    );
}

#[test]
fn with_auth_on_a_vehicle_publishes_exactly_as_without() {
    for topic in [
        "vehicles/v1/heartbeat",
        "vehicles/v2/heartbeat",
        "vehicles/v1/command",
        "fleet/sli",
        "vehicles/v1/status",
        "vehicles/+/heartbeat",
    ] {
        assert_eq!(
            check_publish_as(Role::Vehicle, "v1", topic, 2, MAX),
            check_publish("v1", topic, 2, MAX),
            "{topic}"
        );
    }
}

fn layout(prefix: &str, liveness: &[&str]) -> Topics {
    let v = |kind: &str| {
        crate::contract::Template::parse(
            &format!("{prefix}/{{id}}/{kind}"),
            crate::contract::TemplateKind::Vehicle,
        )
        .expect("template")
    };
    Topics::new(
        [v("hb"), v("err"), v("ack"), v("cmd"), v("state")],
        ["ops/events".into(), "ops/sli".into(), "ops/alerts".into()],
        liveness
            .iter()
            .map(|l| {
                crate::contract::Template::parse(l, crate::contract::TemplateKind::Liveness)
                    .expect("liveness")
            })
            .collect(),
    )
}

fn rule(filter: &str, access: Access, who: Who) -> Rule {
    Rule {
        name: filter.to_owned(),
        filter: filter.to_owned(),
        access,
        who,
    }
}

const BACKEND: RoleId = RoleId(0);

fn fleet_acl() -> Acl {
    Acl::new(
        layout("scooters", &["scooters/{id}/telemetry/#"]),
        vec![
            rule("vehicles/+/lock", Access::Write, Who::Role(BACKEND)),
            rule("vehicles/%c/lock", Access::Read, Who::Vehicles),
            rule("vehicles/%c/lock/result", Access::Write, Who::Vehicles),
            rule("vehicles/+/lock/result", Access::Read, Who::Role(BACKEND)),
            rule("scooters/+/telemetry/#", Access::Read, Who::Observers),
        ],
    )
}

fn vehicle(id: &str) -> Client<'_> {
    Client {
        role: Role::Vehicle,
        id,
        username: Some(id),
    }
}

const BACKEND_USER: Client<'static> = Client {
    role: Role::User(BACKEND),
    id: "backend:1",
    username: Some("backend"),
};

#[test]
fn a_custom_layout_moves_every_contract_rule_with_it() {
    let acl = fleet_acl();
    let v1 = vehicle("s1");
    assert_eq!(
        acl.publish(&v1, "scooters/s1/hb"),
        Ok(Allowed::Uplink(UplinkKind::Heartbeat))
    );
    assert_eq!(
        acl.publish(&v1, "scooters/s2/hb"),
        Err(PublishDenied::OtherVehicle)
    );
    assert_eq!(
        acl.publish(&v1, "scooters/s1/cmd"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(acl.publish(&v1, "ops/sli"), Err(PublishDenied::BrokerOnly));
    // Contract v1's names mean nothing in this layout.
    assert_eq!(
        acl.publish(&v1, "vehicles/s1/heartbeat"),
        Err(PublishDenied::UnknownTopic)
    );
    assert_eq!(acl.subscribe(&v1, "scooters/s1/cmd"), Ok(Granted::Contract));
    assert_eq!(
        acl.subscribe(&v1, "scooters/s2/cmd"),
        Err(SubscribeDenied::OtherVehicle)
    );
    assert_eq!(
        acl.subscribe(&v1, "scooters/+/hb"),
        Err(SubscribeDenied::Uplink)
    );
    assert_eq!(acl.subscribe(&v1, "#"), Err(SubscribeDenied::TooBroad));
    assert_eq!(acl.subscribe(&BACKEND_USER, "ops/#"), Ok(Granted::Contract));
    assert_eq!(
        acl.subscribe(&v1, "ops/#"),
        Err(SubscribeDenied::ObserversOnly)
    );
}

#[test]
fn a_vehicles_liveness_topics_are_its_own_and_readable_through_an_entry() {
    let acl = fleet_acl();
    assert_eq!(
        acl.publish(&vehicle("s1"), "scooters/s1/telemetry/gps"),
        Ok(Allowed::Liveness)
    );
    assert_eq!(
        acl.publish(&vehicle("s1"), "scooters/s2/telemetry/gps"),
        Err(PublishDenied::OtherVehicle)
    );
    assert_eq!(
        acl.subscribe(&BACKEND_USER, "scooters/+/telemetry/#"),
        Ok(Granted::PassThrough(4))
    );
    assert_eq!(
        acl.subscribe(&vehicle("s1"), "scooters/s2/telemetry/#"),
        Err(SubscribeDenied::UnknownTopic)
    );
}

#[test]
fn a_backend_locks_any_vehicle_and_each_vehicle_reads_only_its_own_lock() {
    let acl = fleet_acl();
    assert_eq!(
        acl.publish(&BACKEND_USER, "vehicles/s7/lock"),
        Ok(Allowed::PassThrough(0))
    );
    assert_eq!(
        acl.publish(&vehicle("s7"), "vehicles/s7/lock"),
        Err(PublishDenied::UnknownTopic),
        "a vehicle may not command itself"
    );
    assert_eq!(
        acl.subscribe(&vehicle("s7"), "vehicles/s7/lock"),
        Ok(Granted::PassThrough(1))
    );
    assert_eq!(
        acl.subscribe(&vehicle("s7"), "vehicles/s8/lock"),
        Err(SubscribeDenied::UnknownTopic)
    );
    assert_eq!(
        acl.subscribe(&vehicle("s7"), "vehicles/+/lock"),
        Err(SubscribeDenied::UnknownTopic)
    );
    assert_eq!(
        acl.publish(&vehicle("s7"), "vehicles/s7/lock/result"),
        Ok(Allowed::PassThrough(2))
    );
    assert_eq!(
        acl.publish(&vehicle("s7"), "vehicles/s8/lock/result"),
        Err(PublishDenied::UnknownTopic)
    );
    assert_eq!(
        acl.subscribe(&BACKEND_USER, "vehicles/+/lock/result"),
        Ok(Granted::PassThrough(3))
    );
    assert_eq!(
        acl.subscribe(&BACKEND_USER, "vehicles/#"),
        Err(SubscribeDenied::UnknownTopic),
        "no entry covers all of it"
    );
}

#[test]
fn no_entry_loosens_a_contract_topic() {
    let acl = Acl::new(
        Topics::default(),
        vec![rule("#", Access::ReadWrite, Who::Anyone)],
    );
    let v1 = vehicle("v1");
    assert_eq!(
        acl.publish(&v1, "vehicles/v2/heartbeat"),
        Err(PublishDenied::OtherVehicle)
    );
    assert_eq!(
        acl.publish(&v1, "vehicles/v1/command"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(
        acl.publish(&v1, "fleet/anything"),
        Err(PublishDenied::BrokerOnly)
    );
    assert_eq!(
        acl.subscribe(&v1, "vehicles/v2/command"),
        Err(SubscribeDenied::OtherVehicle)
    );
    // A wide filter the entry covers is allowed, and what it must not read is held back
    // at delivery.
    assert_eq!(acl.subscribe(&v1, "#"), Ok(Granted::PassThrough(0)));
    assert!(!acl.may_receive(&v1, "vehicles/v2/heartbeat"));
    assert!(!acl.may_receive(&v1, "vehicles/v1/heartbeat"));
    assert!(!acl.may_receive(&v1, "vehicles/v2/command"));
    assert!(acl.may_receive(&v1, "vehicles/v1/command"));
    assert!(acl.may_receive(&v1, "vehicles/v1/service"));
    assert!(!acl.may_receive(&v1, "vehicles/v2/service"));
    assert!(!acl.may_receive(&v1, "fleet/sli"));
    assert!(acl.may_receive(&BACKEND_USER, "fleet/sli"));
    assert!(!acl.may_receive(&BACKEND_USER, "vehicles/v1/command"));
    // The fleet's own topics are open, as the entry says.
    assert_eq!(acl.publish(&v1, "TopicA/B"), Ok(Allowed::PassThrough(0)));
    assert_eq!(acl.subscribe(&v1, "TopicA/#"), Ok(Granted::PassThrough(0)));
    assert!(acl.may_receive(&v1, "TopicA/B"));
}

#[test]
fn a_deny_entry_refuses_what_others_allow() {
    let acl = Acl::new(
        Topics::default(),
        vec![
            rule("test/nosubscribe", Access::Deny, Who::Anyone),
            rule("#", Access::ReadWrite, Who::Anyone),
        ],
    );
    let c = vehicle("v1");
    assert_eq!(
        acl.subscribe(&c, "test/nosubscribe"),
        Err(SubscribeDenied::UnknownTopic)
    );
    assert_eq!(
        acl.publish(&c, "test/nosubscribe"),
        Err(PublishDenied::UnknownTopic)
    );
    assert_eq!(acl.subscribe(&c, "test/#"), Ok(Granted::PassThrough(1)));
    assert!(!acl.may_receive(&c, "test/nosubscribe"));
    assert!(acl.may_receive(&c, "test/other"));
}
