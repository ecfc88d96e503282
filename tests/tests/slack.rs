//! Slack notifications end to end: real MQTT vehicles, the broker, and a local fake Slack
//! over real HTTP. Windows and intervals are shortened; every wait has a limit and no
//! sleep stands in for an assertion.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_broker::config::Config;
use fleet_tests::fake_slack::{listed, FakeSlack, Reply, Request};
use fleet_tests::{start, test_config, Observer, WAIT};
use sim_device::{Vehicle, VehicleOptions};

const FAULT_ON_FIRST_REPORT: &str = "[faults.default]\nthreshold = 1\nwindow = \"1m\"\n";

/// Fast Slack settings for tests; `target` is the webhook or bot lines.
fn slack_config(target: &str, extra: &str) -> Config {
    slack_config_grouping(target, extra, "300ms")
}

/// [`slack_config`] with this `group_window`.
/// The faulted fleets here burn the SLO budget: a test that crosses a minute boundary
/// would also get the burn-rate alerts, so they are not posted here (the alerts have tests of their own).
fn slack_config_grouping(target: &str, extra: &str, group_window: &str) -> Config {
    test_config(&format!(
        "{FAULT_ON_FIRST_REPORT}{extra}\n[slack]\n{target}\ngroup_window = \"{group_window}\"\n\
         min_interval = \"20ms\"\nrequest_timeout = \"500ms\"\nnotify_alerts = false\n"
    ))
}

fn webhook(fake: &FakeSlack) -> String {
    format!("webhook_url = \"{}\"", fake.webhook_url())
}

fn bot(fake: &FakeSlack) -> String {
    bot_with_token(fake, "xoxb-test-token")
}

fn bot_with_token(fake: &FakeSlack, token: &str) -> String {
    format!(
        "bot_token = \"{token}\"\nchannel = \"C0FLEET\"\napi_url = \"{}\"",
        fake.api_url()
    )
}

async fn vehicle(broker: &fleet_broker::Broker, id: &str) -> Vehicle {
    let v = Vehicle::connect(broker.mqtt_addr(), id, VehicleOptions::default())
        .await
        .expect("vehicle connects");
    v.heartbeat().await.expect("heartbeat");
    v
}

/// Waits (at most [`WAIT`]) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn text(r: &Request) -> String {
    r.body.to_string()
}

#[tokio::test]
async fn a_hardware_fault_reaches_the_webhook_with_what_a_person_needs() {
    fault_reaches_the_webhook("").await;
}

#[tokio::test]
async fn on_postgres_a_hardware_fault_reaches_the_webhook_through_the_stored_outbox() {
    let Some(pg) = fleet_tests::postgres::Postgres::start() else {
        return;
    };
    fault_reaches_the_webhook(&format!("[store]\nurl = \"{}\"\n", pg.url())).await;
}

async fn fault_reaches_the_webhook(extra: &str) {
    let fake = FakeSlack::start().await;
    let broker = start(&slack_config(&webhook(&fake), extra)).await;
    let v = vehicle(&broker, "scooter-17").await;
    v.error("BRAKE_SENSOR", 1).await.expect("error report");

    let requests = fake
        .wait_until("the fault message", WAIT, |r| {
            r.iter().any(Request::is_post)
        })
        .await;
    let post = requests.iter().find(|r| r.is_post()).expect("a post");
    assert!(post.path.starts_with("/services/T0FLEET/"), "{}", post.path);
    let t = text(post);
    for expected in [
        "scooter-17",
        "BRAKE_SENSOR",
        "80 %",
        "service-in scooter-17",
        "\"type\":\"header\"",
        "hardware_fault-",
    ] {
        assert!(t.contains(expected), "{expected} missing from {t}");
    }
    let m = broker.slack_metrics();
    eventually("the delivery counted", || {
        m.sent.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(m.depth.load(Ordering::Relaxed), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_429_is_honoured_no_request_comes_before_retry_after_expires() {
    let fake = FakeSlack::start().await;
    fake.script([Reply::RateLimited(1)]);
    let broker = start(&slack_config(&webhook(&fake), "")).await;
    let v = vehicle(&broker, "v-429").await;
    v.error("MOTOR", 1).await.expect("error report");

    let posts = fake
        .wait_until("the retry after the 429", WAIT, |r| {
            r.iter().filter(|r| r.is_post()).count() >= 2
        })
        .await;
    let posts: Vec<&Request> = posts.iter().filter(|r| r.is_post()).collect();
    let waited = posts[1].at.duration_since(posts[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(
        posts[0].key(),
        posts[1].key(),
        "the same message is retried"
    );
    assert_eq!(fake.delivered().len(), 1);
    let m = broker.slack_metrics();
    eventually("the delivery counted", || {
        m.sent.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(m.rate_limited.load(Ordering::Relaxed), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_delivered_once() {
    let fake = FakeSlack::start().await;
    fake.script([Reply::Status(500, "internal_error"), Reply::Status(503, "")]);
    let broker = start(&slack_config(&webhook(&fake), "")).await;
    let v = vehicle(&broker, "v-500").await;
    v.error("MOTOR", 1).await.expect("error report");

    fake.wait_until("delivery after two errors", WAIT, |r| {
        r.iter().any(|r| r.is_post() && r.reply == Reply::Ok)
    })
    .await;
    let posts: Vec<Request> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_post())
        .collect();
    assert_eq!(posts.len(), 3);
    let keys: BTreeSet<Option<String>> = posts.iter().map(Request::key).collect();
    assert_eq!(keys.len(), 1, "one message, one key: {keys:?}");
    // Backoff: 0.5-1 s after the first failure, 1-2 s after the second.
    assert!(posts[1].at.duration_since(posts[0].at) >= Duration::from_millis(500));
    assert!(posts[2].at.duration_since(posts[1].at) >= Duration::from_millis(1000));
    let m = broker.slack_metrics();
    eventually("the delivery counted", || {
        m.sent.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(m.retried.load(Ordering::Relaxed), 2);
    assert_eq!(m.depth.load(Ordering::Relaxed), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_hanging_slack_does_not_stall_the_engine() {
    let fake = FakeSlack::start().await;
    fake.set_default(Reply::Hang);
    let broker = start(&slack_config(&webhook(&fake), "")).await;
    let mut observer = Observer::connect(broker.mqtt_addr(), &["vehicles/+/service"]).await;
    let first = vehicle(&broker, "v-hang-1").await;
    first.error("MOTOR", 1).await.expect("error report");
    fake.wait_until("a request that hangs", WAIT, |r| {
        r.iter().any(Request::is_post)
    })
    .await;

    // While Slack does not answer, other vehicles are still handled at once.
    for i in 2..=5 {
        let v = vehicle(&broker, &format!("v-hang-{i}")).await;
        v.error("MOTOR", 1).await.expect("error report");
        observer
            .wait_for("the fault taking the vehicle out", |s| {
                s.topic == format!("vehicles/v-hang-{i}/service")
                    && s.json["state"] == "out_of_service"
            })
            .await;
    }
    let sli = tokio::time::timeout(WAIT, broker.engine().sli())
        .await
        .expect("the engine answers while Slack hangs")
        .expect("engine running");
    assert_eq!(sli.fleet, 5);

    // Slack answers again: everything is delivered, each vehicle once.
    fake.set_default(Reply::Ok);
    let ids: Vec<String> = (1..=5).map(|i| format!("v-hang-{i}")).collect();
    fake.wait_until("every fault delivered", WAIT, |_| {
        listed(&fake.delivered(), &ids).len() == ids.len()
    })
    .await;
    assert!(listed(&fake.delivered(), &ids).values().all(|n| *n == 1));
    broker.shutdown().await;
}

#[tokio::test]
async fn five_hundred_faults_within_the_group_window_become_exactly_five_messages_of_a_hundred() {
    let fake = FakeSlack::start().await;
    // A window far longer than the burst: a message goes out when it holds 100 vehicles,
    // and 500 faults fill five; a partial one would wait the ten minutes (and the outbox
    // would not drain below).
    let broker = start(&slack_config_grouping(&webhook(&fake), "", "10m")).await;
    let ids: Vec<String> = (0..500).map(|i| format!("burst-{i:03}")).collect();
    let mut vehicles = Vec::new();
    for id in &ids {
        vehicles.push(vehicle(&broker, id).await);
    }
    for v in &vehicles {
        v.error("BATTERY_TEMP", 1).await.expect("error report");
    }
    fake.wait_until(
        "all 500 vehicles in messages",
        Duration::from_secs(30),
        |_| listed(&fake.delivered(), &ids).len() == ids.len(),
    )
    .await;
    let m = broker.slack_metrics();
    eventually("the outbox drained: no partial message waits", || {
        m.depth.load(Ordering::Relaxed) == 0 && m.messages_pending.load(Ordering::Relaxed) == 0
    })
    .await;
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 5, "messages for 500 faults");
    assert_eq!(
        fake.requests().iter().filter(|r| r.is_post()).count(),
        5,
        "every post accepted at the first attempt"
    );
    assert_eq!(m.sent.load(Ordering::Relaxed), 5);
    for (n, message) in delivered.iter().enumerate() {
        assert_eq!(
            listed(std::slice::from_ref(message), &ids).len(),
            100,
            "vehicles in message {n}"
        );
    }
    let counts = listed(&delivered, &ids);
    assert_eq!(counts.len(), 500);
    assert!(
        counts.values().all(|n| *n == 1),
        "each vehicle in exactly one message: {counts:?}"
    );
    let keys: BTreeSet<String> = delivered.iter().filter_map(Request::key).collect();
    assert_eq!(keys.len(), 5, "a key per message: {keys:?}");
    // Dropped, not disconnected one by one (50 ms each: most of the test's time).
    drop(vehicles);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bot_token_posts_to_the_channel_and_threads_the_end_of_an_incident_under_its_start() {
    let fake = FakeSlack::start().await;
    let broker = start(&slack_config(
        &bot(&fake),
        "[heartbeat]\ntimeout = \"1s\"\n\
         [mass_loss]\nfraction = 0.5\nmin_vehicles = 10\nwindow = \"5s\"\n",
    ))
    .await;
    let ids: Vec<String> = (0..12).map(|i| format!("wave-{i:02}")).collect();
    let mut vehicles = Vec::new();
    for id in &ids {
        vehicles.push(vehicle(&broker, id).await);
    }
    // All fall silent: one incident, not twelve vehicles.
    let requests = fake
        .wait_until("the incident message", WAIT, |r| {
            r.iter()
                .any(|r| r.is_post() && text(r).contains("Mass heartbeat loss"))
        })
        .await;
    let start = requests
        .iter()
        .find(|r| r.is_post())
        .expect("incident posted")
        .clone();
    assert_eq!(start.path, "/api/chat.postMessage");
    assert_eq!(start.auth.as_deref(), Some("Bearer xoxb-test-token"));
    assert_eq!(start.body["channel"], "C0FLEET");
    assert_eq!(start.body["metadata"]["event_type"], "fleet_notification");
    assert_eq!(
        start.body["metadata"]["event_payload"]["idempotency_key"].as_str(),
        start.key().as_deref()
    );
    assert!(requests.iter().any(|r| r.path == "/api/auth.test"));

    for v in &vehicles {
        v.heartbeat().await.expect("heartbeat");
    }
    let requests = fake
        .wait_until(
            "the end in the thread and the original updated",
            WAIT,
            |r| r.iter().any(|r| r.path == "/api/chat.update"),
        )
        .await;
    let end = requests
        .iter()
        .find(|r| r.is_post() && text(r).contains("over"))
        .expect("the end is posted");
    // The fake answered the start with ts ...001 (auth.test took none).
    let start_ts = "1795000000.000002";
    assert_eq!(end.body["thread_ts"], start_ts, "{}", text(end));
    let update = requests
        .iter()
        .find(|r| r.path == "/api/chat.update")
        .expect("update");
    assert_eq!(update.body["ts"], start_ts);
    assert!(text(update).contains("Resolved"));
    let posts = requests.iter().filter(|r| r.is_post()).count();
    assert_eq!(posts, 2, "one start, one end: not a message per vehicle");
    broker.shutdown().await;
}

#[tokio::test]
async fn manual_service_changes_are_told_with_who_and_why_in_japanese_when_configured() {
    let fake = FakeSlack::start().await;
    let config = test_config(&format!(
        "[slack]\n{}\ngroup_window = \"300ms\"\nmin_interval = \"20ms\"\nlanguage = \"ja\"\n\
         utc_offset = \"+09:00\"\n",
        webhook(&fake)
    ));
    let broker = start(&config).await;
    let _v = vehicle(&broker, "v-manual").await;
    let engine = broker.engine();
    tokio::time::timeout(WAIT, async {
        while engine.vehicle("v-manual").await.expect("engine").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the vehicle registers");
    engine
        .service_out("v-manual", "ana", "brake check")
        .await
        .expect("engine")
        .expect("service-out");
    engine
        .service_in("v-manual", "ana", "brakes fine")
        .await
        .expect("engine")
        .expect("service-in");
    let requests = fake
        .wait_until("the manual changes", WAIT, |r| {
            r.iter().any(Request::is_post)
        })
        .await;
    let posts: Vec<&Request> = requests.iter().filter(|r| r.is_post()).collect();
    assert_eq!(posts.len(), 1, "both changes in one message");
    let t = text(posts[0]);
    for expected in [
        "ana が `v-manual` を運用停止",
        "brake check",
        "運用に戻しました",
        "brakes fine",
        "UTC+09:00",
    ] {
        assert!(t.contains(expected), "{expected} missing from {t}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_rejected_bot_token_is_reported_at_startup_and_after_the_fix_its_fault_is_delivered_once()
{
    let fake = FakeSlack::start().await;
    fake.set_auth(Reply::ApiError("invalid_auth"));
    fake.set_default(Reply::ApiError("invalid_auth"));
    let config = slack_config(&bot_with_token(&fake, "xoxb-revoked-token"), "");
    let broker = start(&config).await;
    fake.wait_until("the token check", WAIT, |r| {
        r.iter().any(|r| r.path == "/api/auth.test")
    })
    .await;
    let m = broker.slack_metrics();
    eventually("the rejected token shown as failing", || {
        m.failing.load(Ordering::Relaxed) == 1
    })
    .await;

    let v = vehicle(&broker, "v-token").await;
    v.error("MOTOR", 1).await.expect("error report");
    fake.wait_until("an attempt with the bad token", WAIT, |r| {
        r.iter().any(Request::is_post)
    })
    .await;
    // Refused credentials are not a reason to drop: the message waits for a fix.
    eventually("the refusal counted", || {
        m.retried.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(m.gave_up.load(Ordering::Relaxed), 0);
    assert_eq!(m.depth.load(Ordering::Relaxed), 1);
    let metrics = broker.slack_metrics().clone();
    v.disconnect().await;
    broker.shutdown().await;
    assert_eq!(metrics.sent.load(Ordering::Relaxed), 0);

    // The operator puts a working token in the config and restarts the broker on the same
    // store (refused credentials are retried only every minute: no waiting for that).
    fake.set_auth(Reply::Ok);
    fake.set_default(Reply::Ok);
    let mut fixed = slack_config(&bot_with_token(&fake, "xoxb-working-token"), "");
    fixed.store.path = config.store.path.clone();
    let broker = start(&fixed).await;
    fake.wait_until("the waiting fault delivered", WAIT, |r| {
        r.iter().any(|r| r.is_post() && r.reply == Reply::Ok)
    })
    .await;
    let m = broker.slack_metrics();
    eventually("the outbox drained", || {
        m.depth.load(Ordering::Relaxed) == 0 && m.messages_pending.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(m.sent.load(Ordering::Relaxed), 1);
    assert_eq!(m.failing.load(Ordering::Relaxed), 0);

    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    let message = &delivered[0];
    assert_eq!(message.auth.as_deref(), Some("Bearer xoxb-working-token"));
    assert_eq!(
        listed(&delivered, &["v-token".to_owned()]).get("v-token"),
        Some(&1)
    );
    assert!(text(message).contains("MOTOR"), "{}", text(message));
    // The refused attempt and the delivery are one message: one idempotency key.
    let posts: Vec<Request> = fake
        .requests()
        .into_iter()
        .filter(Request::is_post)
        .collect();
    let keys: BTreeSet<Option<String>> = posts.iter().map(Request::key).collect();
    assert_eq!(keys.len(), 1, "one message, one key: {keys:?}");
    assert!(message.key().is_some(), "{}", text(message));
    assert_eq!(
        message.body["metadata"]["event_payload"]["idempotency_key"].as_str(),
        message.key().as_deref()
    );
    assert!(posts[..posts.len() - 1]
        .iter()
        .all(|r| r.auth.as_deref() == Some("Bearer xoxb-revoked-token")));
    broker.shutdown().await;
}
