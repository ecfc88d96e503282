//! A local stand-in for Slack on 127.0.0.1: an incoming-webhook endpoint and the Web API
//! methods the broker calls (`auth.test`, `chat.postMessage`, `chat.update`). Tests script
//! its answers (success, 429 with Retry-After, 5xx, Slack errors, no answer at all) and
//! read back every request with the time it arrived. Shared by the broker's and the
//! end-to-end tests (included by path).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the fake answers the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Accepted.
    Ok,
    /// This HTTP status with a text body.
    Status(u16, &'static str),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// A Slack API error (`{"ok":false,"error":...}`, HTTP 200).
    ApiError(&'static str),
    /// Never answers.
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    /// The path, like `/api/chat.postMessage` or `/services/T/B/X`.
    pub path: String,
    /// The Authorization header.
    pub auth: Option<String>,
    /// The body as JSON (Null if not JSON).
    pub body: Value,
    /// What the fake answered.
    pub reply: Reply,
}

impl Request {
    /// A message post (webhook or chat.postMessage), not a check or an update.
    pub fn is_post(&self) -> bool {
        self.path.starts_with("/services/") || self.path == "/api/chat.postMessage"
    }

    /// The idempotency key in the message footer.
    pub fn key(&self) -> Option<String> {
        let text = self.body.to_string();
        let start = text.find("ref `")? + 5;
        let end = text[start..].find('`')? + start;
        Some(text[start..end].to_owned())
    }
}

/// How often each of `ids` is listed (as `` `id` ``) in `requests`' bodies.
pub fn listed(requests: &[Request], ids: &[String]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in requests {
        let text = r.body.to_string();
        for id in ids {
            if text.contains(&format!("`{id}`")) {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    seen
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    auth_reply: Option<Reply>,
    requests: Vec<Request>,
    next_ts: u64,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// The running fake.
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (reply, ts) = {
        let mut inner = shared.inner.lock().expect("fake slack state");
        let reply = if path == "/api/auth.test" {
            inner.auth_reply.clone().unwrap_or(Reply::Ok)
        } else {
            inner
                .script
                .pop_front()
                .or_else(|| inner.default.clone())
                .unwrap_or(Reply::Ok)
        };
        inner.next_ts += 1;
        let ts = format!("1795000000.{:06}", inner.next_ts);
        inner.requests.push(Request {
            at: Instant::now(),
            path: path.clone(),
            auth,
            body: body.clone(),
            reply: reply.clone(),
        });
        (reply, ts)
    };
    shared.changed.notify_waiters();
    let api = path.starts_with("/api/");
    match reply {
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Status(code, text) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            text,
        )
            .into_response(),
        Reply::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "rate_limited",
        )
            .into_response(),
        Reply::ApiError(code) => axum::Json(json!({"ok": false, "error": code})).into_response(),
        Reply::Ok if !api => (StatusCode::OK, "ok").into_response(),
        Reply::Ok => {
            let answer = match path.as_str() {
                "/api/auth.test" => json!({
                    "ok": true, "user_id": "U0FLEET", "team_id": "T0FLEET",
                    "team": "Fleet Ops", "user": "fleetbot", "url": "https://fleet-ops.slack.com/"
                }),
                "/api/chat.update" => json!({
                    "ok": true, "channel": body["channel"], "ts": body["ts"],
                    "message": {"text": body["text"]}
                }),
                _ => json!({
                    "ok": true, "channel": body["channel"], "ts": ts,
                    "message": {"ts": ts, "text": body["text"]}
                }),
            };
            axum::Json(answer).into_response()
        }
    }
}

impl FakeSlack {
    /// Listens on a free loopback port; everything is accepted until scripted otherwise.
    pub async fn start() -> FakeSlack {
        let shared = Shared::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake slack binds");
        let addr = listener.local_addr().expect("fake slack address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack { addr, shared, task }
    }

    /// An incoming-webhook URL on the fake.
    pub fn webhook_url(&self) -> String {
        format!(
            "http://{}/services/T0FLEET/B0FLEET/secretwebhookpart",
            self.addr
        )
    }

    /// The Web API base URL on the fake.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The next answers to message posts and updates, in order; then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    /// The answer to `auth.test`.
    pub fn set_auth(&self, reply: Reply) {
        self.lock().auth_reply = Some(reply);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fake slack state")
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Message posts the fake accepted.
    pub fn delivered(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_post() && r.reply == Reply::Ok)
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for the requests so far.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                let requests = self.requests();
                if done(&requests) {
                    return requests;
                }
                changed.await;
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => panic!(
                "fake Slack: timed out waiting for {what}; requests: {:#?}",
                self.requests()
                    .iter()
                    .map(|r| (r.path.clone(), r.reply.clone()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}
