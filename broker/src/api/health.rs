//! `/healthz`: the process serves HTTP. `/readyz`: the engine answers within a second, the
//! store is writing (while a commit fails, announcements are held: not ready) and, in
//! attach mode, the link to the upstream broker is up (else the broker is blind).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiContext, ApiError};

const READY_WAIT: Duration = Duration::from_secs(1);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Value>, ApiError> {
    let not_ready =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message);
    let sli = match tokio::time::timeout(READY_WAIT, ctx.engine.sli()).await {
        Ok(Ok(sli)) => sli,
        Ok(Err(_)) => return Err(not_ready("the engine is stopped (shutting down)".into())),
        Err(_) => {
            return Err(not_ready(format!(
                "the engine did not answer within {}s: it is overloaded or stuck",
                READY_WAIT.as_secs()
            )))
        }
    };
    if ctx.store_metrics.failing.load(Ordering::Relaxed) != 0 {
        return Err(not_ready(
            "the store cannot commit (disk full or unwritable?): state changes are held \
             until it can; see the broker log"
                .into(),
        ));
    }
    if let Some(upstream) = ctx.mqtt.upstream_stats() {
        if !upstream.connected {
            return Err(not_ready(format!(
                "blind: the link to the upstream MQTT broker ({}) is down; nobody is taken \
                 out for silence until it is back",
                ctx.mqtt.describe()
            )));
        }
    }
    let mut ready = json!({
        "status": "ready",
        "fleet": sli.fleet,
        "mqtt": ctx.mqtt.describe(),
    });
    if let Some(ha) = &ctx.ha {
        match ha.role() {
            crate::ha::Role::Leader { epoch } => {
                ready["role"] = json!("leader");
                ready["node"] = json!(ha.node);
                ready["epoch"] = json!(epoch);
            }
            crate::ha::Role::Standby { .. } => {
                return Err(not_ready(format!(
                    "{} has lost the lease: it stops acting and stands by",
                    ha.node
                )))
            }
        }
    }
    Ok(Json(ready))
}
