//! Shared by the ops API tests: a broker with an API token, an HTTP client on its API,
//! simulated vehicles, and polling with a deadline.

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use fleet_broker::cli::{ApiClient, ApiResponse};
use fleet_broker::Broker;
use fleet_tests::{start, test_config, WAIT};
use serde_json::{json, Value};
use sim_device::{Vehicle, VehicleOptions};

/// The token the test brokers accept.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Seconds-scale heartbeat timeout, a one-report brake rule and the API token.
pub const OPS: &str = "[http]\ntoken = \"test-token-0123456789abcdef\"\n\
[heartbeat]\ntimeout = \"2s\"\n\
[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n";

/// A broker started with `extra` config and a client of its API sending `token`.
pub async fn broker_with(extra: &str, token: Option<&str>) -> (Broker, ApiClient) {
    broker_from(&test_config(extra), token).await
}

/// A broker started with `config` and a client of its API sending `token`.
pub async fn broker_from(
    config: &fleet_broker::config::Config,
    token: Option<&str>,
) -> (Broker, ApiClient) {
    let broker = start(config).await;
    let api = ApiClient::new(
        &format!("http://{}", broker.http_addr()),
        token.map(str::to_owned),
    )
    .expect("api url");
    (broker, api)
}

/// GET, expecting JSON.
pub async fn get(api: &ApiClient, path: &str) -> (u16, Value) {
    let r = api.get(path).await.expect("the API answers");
    (r.status, r.json())
}

/// POST `{"operator", "note"}`.
pub async fn post(api: &ApiClient, path: &str, operator: &str, note: &str) -> ApiResponse {
    api.post_json(path, &json!({ "operator": operator, "note": note }))
        .await
        .expect("the API answers")
}

/// A simulated vehicle that has sent one heartbeat (naming `model`, if any), once the
/// engine knows it.
pub async fn vehicle(broker: &Broker, id: &str, model: Option<&str>) -> Vehicle {
    let v = Vehicle::connect(broker.mqtt_addr(), id, VehicleOptions::default())
        .await
        .expect("vehicle connects");
    let payload = match model {
        Some(m) => json!({ "model": m }).to_string().into_bytes(),
        None => Vec::new(),
    };
    v.publish("heartbeat", payload).await.expect("heartbeat");
    until(&format!("{id} registered"), || async {
        broker.engine().vehicle(id).await.ok().flatten().is_some()
    })
    .await;
    v
}

/// Polls `check` until it holds, or panics naming `what` after [`WAIT`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out waiting for {what}");
}

/// The kinds of a JSON reason list.
pub fn kinds(reasons: &Value) -> Vec<String> {
    reasons
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `request` (a whole HTTP/1.1 request) as is and returns the status and body, for
/// requests the client would not make (wrong content type, oversize body).
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream.write_all(request).await.expect("request sent");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("response read");
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A POST with this content type and body, the token and `Connection: close`.
pub fn post_request(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A Prometheus exposition as `series -> value`, the series written as exposed
/// (`name{label="v",...}`). Panics on a line that is not a comment or a sample.
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series {series} exposed twice"
        );
    }
    out
}
