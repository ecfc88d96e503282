//! The ops API of a standby engine (active/standby pair, `[ha]`), on the same `[http]
//! listen` address the engine serves from when it leads. `/healthz` answers; `/readyz` is
//! 503 and says who leads (a load balancer sends traffic to the leader only); `/metrics`
//! has the lease and watch families. Reads (GET) are answered by the leader, fetched from
//! the address it published in the lease; writes are refused with that address, since
//! only the leader may act.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::ApiError;
use crate::ha::{LeaseRow, Role, Status, WatchCounters};
use crate::metrics::{Kind, TextWriter};

/// Set on a read the standby forwards: a forwarded request is never forwarded again (a
/// lease naming this engine's own address must not loop).
const FORWARDED: &str = "x-fleet-forwarded-by";
/// How long the leader has to answer a forwarded read.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the standby's handlers share.
#[derive(Debug)]
pub struct StandbyContext {
    /// Who leads.
    pub status: Arc<Status>,
    /// The uplink watch's counters (attach mode).
    pub watch: Option<Arc<WatchCounters>>,
    client: Client<HttpConnector, Body>,
}

impl StandbyContext {
    /// The context for `status` and the watch's counters.
    pub fn new(status: Arc<Status>, watch: Option<Arc<WatchCounters>>) -> StandbyContext {
        StandbyContext {
            status,
            watch,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn leader(&self) -> Option<LeaseRow> {
        match self.status.role() {
            Role::Standby { leader } => leader,
            Role::Leader { .. } => None,
        }
    }
}

/// The standby's router.
pub fn router(ctx: Arc<StandbyContext>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(forward_or_refuse)
        .with_state(ctx)
}

async fn healthz(State(ctx): State<Arc<StandbyContext>>) -> Json<Value> {
    Json(json!({ "status": "ok", "role": "standby", "node": ctx.status.node }))
}

fn leader_json(leader: &Option<LeaseRow>) -> Value {
    match leader {
        Some(l) => json!({ "node": l.holder, "address": l.address, "epoch": l.epoch }),
        None => Value::Null,
    }
}

fn who_leads(leader: &Option<LeaseRow>) -> String {
    match leader {
        Some(l) => format!("{} leads at {} (epoch {})", l.holder, l.address, l.epoch),
        None => "no live leader is known (the lease is free or PostgreSQL unreachable)".into(),
    }
}

async fn readyz(State(ctx): State<Arc<StandbyContext>>) -> ApiError {
    let leader = ctx.leader();
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "standby",
        format!(
            "{} stands by: {}; it takes over when the lease runs out",
            ctx.status.node,
            who_leads(&leader)
        ),
    )
    .with("role", Value::from("standby"))
    .with("node", Value::from(ctx.status.node.as_str()))
    .with("leader", leader_json(&leader))
}

async fn metrics(State(ctx): State<Arc<StandbyContext>>) -> Response {
    let mut w = TextWriter::new();
    ctx.status.render(&mut w);
    if let Some(watch) = &ctx.watch {
        w.single(
            "fleet_standby_watching",
            Kind::Gauge,
            "1 while the standby's watch on the uplinks is connected without a break.",
            watch.watching.load(Ordering::Relaxed) as f64,
        );
        w.single(
            "fleet_standby_heard_total",
            Kind::Counter,
            "Uplinks the standby's watch heard (last-seen times kept warm for a takeover).",
            watch.heard.load(Ordering::Relaxed) as f64,
        );
        w.single(
            "fleet_standby_vehicles",
            Kind::Gauge,
            "Vehicles with a last-seen time in the standby's watch.",
            watch.vehicles.load(Ordering::Relaxed) as f64,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        w.finish(),
    )
        .into_response()
}

/// A read goes to the leader; anything else is refused with its address.
async fn forward_or_refuse(State(ctx): State<Arc<StandbyContext>>, request: Request) -> Response {
    let leader = ctx.leader();
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_leader",
            format!(
                "{} stands by and does not act: {}; send {method} {} there",
                ctx.status.node,
                who_leads(&leader),
                request.uri().path()
            ),
        )
        .with("leader", leader_json(&leader))
        .into_response();
    }
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!(
                "{} stands by and reads are answered by the leader, but {why}; retry in a few seconds",
                ctx.status.node
            ),
        )
        .with("leader", leader_json(&leader))
        .into_response()
    };
    let Some(l) = &leader else {
        return unavailable(who_leads(&leader));
    };
    if request.headers().contains_key(FORWARDED) {
        return unavailable(format!(
            "the leader's address {} led back to a standby",
            l.address
        ));
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let target = match format!("{}{path}", l.address.trim_end_matches('/')).parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") => uri,
        _ => {
            return unavailable(format!(
                "its address {:?} is not an http:// URL this engine can reach",
                l.address
            ))
        }
    };
    let (mut parts, _) = request.into_parts();
    parts.uri = target;
    parts.headers.remove(header::HOST);
    if let Ok(node) = HeaderValue::from_str(&ctx.status.node) {
        parts.headers.insert(FORWARDED, node);
    }
    let forwarded = Request::from_parts(parts, Body::empty());
    match tokio::time::timeout(FORWARD_TIMEOUT, ctx.client.request(forwarded)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            if let Ok(node) = HeaderValue::from_str(&l.holder) {
                parts.headers.insert("x-fleet-answered-by", node);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => unavailable(format!("the leader at {} did not answer: {e}", l.address)),
        Err(_) => unavailable(format!(
            "the leader at {} did not answer within {}s",
            l.address,
            FORWARD_TIMEOUT.as_secs()
        )),
    }
}
