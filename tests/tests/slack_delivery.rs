//! Slack delivery on the wire, against a local fake Slack over real HTTP: every 429 is
//! waited out for its whole Retry-After (seconds or HTTP date, whatever the body), and the
//! pause holds the channel, not one message; a bare `200` from a webhook is one delivery;
//! a post whose answer never came is looked up in the channel (bot token) instead of being
//! posted twice. The waits are several seconds on purpose: longer than `min_interval` and
//! any backoff, so a fixed retry delay cannot pass for obeying Retry-After.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_broker::config::Config;
use fleet_tests::fake_slack::{FakeSlack, LimitedBody, Reply, Request, RetryAfter};
use fleet_tests::{start, test_config};
use sim_device::{Vehicle, VehicleOptions};
use tokio::time::Instant;

const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Burn-rate alerts off: a test crossing a minute boundary would get them too.
fn config(target: &str, extra: &str) -> Config {
    test_config(&format!(
        "[faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
         [slack]\n{target}\ngroup_window = \"0s\"\nmin_interval = \"{}ms\"\nnotify_alerts = false\n{extra}",
        MIN_INTERVAL.as_millis()
    ))
}

async fn faulty(broker: &fleet_broker::Broker, id: &str) -> Vehicle {
    let v = Vehicle::connect(broker.mqtt_addr(), id, VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.heartbeat().await.expect("heartbeat");
    v.error("BRAKE_SENSOR", 1).await.expect("error report");
    v
}

/// Waits (at most 10 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn posts(requests: &[Request]) -> Vec<&Request> {
    requests.iter().filter(|r| r.is_post()).collect()
}

/// The first post is answered 429; a second message is composed while the channel is
/// paused. Nothing reaches Slack before the pause ends; then both are delivered once, in
/// order, `min_interval` apart.
async fn a_429_pauses_the_channel(bot: bool, after: RetryAfter, body: LimitedBody) {
    let fake = FakeSlack::start().await;
    fake.script([Reply::Limited(after, body)]);
    let target = if bot {
        fake.bot_lines()
    } else {
        fake.webhook_lines()
    };
    let broker = start(&config(&target, "")).await;
    let first = faulty(&broker, "v-first").await;
    let limited = fake
        .wait_until("the rate-limited post", Duration::from_secs(10), |r| {
            !posts(r).is_empty()
        })
        .await;
    let limited = posts(&limited)[0].clone();
    let second = faulty(&broker, "v-second").await;
    let seen = fake
        .wait_until("both messages delivered", Duration::from_secs(20), |r| {
            r.iter()
                .filter(|r| r.is_post() && r.reply.accepted())
                .count()
                >= 2
        })
        .await;
    // An HTTP date has whole seconds: the wait it asks for is at least 1 s shorter.
    let pause = match after {
        RetryAfter::Secs(s) => Duration::from_secs(s),
        RetryAfter::DateIn(s) => Duration::from_secs(s - 1),
        RetryAfter::Absent => unreachable!("the default wait is 30 s: unit-tested"),
    };
    let after_429: Vec<&Request> = seen.iter().filter(|r| r.at > limited.at).collect();
    let first_after = after_429.first().expect("a request after the 429");
    assert!(
        first_after.at - limited.at >= pause,
        "a request came {:?} after a 429 asking for {pause:?}: {}",
        first_after.at - limited.at,
        first_after.path
    );
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 2, "each message once");
    assert_eq!(
        delivered[0].key(),
        limited.key(),
        "the paused message goes first"
    );
    assert!(delivered[0].body.to_string().contains("`v-first`"));
    assert!(delivered[1].body.to_string().contains("`v-second`"));
    assert!(
        delivered[1].at - delivered[0].at >= MIN_INTERVAL - Duration::from_millis(20),
        "min_interval not kept after the pause"
    );
    let keys: BTreeSet<Option<String>> = delivered.iter().map(Request::key).collect();
    assert_eq!(keys.len(), 2);
    let m = broker.slack_metrics();
    eventually("both recorded as sent", || {
        m.sent.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(m.rate_limited.load(Ordering::Relaxed), 1);
    first.disconnect().await;
    second.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_webhook_429_with_an_empty_body_and_retry_after_3s_pauses_the_channel_3s() {
    a_429_pauses_the_channel(false, RetryAfter::Secs(3), LimitedBody::Empty).await;
}

#[tokio::test]
async fn a_webhook_429_with_a_text_body_and_retry_after_7s_pauses_the_channel_7s() {
    a_429_pauses_the_channel(false, RetryAfter::Secs(7), LimitedBody::Text).await;
}

#[tokio::test]
async fn a_webhook_429_with_a_json_body_and_an_http_date_pauses_the_channel_until_then() {
    a_429_pauses_the_channel(false, RetryAfter::DateIn(4), LimitedBody::Json).await;
}

#[tokio::test]
async fn a_bot_429_with_an_empty_body_and_retry_after_3s_pauses_the_channel_3s() {
    a_429_pauses_the_channel(true, RetryAfter::Secs(3), LimitedBody::Empty).await;
}

#[tokio::test]
async fn a_bot_429_with_a_json_body_and_retry_after_7s_pauses_the_channel_7s() {
    a_429_pauses_the_channel(true, RetryAfter::Secs(7), LimitedBody::Json).await;
}

#[tokio::test]
async fn a_bot_429_with_a_text_body_and_an_http_date_pauses_the_channel_until_then() {
    a_429_pauses_the_channel(true, RetryAfter::DateIn(4), LimitedBody::Text).await;
}

#[tokio::test]
async fn a_webhook_answering_200_without_a_content_type_is_one_delivery() {
    let fake = FakeSlack::start().await;
    fake.set_default(Reply::OkBare);
    let broker = start(&config(&fake.webhook_lines(), "")).await;
    let v = faulty(&broker, "v-bare").await;
    let m = broker.slack_metrics().clone();
    fake.wait_until("the post", Duration::from_secs(10), |r| {
        !posts(r).is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.sent.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.sent.load(Ordering::Relaxed),
        1,
        "the 200 counted as delivered"
    );
    assert_eq!(m.retried.load(Ordering::Relaxed), 0);
    assert_eq!(m.depth.load(Ordering::Relaxed), 0);
    // A retry would come within the first backoff (0.5-1 s) plus min_interval.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(posts(&fake.requests()).len(), 1, "posted again after a 200");
    v.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bot_post_whose_answer_never_came_is_found_in_the_channel_and_not_posted_again() {
    let fake = FakeSlack::start().await;
    fake.script([Reply::AcceptThenHang]);
    let broker = start(&config(&fake.bot_lines(), "request_timeout = \"1s\"\n")).await;
    let v = faulty(&broker, "v-lost-answer").await;
    let m = broker.slack_metrics().clone();
    fake.wait_until("the history lookup", Duration::from_secs(15), |r| {
        r.iter().any(|r| r.path == "/api/conversations.history")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.depth.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.depth.load(Ordering::Relaxed),
        0,
        "the message counts as delivered"
    );
    assert_eq!(m.found_posted.load(Ordering::Relaxed), 1);
    let requests = fake.requests();
    let sent = posts(&requests);
    assert_eq!(
        sent.len(),
        1,
        "posted twice: {:?}",
        sent.iter().map(|r| r.key()).collect::<Vec<_>>()
    );
    assert_eq!(
        sent[0].metadata_key(),
        sent[0].key(),
        "the key rides in the metadata"
    );
    v.disconnect().await;
    broker.shutdown().await;
}
