//! The two ways of posting: an incoming webhook, or a bot token with the Web API
//! (`chat.postMessage`, which can thread replies; `chat.update`; `conversations.history`
//! to find a message posted before a crash). Plain HTTPS requests whose status, headers and
//! body are read here, so every answer Slack gives is sorted right: any 429 is a rate limit
//! whatever its body (its `Retry-After` in seconds or as an HTTP date), any 2xx from a
//! webhook is a delivery whatever its body or content type. slack-morphism provides the
//! Block Kit models only. Secrets never reach a log line (the webhook URL is the secret, so
//! errors name only its host).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use slack_morphism::prelude::SlackMessageContent;
use url::Url;

use super::policy::{Outcome, DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER};
use crate::clock::Clock;

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest answer read from Slack (a history page with metadata is well under this).
const MAX_ANSWER: usize = 1024 * 1024;
/// Messages of the channel's history searched for an idempotency key.
const HISTORY_LIMIT: u32 = 200;

/// Where messages go.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// An incoming webhook URL (a secret).
    Webhook(Url),
    /// A bot token (a secret) and a channel id or name.
    Bot {
        /// `xoxb-…`
        token: String,
        /// Channel id or name.
        channel: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook(url) => write!(f, "webhook on {}", url.host_str().unwrap_or("?")),
            Target::Bot { channel, .. } => write!(f, "bot token, channel {channel}"),
        }
    }
}

/// A Slack client with a per-request time limit.
pub struct Poster {
    http: Https,
    target: Target,
    api_url: String,
    timeout: Duration,
    clock: Clock,
}

/// An answer as received.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The HTTPS connector: rustls (ring) with the system's roots, plain HTTP allowed for a
/// local endpoint.
fn connector() -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let config = match builder.clone().with_native_roots() {
        Ok(b) => b.with_no_client_auth(),
        Err(e) => {
            tracing::error!(
                "no system CA certificates ({e}): HTTPS to Slack will fail; install the ca-certificates package"
            );
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}

impl Poster {
    /// A client for `target`, the Web API at `api_url`; `clock` dates `Retry-After`.
    pub fn new(
        target: Target,
        api_url: &str,
        timeout: Duration,
        clock: Clock,
    ) -> Result<Poster, rustls::Error> {
        Ok(Poster {
            http: Client::builder(TokioExecutor::new()).build(connector()?),
            target,
            api_url: api_url.trim_end_matches('/').to_owned(),
            timeout,
            clock,
        })
    }

    /// Where it posts (for logs: no secret).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// True with a bot token: replies can be threaded, originals updated, and the
    /// channel's history searched for a message whose delivery was not recorded.
    pub fn threads(&self) -> bool {
        matches!(self.target, Target::Bot { .. })
    }

    /// Checks the bot token (`auth.test`); a webhook cannot be checked without posting.
    /// `Ok` names the workspace.
    pub async fn check(&self) -> Result<Option<String>, Outcome> {
        let Target::Bot { .. } = &self.target else {
            return Ok(None);
        };
        let answer = self.api(Method::POST, "auth.test", json!({})).await?;
        let v = api_json(&answer, self.clock)?;
        Ok(Some(format!(
            "{} as {}",
            v["team"].as_str().unwrap_or("?"),
            v["user"].as_str().unwrap_or("the bot")
        )))
    }

    /// Posts a message (in a thread when `thread_ts` is given and a bot token is used).
    /// The idempotency key rides in the message metadata (bot token) and in its footer.
    pub async fn post(
        &self,
        content: &SlackMessageContent,
        thread_ts: Option<&str>,
        key: &str,
    ) -> Outcome {
        let mut body = serde_json::to_value(content).unwrap_or_default();
        match &self.target {
            Target::Webhook(url) => {
                match self.send(Method::POST, url.as_str(), None, &body).await {
                    Ok(a) if a.status.is_success() => Outcome::Sent { ts: None },
                    Ok(a) => classify(&a, self.clock),
                    Err(e) => e,
                }
            }
            Target::Bot { channel, .. } => {
                body["channel"] = json!(channel);
                body["unfurl_links"] = json!(false);
                body["metadata"] = json!({
                    "event_type": "fleet_notification",
                    "event_payload": { "idempotency_key": key },
                });
                if let Some(ts) = thread_ts {
                    body["thread_ts"] = json!(ts);
                }
                match self.api(Method::POST, "chat.postMessage", body).await {
                    Ok(a) => match api_json(&a, self.clock) {
                        Ok(v) => Outcome::Sent {
                            ts: v["ts"].as_str().map(str::to_owned),
                        },
                        Err(o) => o,
                    },
                    Err(o) => o,
                }
            }
        }
    }

    /// Replaces the message at `ts` (bot token only; a webhook cannot).
    pub async fn update(&self, ts: &str, content: &SlackMessageContent) -> Outcome {
        let Target::Bot { channel, .. } = &self.target else {
            return Outcome::Invalid("a webhook cannot update a message".to_owned());
        };
        let mut body = serde_json::to_value(content).unwrap_or_default();
        body["channel"] = json!(channel);
        body["ts"] = json!(ts);
        match self.api(Method::POST, "chat.update", body).await {
            Ok(a) => match api_json(&a, self.clock) {
                Ok(_) => Outcome::Sent {
                    ts: Some(ts.to_owned()),
                },
                Err(o) => o,
            },
            Err(o) => o,
        }
    }

    /// The ts of a message in the channel carrying idempotency key `key`, posted at or
    /// after `since` (bot token only: a webhook's channel cannot be read).
    pub async fn find_posted(
        &self,
        key: &str,
        since: fleet_rules::UnixMs,
    ) -> Result<Option<String>, Outcome> {
        let Target::Bot { channel, .. } = &self.target else {
            return Ok(None);
        };
        // Slack's ts are seconds with a fraction; a minute of margin for clock skew.
        let oldest = since.saturating_sub(60_000) / 1000;
        let query = format!(
            "conversations.history?channel={}&oldest={oldest}&limit={HISTORY_LIMIT}&include_all_metadata=true",
            encode(channel)
        );
        let answer = self.api(Method::GET, &query, Value::Null).await?;
        let v = api_json(&answer, self.clock)?;
        Ok(v["messages"].as_array().and_then(|messages| {
            messages.iter().find_map(|m| {
                (m["metadata"]["event_payload"]["idempotency_key"] == key)
                    .then(|| m["ts"].as_str().map(str::to_owned))
                    .flatten()
            })
        }))
    }

    /// A Web API call with the bot token.
    async fn api(&self, method: Method, call: &str, body: Value) -> Result<Answer, Outcome> {
        let Target::Bot { token, .. } = &self.target else {
            return Err(Outcome::Invalid("the Web API needs a bot token".to_owned()));
        };
        let url = format!("{}/{call}", self.api_url);
        self.send(method, &url, Some(token), &body).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Answer, Outcome> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = if method == Method::GET {
            Bytes::new()
        } else {
            request = request.header(CONTENT_TYPE, "application/json; charset=utf-8");
            Bytes::from(body.to_string())
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| Outcome::Invalid(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                // The request may have reached Slack: delivery is unknown.
                Outcome::Unknown(redact(&format!("{e}")))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| Outcome::Unknown(format!("the answer broke off: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Outcome::Unknown(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// The JSON of a Web API answer that says `ok: true`, or how it failed.
fn api_json(a: &Answer, clock: Clock) -> Result<Value, Outcome> {
    if !a.status.is_success() {
        return Err(classify(a, clock));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&a.body) else {
        return Err(Outcome::Failed(format!(
            "HTTP {} with an answer that is not JSON",
            a.status.as_u16()
        )));
    };
    if v["ok"] == true {
        return Ok(v);
    }
    let code = v["error"].as_str().unwrap_or("unknown_error");
    Err(match by_code(code, None) {
        // `ratelimited` in a 200: honour a Retry-After if one came with it.
        Outcome::RateLimited(_) => Outcome::RateLimited(retry_after(&a.headers, clock)),
        other => other,
    })
}

/// Sorts a failed answer: every 429 is a rate limit, whatever its body.
fn classify(a: &Answer, clock: Clock) -> Outcome {
    if a.status == StatusCode::TOO_MANY_REQUESTS {
        return Outcome::RateLimited(retry_after(&a.headers, clock));
    }
    let text = String::from_utf8_lossy(&a.body);
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect());
    by_code(&code, Some(a.status.as_u16()))
}

/// `Retry-After` in seconds or as an HTTP date; without a usable one, the default.
fn retry_after(headers: &HeaderMap, clock: Clock) -> Duration {
    let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) else {
        return DEFAULT_RETRY_AFTER;
    };
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(at) = httpdate::parse_http_date(value) {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(at_ms.saturating_sub(clock.now()))
    } else {
        DEFAULT_RETRY_AFTER
    };
    wait.min(MAX_RETRY_AFTER)
}

/// Slack error codes that mean our token, webhook or channel is wrong.
const REJECTED: [&str; 16] = [
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "channel_is_archived",
    "restricted_action",
    "no_service",
    "no_team",
    "team_disabled",
    "invalid_token",
];

/// Slack error codes that mean this message can never be accepted.
const INVALID: [&str; 9] = [
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_payload",
    "msg_too_long",
    "no_text",
    "invalid_arguments",
    "too_many_attachments",
    "invalid_metadata_format",
    "invalid_metadata_schema",
];

/// Sorts a Slack error code (or a webhook's text answer) into an outcome.
fn by_code(code: &str, status: Option<u16>) -> Outcome {
    let code = code.trim();
    if REJECTED.iter().any(|c| code.contains(c)) {
        Outcome::Rejected(code.to_owned())
    } else if INVALID.iter().any(|c| code.contains(c)) {
        Outcome::Invalid(code.to_owned())
    } else if code == "ratelimited" || code == "rate_limited" {
        Outcome::RateLimited(DEFAULT_RETRY_AFTER)
    } else {
        match status {
            Some(s) if (400..500).contains(&s) && s != 408 => {
                Outcome::Rejected(format!("HTTP {s} {code}"))
            }
            Some(s) => Outcome::Failed(format!("HTTP {s} {code}")),
            None => Outcome::Failed(code.to_owned()),
        }
    }
}

/// Error texts may quote the URL: cut anything that looks like one.
fn redact(text: &str) -> String {
    text.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn slack_answers_sort_into_retry_decisions() {
        assert_eq!(
            by_code("invalid_auth", None),
            Outcome::Rejected("invalid_auth".into())
        );
        assert_eq!(
            by_code("no_service", Some(404)),
            Outcome::Rejected("no_service".into())
        );
        assert_eq!(
            by_code("invalid_blocks", Some(400)),
            Outcome::Invalid("invalid_blocks".into())
        );
        assert!(matches!(by_code("", Some(503)), Outcome::Failed(_)));
        assert!(matches!(
            by_code("internal_error", None),
            Outcome::Failed(_)
        ));
        assert!(matches!(by_code("", Some(403)), Outcome::Rejected(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn every_429_is_a_rate_limit_whatever_its_body() {
        let clock = Clock::starting_at(T0);
        for body in [
            "",
            "rate_limited",
            r#"{"ok":false,"error":"ratelimited"}"#,
            "<html>",
        ] {
            let a = answer(429, &[("retry-after", "7")], body);
            assert_eq!(
                classify(&a, clock),
                Outcome::RateLimited(Duration::from_secs(7)),
                "{body:?}"
            );
        }
        let a = answer(429, &[], "");
        assert_eq!(
            classify(&a, clock),
            Outcome::RateLimited(DEFAULT_RETRY_AFTER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_read_in_seconds_or_as_an_http_date() {
        let clock = Clock::starting_at(T0);
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(T0 + 9_000));
        let a = answer(429, &[("retry-after", &date)], "");
        assert_eq!(
            classify(&a, clock),
            Outcome::RateLimited(Duration::from_secs(9))
        );
        let past = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(T0 - 5_000));
        let a = answer(429, &[("retry-after", &past)], "");
        assert_eq!(classify(&a, clock), Outcome::RateLimited(Duration::ZERO));
        let a = answer(429, &[("retry-after", "soon")], "");
        assert_eq!(
            classify(&a, clock),
            Outcome::RateLimited(DEFAULT_RETRY_AFTER)
        );
        let a = answer(429, &[("retry-after", "999999")], "");
        assert_eq!(classify(&a, clock), Outcome::RateLimited(MAX_RETRY_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_web_api_answer_is_ok_only_when_it_says_so() {
        let clock = Clock::starting_at(T0);
        let ok = answer(200, &[], r#"{"ok":true,"ts":"1.2"}"#);
        assert_eq!(
            api_json(&ok, clock).map(|v| v["ts"].clone()),
            Ok(json!("1.2"))
        );
        let limited = answer(
            200,
            &[("retry-after", "3")],
            r#"{"ok":false,"error":"ratelimited"}"#,
        );
        assert_eq!(
            api_json(&limited, clock),
            Err(Outcome::RateLimited(Duration::from_secs(3)))
        );
        let refused = answer(200, &[], r#"{"ok":false,"error":"channel_not_found"}"#);
        assert_eq!(
            api_json(&refused, clock),
            Err(Outcome::Rejected("channel_not_found".into()))
        );
        assert!(matches!(
            api_json(&answer(200, &[], "ok"), clock),
            Err(Outcome::Failed(_))
        ));
    }

    #[test]
    fn urls_never_reach_an_error_text() {
        assert_eq!(
            redact("error sending request for https://hooks.slack.com/services/T/B/SECRET now"),
            "error sending request for <url> now"
        );
    }
}
