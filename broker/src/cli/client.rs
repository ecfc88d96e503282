//! A small HTTP/1.1 client for the ops API (plain HTTP, like the API itself; put TLS in a
//! reverse proxy or an SSH tunnel). One connection per request, a timeout on each.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not usable.
    #[error("{url:?} is not a usable API URL: {why} (example: http://127.0.0.1:8080)")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// No connection.
    #[error("cannot reach the ops API at {url}: {source}; is the broker running, and is --url (or FLEET_API_URL) right?")]
    Connect {
        /// The base URL.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("the ops API at {url} broke off the exchange: {source}")]
    Http {
        /// The base URL.
        url: String,
        /// The cause.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the ops API at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// The base URL.
        url: String,
    },
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Talks to one ops API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    host: String,
    port: u16,
    prefix: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client for `url` (`http://host:port[/prefix]`), sending `token` on writes.
    pub fn new(url: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        let bad = |why: &str| ClientError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not spoken by this client: reach the API over plain HTTP on \
                     loopback or through an SSH tunnel",
                ))
            }
            _ => return Err(bad("it must start with http://")),
        }
        let host = uri.host().ok_or_else(|| bad("it names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(ApiClient {
            base: url.trim_end_matches('/').to_owned(),
            host,
            port: uri.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` (path and query, starting with `/`).
    pub async fn get(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body and the token.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<ApiResponse, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url: self.base.clone(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<ApiResponse, ClientError> {
        let connect = |source| ClientError::Connect {
            url: self.base.clone(),
            source,
        };
        let http = |source| ClientError::Http {
            url: self.base.clone(),
            source,
        };
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(connection);
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, authority);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Url {
                url: self.base.clone(),
                why: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        driver.abort();
        Ok(ApiResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_prefix() {
        let c = ApiClient::new("http://10.1.2.3:9000/ops/", None).expect("valid");
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("10.1.2.3", 9000, "/ops")
        );
        let c = ApiClient::new("http://[::1]:8080", None).expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("::1", 8080));
        assert_eq!(ApiClient::new("http://x", None).expect("valid").port, 80);
    }

    #[test]
    fn unusable_urls_say_why() {
        for bad in ["https://x:1", "x:1", "ftp://x", ""] {
            let e = ApiClient::new(bad, None).expect_err(bad);
            assert!(e.to_string().contains("not a usable API URL"), "{e}");
        }
    }
}
