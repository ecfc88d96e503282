//! A simulated vehicle speaking the MQTT contract v1 over a real MQTT connection: it
//! subscribes to its command topic, applies and acknowledges commands, and sends
//! heartbeats (reporting the state it applies) and error reports on request; with
//! journeys on, it also answers lock requests ([`journey`]).
//!
//! [`fleet`] runs thousands of them with failure injection ([`scenario`]); [`backend`]
//! sends them lock requests and measures the answers; [`bench`] drives a broker with such
//! a fleet and prints measurements; [`standin`] is the minimal "rules engine" that stands
//! beside a plain broker (Mosquitto) for the baseline.

pub mod backend;
pub mod bench;
pub mod fleet;
pub mod journey;
pub mod scenario;
pub mod standin;
pub mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use fleet_contract::{Topics, UplinkKind};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, SubscribeFilter};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use journey::{JourneyOptions, UnlockPolicy};

/// A vehicle's side of journeys: where requests arrive and how they are answered.
struct Answering {
    request_topic: String,
    delay: Duration,
    policy: UnlockPolicy,
    queue: journey::DueQueue<String>,
}

/// Commands buffered per vehicle before the oldest is dropped by the reader.
const COMMAND_BUFFER: usize = 64;
/// Lock answers waiting for their delay per vehicle; beyond it a request goes unanswered.
const ANSWER_QUEUE: usize = 64;

/// Why a simulated vehicle failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The connection or subscription did not complete.
    #[error("vehicle {0}: {1}")]
    Connect(String, String),
    /// A publish could not be queued.
    #[error("vehicle {0}: publish failed: {1}")]
    Publish(String, rumqttc::ClientError),
    /// Not an uplink of the contract.
    #[error("vehicle {0}: {1:?} is not an uplink (heartbeat, error, ack)")]
    UnknownUplink(String, String),
}

/// A command as the vehicle received it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedCommand {
    /// Command id (to acknowledge).
    pub id: String,
    /// `service_out` or `service_in`.
    pub command: String,
    /// Reasons as JSON.
    #[serde(default)]
    pub reasons: Vec<serde_json::Value>,
    /// When the broker issued it.
    pub issued_at: u64,
}

/// One simulated vehicle.
pub struct Vehicle {
    id: String,
    topics: Topics,
    client: AsyncClient,
    commands: mpsc::Receiver<ReceivedCommand>,
    applied: tokio::sync::watch::Receiver<&'static str>,
    reader: JoinHandle<()>,
    answerer: Option<JoinHandle<()>>,
}

/// How a simulated vehicle behaves.
#[derive(Debug, Clone)]
pub struct VehicleOptions {
    /// Apply and acknowledge commands as they arrive.
    pub auto_ack: bool,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// The broker's topic layout.
    pub topics: Topics,
    /// MQTT username and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// Answer lock requests (off: no subscription beyond the command topic).
    pub journeys: Option<JourneyOptions>,
}

impl Default for VehicleOptions {
    fn default() -> Self {
        VehicleOptions {
            auto_ack: true,
            keep_alive: Duration::from_secs(30),
            topics: Topics::default(),
            credentials: None,
            journeys: None,
        }
    }
}

impl Vehicle {
    /// Connects as `id` (client id = vehicle id) and subscribes to its command topic (and
    /// its lock request topic with journeys on).
    pub async fn connect(
        broker: SocketAddr,
        id: &str,
        opts: VehicleOptions,
    ) -> Result<Vehicle, SimError> {
        let mut mqtt = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        mqtt.set_keep_alive(opts.keep_alive);
        mqtt.set_clean_session(true);
        if let Some((user, password)) = &opts.credentials {
            mqtt.set_credentials(user.clone(), password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let command_topic = opts.topics.command(id);
        let ack_topic = opts.topics.uplink(id, UplinkKind::Ack);
        let topics = opts.topics.clone();
        let mut filters = vec![SubscribeFilter::new(
            command_topic.clone(),
            QoS::AtLeastOnce,
        )];
        if let Some(j) = &opts.journeys {
            filters.push(SubscribeFilter::new(j.topics.request(id), QoS::AtLeastOnce));
        }
        // One filter: the same SUBSCRIBE packet as `subscribe`.
        client
            .subscribe_many(filters)
            .await
            .map_err(|e| SimError::Connect(id.to_owned(), e.to_string()))?;

        // Drive the connection until the subscription is acknowledged.
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = !ack.return_codes.is_empty()
                            && ack
                                .return_codes
                                .iter()
                                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                        return if granted {
                            Ok(())
                        } else {
                            Err(format!("subscription refused: {:?}", ack.return_codes))
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| SimError::Connect(id.to_owned(), "no SUBACK within 10 s".into()))?;
        ready.map_err(|e| SimError::Connect(id.to_owned(), e))?;

        let (tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let (applied_tx, applied) = tokio::sync::watch::channel("in_service");
        let ack_client = client.clone();
        // Answers wait for their delay in a queue of their own, so the reader keeps reading.
        let (answers, answerer) = match &opts.journeys {
            Some(j) => {
                let (tx, rx) = mpsc::channel::<(tokio::time::Instant, String)>(ANSWER_QUEUE);
                let answer_client = client.clone();
                let result_topic = j.topics.response(id);
                let task = tokio::spawn(journey::deliver_when_due(rx, move |answer: String| {
                    let _ = answer_client.try_publish(
                        result_topic.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        answer,
                    );
                }));
                let answering = Answering {
                    request_topic: j.topics.request(id),
                    delay: j.answer_delay,
                    policy: j.policy,
                    queue: tx,
                };
                (Some(answering), Some(task))
            }
            None => (None, None),
        };
        let reader = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == command_topic => {
                        let Ok(cmd) = serde_json::from_slice::<ReceivedCommand>(&p.payload) else {
                            continue;
                        };
                        if opts.auto_ack {
                            let state = if cmd.command == "service_out" {
                                "out_of_service"
                            } else {
                                "in_service"
                            };
                            let _ = applied_tx.send(state);
                            let ack = json!({"id": cmd.id, "ok": true}).to_string();
                            let _ = ack_client
                                .publish(&ack_topic, QoS::AtLeastOnce, false, ack)
                                .await;
                        }
                        // A test that stopped reading commands must not stall the link.
                        let _ = tx.try_send(cmd);
                    }
                    Ok(Event::Incoming(Packet::Publish(p)))
                        if answers.as_ref().is_some_and(|a| p.topic == a.request_topic) =>
                    {
                        let Some(a) = &answers else {
                            continue;
                        };
                        if let Ok(Some(answer)) = journey::answer_to(&p.payload, a.policy) {
                            let due = tokio::time::Instant::now() + a.delay;
                            let _ = a.queue.try_send((due, answer));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Vehicle {
            id: id.to_owned(),
            topics,
            client,
            commands,
            applied,
            reader,
            answerer,
        })
    }

    /// The vehicle id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state the vehicle applies (from the commands it received).
    pub fn applied_state(&self) -> &'static str {
        *self.applied.borrow()
    }

    /// Sends a heartbeat reporting the applied state.
    pub async fn heartbeat(&self) -> Result<(), SimError> {
        let payload = json!({"battery": 80, "service": self.applied_state()});
        self.publish("heartbeat", payload.to_string().into_bytes())
            .await
    }

    /// Sends an error report with one code.
    pub async fn error(&self, code: &str, count: u32) -> Result<(), SimError> {
        let payload = json!({"errors": [{"code": code, "count": count}]});
        self.publish("error", payload.to_string().into_bytes())
            .await
    }

    /// Publishes raw bytes on the vehicle's uplink `kind` (`heartbeat`, `error`, `ack`).
    pub async fn publish(&self, kind: &str, payload: Vec<u8>) -> Result<(), SimError> {
        let Some(kind) = UplinkKind::ALL.into_iter().find(|k| k.name() == kind) else {
            return Err(SimError::UnknownUplink(self.id.clone(), kind.to_owned()));
        };
        self.publish_to(&self.topics.uplink(&self.id, kind), payload)
            .await
    }

    /// Publishes raw bytes on any topic (for misbehaving-vehicle scenarios).
    pub async fn publish_to(&self, topic: &str, payload: Vec<u8>) -> Result<(), SimError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| SimError::Publish(self.id.clone(), e))
    }

    /// The next command received, if one arrives within `wait`.
    pub async fn next_command(&mut self, wait: Duration) -> Option<ReceivedCommand> {
        tokio::time::timeout(wait, self.commands.recv())
            .await
            .ok()
            .flatten()
    }

    /// Disconnects.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.reader.abort();
        if let Some(a) = &self.answerer {
            a.abort();
        }
    }
}

/// Wall-clock time in unix milliseconds, for logged instants (measurements use the
/// monotonic clock).
pub fn unix_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // a logged instant is wall-clock time by definition
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Drop for Vehicle {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(a) = &self.answerer {
            a.abort();
        }
    }
}
