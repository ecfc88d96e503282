//! Helpers shared by the MQTT front's integration tests: a rumqttc client whose event loop
//! runs in a task, and waiting for the packet a test expects.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound on any single wait (never a sleep).
pub const WAIT: Duration = Duration::from_secs(10);

/// A client; incoming packets (or the connection error that ended it) come out of
/// `packets`.
pub struct Client {
    pub mqtt: AsyncClient,
    pub packets: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

/// Connects with `opts` and runs the event loop in a task.
pub fn spawn_client(opts: rumqttc::MqttOptions) -> Client {
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, packets) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if tx.send(Ok(packet)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    Client { mqtt, packets }
}

impl Client {
    /// The next incoming packet for which `pick` returns something, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let wait = async {
            loop {
                match self.packets.recv().await {
                    Some(Ok(packet)) => {
                        if let Some(found) = pick(&packet) {
                            return found;
                        }
                    }
                    Some(Err(e)) => panic!("connection ended while waiting for {what}: {e}"),
                    None => panic!("event loop gone while waiting for {what}"),
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }
}
