//! Restarts: state comes back from the store, in-service vehicles get the restart grace
//! counted from startup (nobody is evicted in the meantime), faults, maintenance and
//! decommissionings survive, the retained service state is published again, and the SLI
//! history goes on with the broker's downtime reported as such. Each on a SQLite file and
//! on PostgreSQL.

use std::time::Duration;

use fleet_broker::clock::Clock;
use fleet_broker::Broker;
use fleet_rules::{Reason, ServiceState};
use fleet_tests::postgres::Postgres;
use fleet_tests::{test_config, Observer, WAIT};
use sim_device::{Vehicle, VehicleOptions};

const TIMEOUT_S: u64 = 2;
/// How long the broker was "down": the second broker's clock starts this much later.
const DOWN: Duration = Duration::from_secs(600);

fn config() -> fleet_broker::config::Config {
    test_config(&format!(
        "[heartbeat]\ntimeout = \"{TIMEOUT_S}s\"\n\
         [faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n"
    ))
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn kinds(reasons: &[Reason]) -> Vec<&'static str> {
    reasons
        .iter()
        .map(|r| match r {
            Reason::HeartbeatLost { .. } => "heartbeat_lost",
            Reason::HardwareFault { .. } => "hardware_fault",
            Reason::JourneyFailures { .. } => "journey_failures",
            Reason::Maintenance { .. } => "maintenance",
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_faults_and_maintenance_and_evicts_nobody_during_the_grace() {
    restart_keeps_faults_and_maintenance(config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_restart_keeps_faults_and_maintenance_and_evicts_nobody() {
    let Some(pg) = Postgres::start() else { return };
    restart_keeps_faults_and_maintenance(on_postgres(&pg)).await;
}

/// The test config with the store in `pg`.
fn on_postgres(pg: &Postgres) -> fleet_broker::config::Config {
    let mut config = config();
    config.store.url = Some(pg.url());
    config.validate().expect("valid");
    config
}

async fn restart_keeps_faults_and_maintenance(config: fleet_broker::config::Config) {
    let first_clock = Clock::system();
    let broker = Broker::start(&config, first_clock).await.expect("starts");
    let addr = broker.mqtt_addr();
    let mut vehicles = Vec::new();
    for id in ["fine-1", "fine-2", "fine-3", "faulty", "maint", "gone"] {
        let v = Vehicle::connect(addr, id, VehicleOptions::default())
            .await
            .expect("vehicle connects");
        v.heartbeat().await.expect("heartbeat");
        vehicles.push(v);
    }
    vehicles[3]
        .error("BRAKE_SENSOR", 1)
        .await
        .expect("error report");
    wait_until("all six registered and faulty out", || async {
        let views = broker.engine().vehicles(None).await.expect("engine");
        views.len() == 6
            && views
                .iter()
                .any(|v| v.id == "faulty" && v.state == ServiceState::OutOfService)
    })
    .await;
    broker
        .engine()
        .service_out("maint", "ana", "bell rings")
        .await
        .expect("engine")
        .expect("taken out");
    broker
        .engine()
        .decommission("gone", "ana")
        .await
        .expect("engine")
        .expect("decommissioned");
    broker.shutdown().await;
    for v in vehicles {
        v.disconnect().await;
    }

    // Ten minutes later (on the broker's clock): every vehicle's deadline has long passed.
    let later = Clock::starting_at(first_clock.now() + DOWN.as_millis() as u64);
    let broker = Broker::start(&config, later).await.expect("restarts");
    let addr = broker.mqtt_addr();
    let mut events = Observer::connect(addr, &["fleet/events"]).await;
    let mut retained = Observer::connect(addr, &["vehicles/+/service"]).await;

    let view = |id: &'static str| {
        let engine = broker.engine().clone();
        async move { engine.vehicle(id).await.expect("engine") }
    };
    let faulty = view("faulty").await.expect("faulty restored");
    assert_eq!(kinds(&faulty.reasons), ["hardware_fault"]);
    let maint = view("maint").await.expect("maint restored");
    assert_eq!(kinds(&maint.reasons), ["maintenance"]);
    assert!(
        matches!(&maint.reasons[0], Reason::Maintenance { by, note, .. } if by == "ana" && note == "bell rings")
    );
    assert!(view("gone").await.is_none());
    for id in ["fine-1", "fine-2", "fine-3"] {
        assert_eq!(
            view(id).await.expect("restored").state,
            ServiceState::InService
        );
    }

    // The retained state is published again: the first observer may get it live (it
    // subscribed while the republish ran), a later one gets it retained.
    let faulty_state = retained
        .wait_for("faulty's state", |s| s.topic == "vehicles/faulty/service")
        .await;
    assert_eq!(faulty_state.json["state"], "out_of_service");
    let mut late = Observer::connect(addr, &["vehicles/faulty/service"]).await;
    let faulty_state = late
        .wait_for("faulty's retained state", |s| {
            s.topic == "vehicles/faulty/service"
        })
        .await;
    assert!(faulty_state.retain);
    assert_eq!(faulty_state.json["reasons"][0]["code"], "BRAKE_SENSOR");

    // A decommissioned id stays refused: its heartbeat registers nothing.
    let gone = Vehicle::connect(addr, "gone", VehicleOptions::default())
        .await
        .expect("connects");
    gone.heartbeat().await.expect("heartbeat");

    // Within the grace (the timeout, from startup) nobody is evicted.
    let during = events
        .collect_for(Duration::from_millis(TIMEOUT_S * 1000 - 700))
        .await;
    assert!(
        during
            .iter()
            .all(|s| s.json["reason"]["kind"] != "heartbeat_lost"),
        "evicted during the restart grace: {:?}",
        during.iter().map(|s| &s.json).collect::<Vec<_>>()
    );
    assert!(
        view("gone").await.is_none(),
        "a decommissioned id came back"
    );

    // After it, the silent vehicles go out as usual; the faulted one stays out.
    for id in ["fine-1", "fine-2", "fine-3"] {
        events
            .wait_for("heartbeat_lost after the grace", |s| {
                s.json["vehicle"] == id && s.json["reason"]["kind"] == "heartbeat_lost"
            })
            .await;
    }
    let faulty = view("faulty").await.expect("faulty");
    assert!(kinds(&faulty.reasons).contains(&"hardware_fault"));

    // The SLI history went on, and the ten minutes down are reported as downtime.
    let sli = broker.engine().sli().await.expect("engine");
    assert!(
        sli.downtime_ms >= DOWN.as_millis() as u64 - 2_000
            && sli.downtime_ms <= DOWN.as_millis() as u64 + 2_000,
        "downtime {} ms",
        sli.downtime_ms
    );
    assert!(
        sli.window_sli < 0.5,
        "the downtime counts as bad by default: {}",
        sli.window_sli
    );
    gone.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_publishes_its_sli_with_the_downtime() {
    restarted_broker_publishes_its_sli_with_the_downtime(config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_restarted_broker_publishes_its_sli_with_the_downtime() {
    let Some(pg) = Postgres::start() else { return };
    restarted_broker_publishes_its_sli_with_the_downtime(on_postgres(&pg)).await;
}

async fn restarted_broker_publishes_its_sli_with_the_downtime(
    config: fleet_broker::config::Config,
) {
    let clock = Clock::system();
    let broker = Broker::start(&config, clock).await.expect("starts");
    let v = Vehicle::connect(broker.mqtt_addr(), "v1", VehicleOptions::default())
        .await
        .expect("connects");
    v.heartbeat().await.expect("heartbeat");
    wait_until("v1 registered", || async {
        broker
            .engine()
            .vehicle("v1")
            .await
            .expect("engine")
            .is_some()
    })
    .await;
    broker.shutdown().await;
    v.disconnect().await;

    let mut excluded = config.clone();
    excluded.slo.downtime_counts_as_bad = false;
    let later = Clock::starting_at(clock.now() + DOWN.as_millis() as u64);
    let broker = Broker::start(&excluded, later).await.expect("restarts");
    let mut sli = Observer::connect(broker.mqtt_addr(), &["fleet/sli"]).await;
    let seen = sli.wait_for("fleet/sli", |s| s.topic == "fleet/sli").await;
    let downtime = seen.json["downtime_ms"]
        .as_u64()
        .expect("downtime_ms in fleet/sli");
    assert!(downtime >= DOWN.as_millis() as u64 - 2_000, "{downtime}");
    assert_eq!(seen.json["fleet"], 1);
    // Excluded: the gap neither helps nor hurts the SLI.
    assert_eq!(seen.json["window_sli"], 1.0);
    broker.shutdown().await;

    // A second outage adds up with the first: the history kept the first one.
    let again = Clock::starting_at(later.now() + DOWN.as_millis() as u64);
    let broker = Broker::start(&excluded, again)
        .await
        .expect("restarts again");
    let sli = broker.engine().sli().await.expect("engine");
    let twice = 2 * DOWN.as_millis() as u64;
    assert!(
        sli.downtime_ms >= twice - 2_000 && sli.downtime_ms <= twice + 2_000,
        "{}",
        sli.downtime_ms
    );
    broker.shutdown().await;
}
