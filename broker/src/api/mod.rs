//! The ops HTTP API (axum): health and readiness, Prometheus metrics, the vehicles with
//! their reasons and history, manual service-in and service-out, the SLO report with its
//! OpenSLO export, and MDS 2.0 views. Reads are open (the listener binds to loopback by
//! default); writes need the bearer token (`http.token` or `FLEET_API_TOKEN`).

mod auth;
mod error;
mod health;
mod history;
mod mds;
mod openslo;
pub mod page;
mod paging;
mod params;
pub mod prometheus;
mod server;
mod slo;
pub mod standby;
mod vehicles;
pub mod yaml;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::engine::EngineHandle;
use crate::engine::EngineMetrics;
use crate::mqtt::Front;
use crate::slack::SlackMetrics;
use crate::store::StoreMetrics;

pub use error::ApiError;
pub use history::History;
pub use openslo::openslo_yaml;
pub use server::{ApiServer, MAX_CONNECTIONS};

/// Largest request body (a service-in with a long note is well under 1 KB).
pub const BODY_LIMIT: usize = 16 * 1024;
/// A request that takes longer is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The ops HTTP API's settings.
#[derive(Clone, PartialEq)]
pub struct ApiSettings {
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// The bearer token for writes; `None` refuses every write.
    pub token: Option<String>,
    /// The SLOs it reports.
    pub slo: SloSettings,
    /// MDS `provider_id`.
    pub mds_provider_id: String,
    /// The SLO page.
    pub page: page::PageSettings,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("slo", &self.slo)
            .field("mds_provider_id", &self.mds_provider_id)
            .field("page", &self.page)
            .finish()
    }
}

/// The SLO settings the API reports and exports.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSettings {
    /// CMC target.
    pub target: f64,
    /// Rolling window.
    pub window: Duration,
    /// Maintenance counts as bad time.
    pub maintenance_counts_as_bad: bool,
    /// Command-ack target.
    pub command_ack_target: f64,
    /// Command-ack threshold.
    pub command_ack_within: Duration,
    /// Where the alerts are published.
    pub alerts_topic: String,
    /// Each journey's SLO, in config order.
    pub journeys: Vec<fleet_rules::JourneyConfig>,
}

/// Reads how full a queue is: `(queued, capacity)`.
pub struct QueueProbe {
    /// The queue's name in metrics.
    pub name: &'static str,
    fill: Box<dyn Fn() -> (usize, usize) + Send + Sync>,
}

impl QueueProbe {
    /// A probe that does not keep the channel open.
    pub fn of<T: Send + 'static>(name: &'static str, tx: &mpsc::Sender<T>) -> QueueProbe {
        let max = tx.max_capacity();
        let weak = tx.downgrade();
        QueueProbe {
            name,
            fill: Box::new(move || match weak.upgrade() {
                Some(tx) => (max.saturating_sub(tx.capacity()), max),
                None => (0, max),
            }),
        }
    }

    /// A probe from a function.
    pub fn from_fn(
        name: &'static str,
        fill: impl Fn() -> (usize, usize) + Send + Sync + 'static,
    ) -> QueueProbe {
        QueueProbe {
            name,
            fill: Box::new(fill),
        }
    }

    /// `(queued, capacity)` now.
    pub fn fill(&self) -> (usize, usize) {
        (self.fill)()
    }
}

impl std::fmt::Debug for QueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProbe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct ApiContext {
    /// The engine.
    pub engine: EngineHandle,
    /// The broker's clock (server time is the truth).
    pub clock: Clock,
    /// Ingest and engine counters.
    pub metrics: Arc<EngineMetrics>,
    /// The notifier's counters.
    pub slack_metrics: Arc<SlackMetrics>,
    /// Store counters.
    pub store_metrics: Arc<StoreMetrics>,
    /// The MQTT front (its counters).
    pub mqtt: Front,
    /// The bounded queues to report.
    pub queues: Vec<QueueProbe>,
    /// The bearer token for writes; `None` refuses every write.
    pub token: Option<String>,
    /// SLO settings.
    pub slo: SloSettings,
    /// MDS `provider_id`.
    pub mds_provider_id: String,
    /// The audit log.
    pub history: History,
    /// The SLO page.
    pub page: page::PageSettings,
    /// Active/standby: who leads (this engine, while it serves this API).
    pub ha: Option<Arc<crate::ha::Status>>,
}

/// The router with its limits.
pub fn router(ctx: Arc<ApiContext>) -> Router {
    let mut router = Router::new();
    if ctx.page.enabled {
        router = router
            .route("/", get(page::slo_page))
            .route("/vehicles", get(page::vehicles_page))
            .route("/vehicles/{id}", get(page::vehicle_page));
    }
    router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(prometheus::metrics))
        .route("/api/v1/vehicles", get(vehicles::list))
        .route("/api/v1/vehicles/{id}", get(vehicles::detail))
        .route(
            "/api/v1/vehicles/{id}/service-in",
            post(vehicles::service_in),
        )
        .route(
            "/api/v1/vehicles/{id}/service-out",
            post(vehicles::service_out),
        )
        .route("/api/v1/slo", get(slo::report))
        .route("/api/v1/slo/openslo", get(slo::openslo))
        .route("/api/v1/mds/vehicles/status", get(mds::vehicles_status))
        .route("/api/v1/mds/events/recent", get(mds::events_recent))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
        .layer(middleware::from_fn_with_state(
            REQUEST_TIMEOUT,
            with_timeout,
        ))
}

/// Answers 503 for a request that takes longer than `limit`.
async fn with_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(request = %what, "ops API request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "{what} took longer than {} ms: the broker is overloaded; retry later",
                    limit.as_millis()
                ),
            )
            .into_response()
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        format!(
            "no endpoint {method} {}: the API lives under /api/v1 (see README \"Ops HTTP API\")",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ApiClient;

    async fn serve(router: Router) -> (ApiServer, ApiClient) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = ApiServer::spawn(listener, router).expect("serves");
        let client = ApiClient::new(&format!("http://{}", server.local_addr()), None).expect("url");
        (server, client)
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_503_in_json() {
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(100),
                with_timeout,
            ));
        let (server, client) = serve(router).await;
        let r = client.get("/slow").await.expect("an answer");
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"], "timeout");
        assert!(r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("GET /slow")));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_flight_finish_and_refuses_new_ones() {
        // The handler says when it runs, then finishes once the stop has begun.
        let started = Arc::new(tokio::sync::Notify::new());
        let finish = Arc::new(tokio::sync::Notify::new());
        let (started_tx, finish_rx) = (started.clone(), finish.clone());
        let router = Router::new().route(
            "/work",
            get(move || async move {
                started_tx.notify_one();
                finish_rx.notified().await;
                "done"
            }),
        );
        let (server, client) = serve(router).await;
        let in_flight = {
            let client = client.clone();
            tokio::spawn(async move { client.get("/work").await })
        };
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the request reached the handler");
        let addr = server.local_addr();
        let stopping = tokio::spawn(server.shutdown());
        // Release the handler only once the server refuses new connections.
        tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the listener closed");
        finish.notify_one();
        stopping.await.expect("stopped");
        let r = in_flight.await.expect("joined").expect("answered");
        assert_eq!((r.status, r.text().as_str()), (200, "done"));
        assert!(client.get("/work").await.is_err(), "still accepting");
    }
}
