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
    /// Accepted: HTTP 200, body `ok`, no Content-Type (as a webhook may answer).
    OkBare,
    /// Accepted, and the answer never comes (the post is in the channel; the broker
    /// cannot know).
    AcceptThenHang,
    /// 429 with the given `Retry-After` and body.
    Limited(RetryAfter, LimitedBody),
    /// This HTTP status with a text body.
    Status(u16, &'static str),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// A Slack API error (`{"ok":false,"error":...}`, HTTP 200).
    ApiError(&'static str),
    /// Never answers.
    Hang,
}

/// The `Retry-After` header of a scripted 429.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfter {
    /// No header.
    Absent,
    /// Seconds.
    Secs(u64),
    /// An HTTP date this many seconds from now.
    DateIn(u64),
}

/// The body of a scripted 429.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitedBody {
    /// Empty, no Content-Type.
    Empty,
    /// `rate_limited` as plain text.
    Text,
    /// `{"ok":false,"error":"ratelimited"}` as JSON.
    Json,
}

impl Reply {
    /// Whether the message counts as in the channel.
    pub fn accepted(&self) -> bool {
        matches!(self, Reply::Ok | Reply::OkBare | Reply::AcceptThenHang)
    }
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
    /// The ts it gave the message (Web API posts).
    pub ts: String,
}

impl Request {
    /// A message post (webhook or chat.postMessage), not a check or an update.
    pub fn is_post(&self) -> bool {
        self.path.starts_with("/services/") || self.path == "/api/chat.postMessage"
    }

    /// The idempotency key in the message metadata (bot token).
    pub fn metadata_key(&self) -> Option<String> {
        self.body["metadata"]["event_payload"]["idempotency_key"]
            .as_str()
            .map(str::to_owned)
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
    let (reply, ts, history) = {
        let mut inner = shared.inner.lock().expect("fake slack state");
        let reply = if path == "/api/auth.test" {
            inner.auth_reply.clone().unwrap_or(Reply::Ok)
        } else if path == "/api/conversations.history" {
            Reply::Ok
        } else {
            inner
                .script
                .pop_front()
                .or_else(|| inner.default.clone())
                .unwrap_or(Reply::Ok)
        };
        inner.next_ts += 1;
        let ts = format!("1795000000.{:06}", inner.next_ts);
        let history = (path == "/api/conversations.history").then(|| {
            let messages: Vec<Value> = inner
                .requests
                .iter()
                .filter(|r| r.path == "/api/chat.postMessage" && r.reply.accepted())
                .map(
                    |r| json!({"ts": r.ts, "text": r.body["text"], "metadata": r.body["metadata"]}),
                )
                .rev()
                .collect();
            json!({"ok": true, "messages": messages, "has_more": false})
        });
        inner.requests.push(Request {
            at: Instant::now(),
            path: path.clone(),
            auth,
            body: body.clone(),
            reply: reply.clone(),
            ts: ts.clone(),
        });
        (reply, ts, history)
    };
    shared.changed.notify_waiters();
    if let Some(history) = history {
        return axum::Json(history).into_response();
    }
    let api = path.starts_with("/api/");
    match reply {
        Reply::Hang | Reply::AcceptThenHang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::OkBare => bare(StatusCode::OK, None, "ok"),
        Reply::Limited(after, body) => {
            let after = match after {
                RetryAfter::Absent => None,
                RetryAfter::Secs(s) => Some(s.to_string()),
                RetryAfter::DateIn(s) => Some(httpdate::fmt_http_date(
                    // Slack's clock is the wall clock, as the broker's is.
                    std::time::UNIX_EPOCH
                        + Duration::from_millis(fleet_broker::clock::Clock::system().now())
                        + Duration::from_secs(s),
                )),
            };
            match body {
                LimitedBody::Empty => bare(StatusCode::TOO_MANY_REQUESTS, after, ""),
                LimitedBody::Text => bare(StatusCode::TOO_MANY_REQUESTS, after, "rate_limited"),
                LimitedBody::Json => {
                    let mut r = (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({"ok": false, "error": "ratelimited"})),
                    )
                        .into_response();
                    if let Some(after) = after.and_then(|a| a.parse().ok()) {
                        r.headers_mut().insert("retry-after", after);
                    }
                    r
                }
            }
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

/// A response with no Content-Type at all.
fn bare(status: StatusCode, retry_after: Option<String>, body: &'static str) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    if let Some(after) = retry_after.and_then(|a| a.parse().ok()) {
        r.headers_mut().insert("retry-after", after);
    }
    r
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

    /// `[slack]` lines that post through the fake's incoming webhook.
    pub fn webhook_lines(&self) -> String {
        format!("webhook_url = \"{}\"", self.webhook_url())
    }

    /// `[slack]` lines that post through the fake's Web API with a bot token.
    pub fn bot_lines(&self) -> String {
        format!(
            "bot_token = \"xoxb-test-token\"\nchannel = \"C0FLEET\"\napi_url = \"{}\"",
            self.api_url()
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
            .filter(|r| r.is_post() && r.reply.accepted())
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
