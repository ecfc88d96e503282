//! The daily digest end to end, on an injected clock: a broker whose clock reads 08:50
//! sees two brake faults and a vehicle taken out by a person, stops; the same store is
//! opened by a broker whose clock reads 08:59:58 with `digest_at = "09:00"`. Two seconds
//! later the digest is computed from the store and posted, and says what happened.

use std::time::Duration;

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::Broker;
use fleet_tests::fake_slack::{FakeSlack, Request};
use fleet_tests::test_config;
use sim_device::{Vehicle, VehicleOptions};

/// 2026-12-01 08:50:00 UTC.
const AT_0850: u64 = 1_796_115_000_000;
const AT_0859_58: u64 = AT_0850 + 9 * 60_000 + 58_000;

fn config(fake: &FakeSlack) -> Config {
    test_config(&format!(
        "[faults.default]\nthreshold = 1\nwindow = \"1m\"\n\
         [slack]\n{}\ngroup_window = \"0s\"\nmin_interval = \"20ms\"\ndigest_at = \"09:00\"\n",
        fake.webhook_lines()
    ))
}

fn text(r: &Request) -> String {
    r.body.to_string()
}

#[tokio::test]
async fn the_digest_is_computed_from_the_store_and_posted_at_its_time_of_day() {
    let fake = FakeSlack::start().await;
    let config = config(&fake);
    let before = Broker::start(&config, Clock::starting_at(AT_0850))
        .await
        .expect("starts");
    let mut vehicles = Vec::new();
    for id in ["d-1", "d-2", "d-3", "d-4"] {
        let v = Vehicle::connect(before.mqtt_addr(), id, VehicleOptions::default())
            .await
            .expect("connects");
        v.heartbeat().await.expect("heartbeat");
        vehicles.push(v);
    }
    for v in &vehicles[..2] {
        v.error("BRAKE_SENSOR", 1).await.expect("error report");
    }
    let out = before
        .engine()
        .service_out("d-3", "ana", "bell broken")
        .await
        .expect("engine answers");
    assert!(out.is_ok(), "{out:?}");
    // Both faults and the manual change reach Slack before the stop.
    fake.wait_until(
        "the fault and manual messages",
        Duration::from_secs(10),
        |r| {
            let t: String = r.iter().filter(|r| r.is_post()).map(text).collect();
            t.contains("`d-1`") && t.contains("`d-2`") && t.contains("`d-3`")
        },
    )
    .await;
    for v in vehicles {
        v.disconnect().await;
    }
    before.shutdown().await;

    let after = Broker::start(&config, Clock::starting_at(AT_0859_58))
        .await
        .expect("restarts on the same store");
    let seen = fake
        .wait_until("the digest", Duration::from_secs(10), |r| {
            r.iter()
                .any(|r| text(r).contains("Fleet reliability, day ending"))
        })
        .await;
    let digest = seen
        .iter()
        .find(|r| text(r).contains("Fleet reliability, day ending"))
        .map(text)
        .expect("a digest");
    // (The downtime burns the budget: SLO alerts may be posted too.)
    let digests = fake
        .delivered()
        .iter()
        .filter(|r| r.key().is_some_and(|k| k.starts_with("digest-")))
        .count();
    assert_eq!(digests, 1, "one digest");
    assert!(
        digest.contains("day ending 2026-12-01 09:00:"),
        "dated by the injected clock: {digest}"
    );
    for said in [
        "2 hardware fault(s): BRAKE_SENSOR 2",
        "1 taken out by people",
        "Worst hour:* from 2026-12-01 08:00:00 UTC",
        "Broker downtime:*",
    ] {
        assert!(digest.contains(said), "{said:?} missing from {digest}");
    }
    assert!(!digest.contains("went silent"), "{digest}");
    // Down from the stop (08:50:0x) to the restart (08:59:58): just under ten minutes.
    let downtime: u64 = digest
        .split("Broker downtime:* ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|secs| secs.parse().ok())
        .expect("downtime in seconds");
    assert!((585..=600).contains(&downtime), "downtime {downtime}s");
    // The restored fleet was counted out for the downtime: a tiny share in service.
    let share: f64 = digest
        .split("In service over the last 24 hours:* ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pct| pct.parse().ok())
        .expect("the day's share");
    assert!(share < 5.0, "{share} % in service");
    after.shutdown().await;
}
