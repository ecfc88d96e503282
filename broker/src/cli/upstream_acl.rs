//! `fleet-broker acl --for TARGET`: the upstream broker's configuration that enforces the
//! contract in attach mode. There only the upstream can stop a vehicle speaking for
//! another: the broker takes the vehicle id from the topic, so each vehicle's username must
//! be its id and the upstream must let it publish on its own uplink topics only.

use clap::ValueEnum;

use crate::contract::{Template, Topics};

/// The upstream brokers a configuration is printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    /// Mosquitto: an `acl_file` with `pattern` rules on `%u` (and the mosquitto.conf lines).
    Mosquitto,
    /// EMQX 5: `acl.conf` for the file authorizer, with `${username}`.
    Emqx,
    /// HiveMQ: the File RBAC extension's `credentials.xml` roles, with `${{username}}`.
    Hivemq,
    /// NATS (2.9+ MQTT): `authorization` permissions on subjects (no per-user templates).
    Nats,
    /// AWS IoT Core: policies with `${iot:Connection.Thing.ThingName}`.
    AwsIot,
}

/// Who the rules are written for.
#[derive(Debug, Clone)]
pub struct Principals {
    /// The broker's own username upstream.
    pub broker: String,
    /// Users that read the service state and the fleet topics (ops tools, backends).
    pub observers: Vec<String>,
}

/// What each party may do, as MQTT filters with `{id}` for the vehicle's own level.
struct Rules {
    /// A vehicle publishes on these (its own uplinks and liveness topics).
    vehicle_publish: Vec<String>,
    /// A vehicle subscribes to these (its command and service state).
    vehicle_subscribe: Vec<String>,
    /// The broker subscribes to these.
    broker_subscribe: Vec<String>,
    /// The broker publishes on these.
    broker_publish: Vec<String>,
    /// Observers subscribe to these.
    observer_subscribe: Vec<String>,
}

fn rules(topics: &Topics) -> Rules {
    let own = |t: &Template| t.with_id("{id}");
    let uplinks: Vec<&Template> = topics
        .vehicle_templates()
        .into_iter()
        .filter(|(_, kind)| matches!(kind, crate::contract::VehicleTopic::Uplink(_)))
        .map(|(t, _)| t)
        .chain(topics.liveness())
        .collect();
    let fleet: Vec<String> = topics
        .fleet_topics()
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    let downlinks = [topics.command_template(), topics.service_template()];
    Rules {
        vehicle_publish: uplinks.iter().map(|t| own(t)).collect(),
        vehicle_subscribe: downlinks.iter().map(|t| own(t)).collect(),
        broker_subscribe: topics.uplink_filters(),
        broker_publish: downlinks
            .iter()
            .map(|t| t.any_vehicle())
            .chain(fleet.iter().cloned())
            .collect(),
        observer_subscribe: std::iter::once(topics.service_template().any_vehicle())
            .chain(fleet)
            .collect(),
    }
}

/// The configuration text for `target`.
pub fn render(target: Upstream, topics: &Topics, who: &Principals) -> String {
    let r = rules(topics);
    match target {
        Upstream::Mosquitto => mosquitto(&r, who),
        Upstream::Emqx => emqx(&r, who),
        Upstream::Hivemq => hivemq(&r, who),
        Upstream::Nats => nats(&r, who),
        Upstream::AwsIot => aws_iot(&r, who),
    }
}

fn sub(filters: &[String], id: &str) -> Vec<String> {
    filters.iter().map(|f| f.replace("{id}", id)).collect()
}

fn mosquitto(r: &Rules, who: &Principals) -> String {
    let mut out = String::from(
        "# Mosquitto ACL for fleet-broker in attach mode (fleet-broker acl --for mosquitto).\n\
         # mosquitto.conf needs, for the vehicles' listener:\n\
         #   allow_anonymous false\n\
         #   password_file /etc/mosquitto/passwd   (each vehicle's username is its vehicle id)\n\
         #   acl_file /etc/mosquitto/fleet.acl     (this file)\n\
         #   use_username_as_clientid true         (else a device may claim any client id)\n\
         #   persistence true                      (keeps retained state across restarts)\n\
         # %u is the username: a vehicle may only publish its own uplinks.\n\n",
    );
    for f in sub(&r.vehicle_publish, "%u") {
        out.push_str(&format!("pattern write {f}\n"));
    }
    for f in sub(&r.vehicle_subscribe, "%u") {
        out.push_str(&format!("pattern read {f}\n"));
    }
    out.push_str(&format!("\n# The broker itself.\nuser {}\n", who.broker));
    for f in &r.broker_subscribe {
        out.push_str(&format!("topic read {f}\n"));
    }
    for f in &r.broker_publish {
        out.push_str(&format!("topic write {f}\n"));
    }
    for observer in &who.observers {
        out.push_str(&format!(
            "\n# An observer (ops tools, backends).\nuser {observer}\n"
        ));
        for f in &r.observer_subscribe {
            out.push_str(&format!("topic read {f}\n"));
        }
    }
    out
}

fn quoted(filters: &[String]) -> String {
    filters
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn emqx(r: &Rules, who: &Principals) -> String {
    let mut out = String::from(
        "%% EMQX 5 acl.conf for fleet-broker in attach mode (fleet-broker acl --for emqx).\n\
         %% Authentication: each vehicle's username is its vehicle id. ${username} keeps a\n\
         %% vehicle on its own topics; the file authorizer must be the only source (or the\n\
         %% first, with no_match = deny).\n",
    );
    let b = &who.broker;
    out.push_str(&format!(
        "{{allow, {{user, {b:?}}}, subscribe, [{}]}}.\n",
        quoted(&r.broker_subscribe)
    ));
    out.push_str(&format!(
        "{{allow, {{user, {b:?}}}, publish, [{}]}}.\n",
        quoted(&r.broker_publish)
    ));
    for observer in &who.observers {
        out.push_str(&format!(
            "{{allow, {{user, {observer:?}}}, subscribe, [{}]}}.\n",
            quoted(&r.observer_subscribe)
        ));
    }
    out.push_str(&format!(
        "{{allow, all, publish, [{}]}}.\n",
        quoted(&sub(&r.vehicle_publish, "${username}"))
    ));
    out.push_str(&format!(
        "{{allow, all, subscribe, [{}]}}.\n",
        quoted(&sub(&r.vehicle_subscribe, "${username}"))
    ));
    out.push_str("{deny, all}.\n");
    out
}

fn xml_permissions(out: &mut String, filters: &[String], activity: &str) {
    for f in filters {
        out.push_str(&format!(
            "        <permission><topic>{f}</topic><activity>{activity}</activity></permission>\n"
        ));
    }
}

fn hivemq(r: &Rules, who: &Principals) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
         <!-- HiveMQ File RBAC credentials.xml for fleet-broker in attach mode\n\
              (printed by fleet-broker acl, target hivemq). Add one <user> per vehicle (name = vehicle id)\n\
              with the role \"vehicle\"; ${{username}} keeps it on its own topics. -->\n\
         <file-rbac>\n  <users>\n",
    );
    out.push_str(&format!(
        "    <user><name>{}</name><password>CHANGE-ME</password><roles><id>fleet-broker</id></roles></user>\n",
        who.broker
    ));
    for observer in &who.observers {
        out.push_str(&format!(
            "    <user><name>{observer}</name><password>CHANGE-ME</password><roles><id>observer</id></roles></user>\n"
        ));
    }
    out.push_str("  </users>\n  <roles>\n");
    out.push_str("    <role>\n      <id>vehicle</id>\n      <permissions>\n");
    xml_permissions(
        &mut out,
        &sub(&r.vehicle_publish, "${{username}}"),
        "PUBLISH",
    );
    xml_permissions(
        &mut out,
        &sub(&r.vehicle_subscribe, "${{username}}"),
        "SUBSCRIBE",
    );
    out.push_str("      </permissions>\n    </role>\n");
    out.push_str("    <role>\n      <id>fleet-broker</id>\n      <permissions>\n");
    xml_permissions(&mut out, &r.broker_subscribe, "SUBSCRIBE");
    xml_permissions(&mut out, &r.broker_publish, "PUBLISH");
    out.push_str("      </permissions>\n    </role>\n");
    out.push_str("    <role>\n      <id>observer</id>\n      <permissions>\n");
    xml_permissions(&mut out, &r.observer_subscribe, "SUBSCRIBE");
    out.push_str("      </permissions>\n    </role>\n  </roles>\n</file-rbac>\n");
    out
}

/// An MQTT filter as a NATS subject (`/` -> `.`, `+` -> `*`, `#` -> `>`).
fn nats_subject(filter: &str) -> String {
    filter
        .split('/')
        .map(|level| match level {
            "+" => "*",
            "#" => ">",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn nats_list(filters: &[String]) -> String {
    filters
        .iter()
        .map(|f| format!("{:?}", nats_subject(f)))
        .chain(["\"$MQTT.>\"".to_owned()])
        .collect::<Vec<_>>()
        .join(", ")
}

fn nats(r: &Rules, who: &Principals) -> String {
    let mut out = String::from(
        "# nats-server configuration for fleet-broker in attach mode (fleet-broker acl --for nats).\n\
         # NATS maps MQTT topics to subjects (\"/\" -> \".\"). Its static permissions have no\n\
         # per-user template: a vehicle's own topics need one user entry per vehicle (VEHICLE_ID\n\
         # below), or decentralized JWT auth with {{name()}} templates. MQTT needs JetStream and\n\
         # a server_name.\n\
         server_name: fleet\n\
         jetstream { store_dir: \"/var/lib/nats\" }\n\
         mqtt { port: 1883 }\n\
         authorization {\n  users = [\n",
    );
    out.push_str(&format!(
        "    {{ user: {:?}, password: $FLEET_UPSTREAM_PASSWORD, permissions: {{ subscribe: [{}], publish: [{}] }} }}\n",
        who.broker,
        nats_list(&r.broker_subscribe),
        nats_list(&r.broker_publish)
    ));
    for observer in &who.observers {
        out.push_str(&format!(
            "    {{ user: {observer:?}, password: $OBSERVER_PASSWORD, permissions: {{ subscribe: [{}], publish: [\"$MQTT.>\"] }} }}\n",
            nats_list(&r.observer_subscribe)
        ));
    }
    out.push_str(&format!(
        "    {{ user: \"VEHICLE_ID\", password: $VEHICLE_PASSWORD, permissions: {{ publish: [{}], subscribe: [{}] }} }}\n",
        nats_list(&sub(&r.vehicle_publish, "VEHICLE_ID")),
        nats_list(&sub(&r.vehicle_subscribe, "VEHICLE_ID"))
    ));
    out.push_str("  ]\n}\n");
    out
}

fn aws_iot(r: &Rules, who: &Principals) -> String {
    const ARN: &str = "arn:aws:iot:REGION:ACCOUNT";
    const THING: &str = "${iot:Connection.Thing.ThingName}";
    let resources = |kind: &str, filters: &[String]| -> serde_json::Value {
        filters
            .iter()
            .map(|f| {
                // IoT policies match topic filters literally: `+`/`#` become `*`.
                let f = f.replace(['+', '#'], "*");
                serde_json::Value::String(format!("{ARN}:{kind}/{f}"))
            })
            .collect()
    };
    let vehicle_pub = sub(&r.vehicle_publish, THING);
    let vehicle_sub = sub(&r.vehicle_subscribe, THING);
    let policy = |connect: String, publish: &[String], subscribe: &[String]| -> serde_json::Value {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": connect},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": resources("topic", publish)},
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": resources("topicfilter", subscribe)},
                {"Effect": "Allow", "Action": "iot:Receive", "Resource": resources("topic", subscribe)},
            ]
        })
    };
    let doc = serde_json::json!({
        "fleet-vehicle": policy(format!("{ARN}:client/{THING}"), &vehicle_pub, &vehicle_sub),
        "fleet-broker": policy(format!("{ARN}:client/{}", who.broker), &r.broker_publish, &r.broker_subscribe),
        "fleet-observer": policy(format!("{ARN}:client/*"), &[], &r.observer_subscribe),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Principals {
        Principals {
            broker: "fleet-broker".into(),
            observers: vec!["observer".into()],
        }
    }

    #[test]
    fn mosquitto_rules_keep_a_vehicle_on_its_own_uplinks() {
        let text = render(Upstream::Mosquitto, &Topics::default(), &who());
        for line in [
            "pattern write vehicles/%u/heartbeat",
            "pattern write vehicles/%u/error",
            "pattern write vehicles/%u/ack",
            "pattern read vehicles/%u/command",
            "pattern read vehicles/%u/service",
            "user fleet-broker",
            "topic read vehicles/+/heartbeat",
            "topic write vehicles/+/command",
            "topic write fleet/sli",
            "user observer",
            "topic read vehicles/+/service",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("%c"), "%c trusts the device's client id");
        assert!(text.contains("use_username_as_clientid true"));
    }

    #[test]
    fn every_target_names_the_vehicle_by_its_authenticated_identity() {
        for (target, placeholder) in [
            (Upstream::Emqx, "vehicles/${username}/heartbeat"),
            (Upstream::Hivemq, "vehicles/${{username}}/heartbeat"),
            (
                Upstream::AwsIot,
                "vehicles/${iot:Connection.Thing.ThingName}/heartbeat",
            ),
            (Upstream::Nats, "vehicles.VEHICLE_ID.heartbeat"),
        ] {
            let text = render(target, &Topics::default(), &who());
            assert!(text.contains(placeholder), "{target:?}:\n{text}");
        }
        let aws: serde_json::Value =
            serde_json::from_str(&render(Upstream::AwsIot, &Topics::default(), &who()))
                .expect("valid JSON");
        assert_eq!(aws["fleet-broker"]["Statement"][0]["Action"], "iot:Connect");
    }

    #[test]
    fn mqtt_filters_become_nats_subjects() {
        assert_eq!(nats_subject("vehicles/+/heartbeat"), "vehicles.*.heartbeat");
        assert_eq!(
            nats_subject("scooters/+/telemetry/#"),
            "scooters.*.telemetry.>"
        );
    }
}
