//! An incident that ends after a restart is answered in its own Slack thread: the broker
//! stores what is open, a restart goes on with the same incident, and its end is posted
//! under the start's message (bot token), which is marked resolved.

use std::time::Duration;

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::Broker;
use fleet_tests::fake_slack::{FakeSlack, Request};
use fleet_tests::{fresh_store_path, test_config};
use sim_device::{Vehicle, VehicleOptions};
use tokio::task::JoinHandle;

fn config(fake: &FakeSlack, store: &std::path::Path) -> Config {
    let mut c = test_config(&format!(
        "[heartbeat]\ntimeout = \"1s\"\n\
         [mass_loss]\nfraction = 0.5\nmin_vehicles = 2\nwindow = \"1m\"\n\
         [slack]\n{}\ngroup_window = \"0s\"\nmin_interval = \"20ms\"\n",
        fake.bot_lines()
    ));
    c.store.path = store.to_owned();
    c
}

async fn connect(broker: &Broker, id: &str) -> Vehicle {
    let v = Vehicle::connect(broker.mqtt_addr(), id, VehicleOptions::default())
        .await
        .expect("connects");
    v.heartbeat().await.expect("heartbeat");
    v
}

/// Heartbeats every 200 ms until aborted.
fn keep_talking(v: Vehicle) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if v.heartbeat().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn says(r: &Request, what: &str) -> bool {
    r.path == "/api/chat.postMessage" && r.body.to_string().contains(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_that_ends_after_a_restart_is_answered_in_the_thread_of_its_start() {
    let fake = FakeSlack::start().await;
    let store = fresh_store_path();
    let before = Broker::start(&config(&fake, &store), Clock::system())
        .await
        .expect("starts");
    let talker = keep_talking(connect(&before, "t-alive").await);
    let mut silent = Vec::new();
    for id in ["t-b", "t-c", "t-d"] {
        silent.push(connect(&before, id).await);
    }
    let started = fake
        .wait_until("the incident's start", Duration::from_secs(15), |r| {
            r.iter().any(|r| says(r, "Mass heartbeat loss"))
        })
        .await;
    let start = started
        .iter()
        .find(|r| says(r, "Mass heartbeat loss"))
        .expect("start")
        .clone();
    talker.abort();
    for v in silent.drain(..) {
        v.disconnect().await;
    }
    before.shutdown().await;

    let after = Broker::start(&config(&fake, &store), Clock::system())
        .await
        .expect("restarts on the same store");
    let talker = keep_talking(connect(&after, "t-alive").await);
    for id in ["t-b", "t-c", "t-d"] {
        silent.push(connect(&after, id).await);
    }
    let seen = fake
        .wait_until("the incident's end", Duration::from_secs(15), |r| {
            r.iter().any(|r| says(r, "over")) && r.iter().any(|r| r.path == "/api/chat.update")
        })
        .await;
    let starts: Vec<&Request> = seen
        .iter()
        .filter(|r| says(r, "Mass heartbeat loss:"))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "one incident, not a second one after the restart"
    );
    let end = seen.iter().find(|r| says(r, "over")).expect("the end");
    assert_eq!(
        end.body["thread_ts"].as_str(),
        Some(start.ts.as_str()),
        "the end is posted in the start's thread"
    );
    let update = seen
        .iter()
        .find(|r| r.path == "/api/chat.update")
        .expect("the update");
    assert_eq!(update.body["ts"].as_str(), Some(start.ts.as_str()));
    talker.abort();
    for v in silent {
        v.disconnect().await;
    }
    after.shutdown().await;
}
