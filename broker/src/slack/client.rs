//! The two ways of posting, through slack-morphism: an incoming webhook, or a bot token
//! with `chat.postMessage` (which can thread replies and update the original). Every
//! answer is sorted into a policy [`Outcome`]; secrets never reach a log line (the webhook
//! URL is the secret, so errors name only its host).

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::prelude::*;
use url::Url;

use super::policy::{Outcome, DEFAULT_RETRY_AFTER};

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// Where messages go.
#[derive(Clone)]
pub enum Target {
    /// An incoming webhook URL (a secret).
    Webhook(Url),
    /// A bot token and a channel.
    Bot {
        /// The token (a secret).
        token: SlackApiToken,
        /// Channel id or name.
        channel: SlackChannelId,
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
    client: Arc<SlackClient<Connector>>,
    target: Target,
    timeout: Duration,
}

/// Builds the HTTPS connector: rustls (ring) with the system's roots, plain HTTP allowed
/// for a local endpoint.
fn connector(api_url: &str) -> Result<Connector, rustls::Error> {
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
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(SlackClientHyperConnector::with_connector(https)
        .with_slack_api_url(api_url.trim_end_matches('/')))
}

impl Poster {
    /// A client for `target`, the Web API at `api_url`.
    pub fn new(target: Target, api_url: &str, timeout: Duration) -> Result<Poster, rustls::Error> {
        Ok(Poster {
            client: Arc::new(SlackClient::new(connector(api_url)?)),
            target,
            timeout,
        })
    }

    /// Where it posts (for logs: no secret).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// True with a bot token: replies can be threaded and originals updated.
    pub fn threads(&self) -> bool {
        matches!(self.target, Target::Bot { .. })
    }

    /// Checks the bot token (`auth.test`); a webhook cannot be checked without posting.
    /// `Ok` names the workspace.
    pub async fn check(&self) -> Result<Option<String>, Outcome> {
        let Target::Bot { token, .. } = &self.target else {
            return Ok(None);
        };
        let session = self.client.open_session(token);
        match tokio::time::timeout(self.timeout, session.auth_test()).await {
            Ok(Ok(r)) => Ok(Some(format!(
                "{} as {}",
                r.team,
                r.user.unwrap_or_else(|| "the bot".to_owned())
            ))),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Outcome {
        Outcome::Failed(format!(
            "no answer within {}",
            humantime::format_duration(self.timeout)
        ))
    }

    /// Posts a message (in a thread when `thread_ts` is given and a bot token is used).
    /// The idempotency key rides in the message metadata (bot token) and in its footer.
    pub async fn post(
        &self,
        content: &SlackMessageContent,
        thread_ts: Option<&str>,
        key: &str,
    ) -> Outcome {
        let call = async {
            match &self.target {
                Target::Webhook(url) => {
                    let req = SlackApiPostWebhookMessageRequest::new(content.clone());
                    self.client
                        .post_webhook_message(url, &req)
                        .await
                        .map(|_| None)
                }
                Target::Bot { token, channel } => {
                    let mut content = content.clone();
                    content.metadata = Some(SlackMessageMetadata {
                        event_type: "fleet_notification".to_owned(),
                        event_payload: Some(
                            [("idempotency_key".to_owned(), key.to_owned())].into(),
                        ),
                    });
                    let mut req = SlackApiChatPostMessageRequest::new(channel.clone(), content);
                    req.thread_ts = thread_ts.map(|t| SlackTs(t.to_owned()));
                    req.unfurl_links = Some(false);
                    self.client
                        .open_session(token)
                        .chat_post_message(&req)
                        .await
                        .map(|r| Some(r.ts.0))
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(ts)) => Outcome::Sent { ts },
            Ok(Err(e)) => classify(e),
            Err(_) => self.timed_out(),
        }
    }

    /// Replaces the message at `ts` (bot token only; a webhook cannot).
    pub async fn update(&self, ts: &str, content: &SlackMessageContent) -> Outcome {
        let Target::Bot { token, channel } = &self.target else {
            return Outcome::Invalid("a webhook cannot update a message".to_owned());
        };
        let req = SlackApiChatUpdateRequest::new(
            channel.clone(),
            content.clone(),
            SlackTs(ts.to_owned()),
        );
        let session = self.client.open_session(token);
        let call = session.chat_update(&req);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => Outcome::Sent {
                ts: Some(ts.to_owned()),
            },
            Ok(Err(e)) => classify(e),
            Err(_) => self.timed_out(),
        }
    }
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
    } else if code == "ratelimited" {
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

fn classify(e: slack_morphism::errors::SlackClientError) -> Outcome {
    match e {
        slack_morphism::errors::SlackClientError::RateLimitError(r) => {
            Outcome::RateLimited(r.retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
        }
        slack_morphism::errors::SlackClientError::ApiError(a) => by_code(&a.code, None),
        slack_morphism::errors::SlackClientError::HttpError(h) => {
            let body: String = h
                .http_response_body
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            by_code(&body, Some(h.status_code.as_u16()))
        }
        other => Outcome::Failed(redact(&other.to_string())),
    }
}

/// Error texts may quote the URL: cut anything that looks like one.
fn redact(text: &str) -> String {
    text.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn urls_never_reach_an_error_text() {
        assert_eq!(
            redact("error sending request for https://hooks.slack.com/services/T/B/SECRET now"),
            "error sending request for <url> now"
        );
    }
}
