//! `GET /metrics`: the Prometheus text exposition, from one engine snapshot and the
//! components' counters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::openslo::duration_shorthand;
use super::{ApiContext, ApiError};
use crate::metrics::exposition::{render, Scrape};

/// `GET /metrics`
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Result<Response, ApiError> {
    let engine = ctx.engine.snapshot().await?;
    let mqtt = ctx.mqtt.stats();
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
        metrics: &ctx.metrics,
        mqtt: &mqtt,
        engine: &engine,
        store: &ctx.store_metrics,
        queues: &queues,
        slo_window: &window,
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
