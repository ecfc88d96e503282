//! `GET /metrics`: the Prometheus text exposition, put together per scrape from one engine
//! snapshot and each component's own families.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::openslo::duration_shorthand;
use super::{ApiContext, ApiError};
use crate::engine::{EngineMetrics, EngineSnapshot};
use crate::metrics::{Kind, TextWriter};
use crate::mqtt::upstream::UpstreamStats;
use crate::mqtt::MqttStats;
use crate::slack::SlackMetrics;
use crate::store::StoreMetrics;

/// What one scrape reads.
#[derive(Debug)]
pub struct Scrape<'a> {
    /// Ingest and engine counters.
    pub engine: &'a EngineMetrics,
    /// The engine's state now.
    pub snapshot: &'a EngineSnapshot,
    /// The embedded MQTT front's counters.
    pub mqtt: &'a MqttStats,
    /// The upstream link's counters, in attach mode (then they replace `mqtt`'s).
    pub upstream: Option<&'a UpstreamStats>,
    /// The store's counters.
    pub store: &'a StoreMetrics,
    /// The notifier's counters.
    pub slack: &'a SlackMetrics,
    /// `(queue, queued, capacity)`.
    pub queues: &'a [(&'a str, usize, usize)],
    /// The SLO window as a label value (`"30d"`).
    pub slo_window: &'a str,
    /// Active/standby: the lease's families.
    pub ha: Option<&'a crate::ha::Status>,
}

/// The exposition text.
pub fn render(s: &Scrape<'_>) -> String {
    let mut w = TextWriter::new();
    s.engine.render(&mut w, s.snapshot, s.slo_window);
    match s.upstream {
        Some(upstream) => upstream.render(&mut w),
        None => s.mqtt.render(&mut w),
    }
    queues(&mut w, s.queues);
    s.store.render(&mut w);
    s.slack.render(&mut w);
    if let Some(ha) = s.ha {
        ha.render(&mut w);
    }
    w.family(
        "fleet_build_info",
        Kind::Gauge,
        "Always 1; the version label says which build runs.",
    );
    w.sample(
        "fleet_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    w.finish()
}

/// `GET /metrics`
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Result<Response, ApiError> {
    let snapshot = ctx.engine.snapshot().await?;
    let mqtt = ctx.mqtt.stats();
    let upstream = ctx.mqtt.upstream_stats();
    let queues: Vec<(&str, usize, usize)> = ctx
        .queues
        .iter()
        .map(|q| {
            let (depth, capacity) = q.fill();
            (q.name, depth, capacity)
        })
        .collect();
    let window = duration_shorthand(ctx.slo.window);
    let text = render(&Scrape {
        engine: &ctx.metrics,
        snapshot: &snapshot,
        mqtt: &mqtt,
        upstream: upstream.as_ref(),
        store: &ctx.store_metrics,
        slack: &ctx.slack_metrics,
        queues: &queues,
        slo_window: &window,
        ha: ctx.ha.as_deref(),
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn queues(w: &mut TextWriter, queues: &[(&str, usize, usize)]) {
    w.family(
        "fleet_engine_queue_depth",
        Kind::Gauge,
        "Items waiting in a bounded queue: uplink (MQTT to engine), ops (API to engine), store (engine to store writer), outbound (store writer to MQTT).",
    );
    for (queue, depth, _) in queues {
        w.sample(
            "fleet_engine_queue_depth",
            &[("queue", queue)],
            *depth as f64,
        );
    }
    w.family(
        "fleet_engine_queue_capacity",
        Kind::Gauge,
        "Capacity of each bounded queue.",
    );
    for (queue, _, capacity) in queues {
        w.sample(
            "fleet_engine_queue_capacity",
            &[("queue", queue)],
            *capacity as f64,
        );
    }
}
