//! The broker's MQTT side, whichever mode: the embedded broker, or a link to the fleet's
//! own broker (attach mode). The engine's publisher and the ops API use only this.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::watch;

use super::upstream::{Link, Upstream, UpstreamStats};
use super::{MqttError, MqttFront, MqttStats};
use crate::metrics::TextWriter;

/// The embedded broker or the upstream link. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Front {
    /// `[mqtt] mode = "embedded"`.
    Embedded(MqttFront),
    /// `[mqtt] mode = "attach"`.
    Attached(Upstream),
}

impl Front {
    /// Publishes from the broker (see [`MqttFront::publish`]).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos1: bool,
        retain: bool,
    ) -> Result<(), String> {
        match self {
            Front::Embedded(f) => f
                .publish(topic, payload, qos1, retain)
                .await
                .map_err(|e: MqttError| e.to_string()),
            Front::Attached(u) => u.publish(topic, payload, qos1, retain).await,
        }
    }

    /// The embedded listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Front::Embedded(f) => Some(f.local_addr()),
            Front::Attached(_) => None,
        }
    }

    /// Where vehicles connect: the listener, or the upstream URL(s).
    pub fn describe(&self) -> String {
        match self {
            Front::Embedded(f) => f.local_addr().to_string(),
            Front::Attached(u) => u.describe().to_owned(),
        }
    }

    /// The embedded broker's counters (all zero in attach mode).
    pub fn stats(&self) -> MqttStats {
        match self {
            Front::Embedded(f) => f.stats(),
            Front::Attached(_) => MqttStats::default(),
        }
    }

    /// The link's counters, in attach mode.
    pub fn upstream_stats(&self) -> Option<UpstreamStats> {
        match self {
            Front::Embedded(_) => None,
            Front::Attached(u) => Some(u.stats()),
        }
    }

    /// The link's state, in attach mode.
    pub fn link(&self) -> Option<watch::Receiver<Link>> {
        match self {
            Front::Embedded(_) => None,
            Front::Attached(u) => Some(u.link()),
        }
    }

    /// The metric families of whichever side runs.
    pub fn render(&self, w: &mut TextWriter) {
        match self {
            Front::Embedded(f) => f.stats().render(w),
            Front::Attached(u) => u.stats().render(w),
        }
    }

    /// Stops serving or closes the link.
    pub async fn shutdown(self) {
        match self {
            Front::Embedded(f) => f.shutdown().await,
            Front::Attached(u) => u.shutdown().await,
        }
    }
}
