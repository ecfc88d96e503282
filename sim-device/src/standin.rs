//! The rules-engine stand-in for the Mosquitto baseline: one privileged MQTT client that
//! subscribes to every vehicle's heartbeats and acks, decodes each heartbeat, and answers a
//! heartbeat that reports `out_of_service` with a `service_in` command, as the broker's
//! engine does for a vehicle it wants in service. It does no rules work, so the
//! comparison flatters Mosquitto.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Heartbeat<'a> {
    #[serde(default, borrow)]
    service: Option<&'a str>,
}

/// Counts printed as one JSON line every `report_every` on stdout.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StandinCounts {
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Acks received.
    pub acks: u64,
    /// Commands sent.
    pub commands: u64,
    /// Commands not sent because the client's queue was full.
    pub commands_dropped: u64,
    /// Heartbeats that did not decode.
    pub malformed: u64,
    /// Connections made (1 plus reconnects).
    pub connects: u64,
}

/// Runs until the process ends, reconnecting with a fixed short delay.
pub async fn run(broker: SocketAddr, qos1: bool, report_every: Duration) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new("rules-standin", broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    opts.set_inflight(1000);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 100_000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let qos = if qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let mut counts = StandinCounts::default();
    let mut report = tokio::time::interval(report_every);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = report.tick() => {
                let line = serde_json::to_string(&counts)?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    counts.connects += 1;
                    client.try_subscribe("vehicles/+/heartbeat", qos)?;
                    client.try_subscribe("vehicles/+/ack", QoS::AtLeastOnce)?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut parts = p.topic.split('/');
                    let (Some("vehicles"), Some(id), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
                        continue;
                    };
                    if kind == "ack" {
                        counts.acks += 1;
                        continue;
                    }
                    counts.heartbeats += 1;
                    let reported = match serde_json::from_slice::<Heartbeat>(&p.payload) {
                        Ok(hb) => hb.service,
                        Err(_) => {
                            counts.malformed += 1;
                            None
                        }
                    };
                    if reported == Some("out_of_service") {
                        seq += 1;
                        let cmd = json!({
                            "id": format!("standin-{seq}"),
                            "command": "service_in",
                            "reasons": [],
                            "issued_at": crate::unix_ms(),
                        });
                        match client.try_publish(format!("vehicles/{id}/command"), QoS::AtLeastOnce, false, cmd.to_string()) {
                            Ok(()) => counts.commands += 1,
                            Err(_) => counts.commands_dropped += 1,
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stand-in connection failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
