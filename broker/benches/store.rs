//! Store benchmark (reported, not asserted): startup with a million stored vehicles, and
//! how many transitions per second the writer commits.
//!
//! `cargo bench -p fleet-broker --bench store` (set `STORE_BENCH_VEHICLES` for another
//! fleet size, `STORE_BENCH_POSTGRES` to an empty PostgreSQL database's URL to measure
//! that store too). Prints one line per figure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

// The workspace bans std's Instant::now (time is injected in the product); tokio's is the
// same monotonic clock here.
use tokio::time::Instant;

use fleet_broker::clock::Clock;
use fleet_broker::config::Config;
use fleet_broker::store::{
    recover, spawn_writer, Location, Record, Store, StoreBatch, StoreMetrics, StoreOptions,
    Synchronous,
};
use fleet_broker::Broker;
use fleet_rules::{
    Cause, Reason, ReasonChange, RulesConfig, ServiceState, SliMinute, Transition, UnixMs,
};
use tokio::sync::mpsc;

const T0: UnixMs = 1_700_000_000_000;

fn fault_transition(vehicle: String, code: &str, at: UnixMs) -> Record {
    let reason = Reason::HardwareFault {
        code: code.into(),
        since: at,
    };
    // The fleet/events payload the engine stores with each transition, at its usual size.
    let event = format!(
        "{{\"vehicle\":\"{vehicle}\",\"from\":\"in_service\",\"to\":\"out_of_service\",\
         \"change\":\"set\",\"reason\":{{\"kind\":\"hardware_fault\",\"code\":\"{code}\",\"since\":{at}}},\
         \"reasons\":[{{\"kind\":\"hardware_fault\",\"code\":\"{code}\",\"since\":{at}}}],\
         \"cause\":{{\"by\":\"rule\"}},\"at\":{at},\
         \"mds\":{{\"event_types\":[\"maintenance\"],\"vehicle_state\":\"non_operational\"}},\"epoch\":3}}"
    );
    Record::Transition(
        Transition {
            vehicle,
            from: ServiceState::InService,
            to: ServiceState::OutOfService,
            change: ReasonChange::Set(reason.clone()),
            reasons: vec![reason],
            cause: Cause::Rule,
            at,
        },
        Some(event),
    )
}

/// A database with `n` vehicles (1 in 50 out for a fault), 30 days of SLI minutes.
fn populate(opts: &StoreOptions, n: usize) -> Duration {
    let started = Instant::now();
    let mut store = Store::open(opts).expect("store opens");
    let chunk = 50_000;
    for start in (0..n).step_by(chunk) {
        let mut records = Vec::with_capacity(chunk + chunk / 50);
        for i in start..(start + chunk).min(n) {
            let id = format!("scooter-{i:07}");
            records.push(Record::Registered {
                vehicle: id.clone(),
                at: T0,
            });
            if i % 50 == 0 {
                records.push(fault_transition(id, "BRAKE_SENSOR", T0 + 1));
            }
        }
        store.apply(&records).expect("stored");
    }
    let minutes: Vec<SliMinute> = (0..43_200u64)
        .map(|m| SliMinute {
            minute: T0 / 60_000 - 43_200 + m,
            good: 59_000_000_000,
            valid: 60_000_000_000,
            down_ms: 0,
        })
        .collect();
    store
        .apply(&[Record::Sli {
            minutes,
            saved_to: T0,
            keep_from: 0,
        }])
        .expect("sli stored");
    store.checkpoint().expect("checkpoint");
    started.elapsed()
}

fn startup(opts: &StoreOptions) {
    let started = Instant::now();
    let mut store = Store::open(opts).expect("store opens");
    let opened = started.elapsed();
    let restored = store.load(0).expect("loads");
    let loaded = started.elapsed();
    let vehicles = restored.vehicles.len();
    let recovery = recover(RulesConfig::default(), restored, None, T0 + 60_000, true);
    let total = started.elapsed();
    println!(
        "{} startup, store only: {vehicles} vehicles: open + check + migrate {:.0} ms, load {:.0} ms, Fleet::restore {:.0} ms, total {:.2} s ({} out of service)",
        backend(opts),
        opened.as_secs_f64() * 1e3,
        (loaded - opened).as_secs_f64() * 1e3,
        (total - loaded).as_secs_f64() * 1e3,
        total.as_secs_f64(),
        recovery.out_of_service,
    );
}

fn broker_startup(path: &std::path::Path) {
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
        path.display()
    );
    let config = Config::parse(&text).expect("config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let broker = Broker::start(&config, Clock::system())
            .await
            .expect("broker starts");
        let up = started.elapsed();
        let n = broker.engine().sli().await.map(|s| s.fleet).unwrap_or(0);
        println!(
            "startup, whole broker (Broker::start until listening, engine running): {:.2} s, fleet {n}",
            up.as_secs_f64()
        );
        // The retained service state goes out again in the background, in chunks.
        let deadline = started + Duration::from_secs(300);
        while broker.mqtt_stats().retained_messages < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "startup, retained state of {} vehicles republished after {:.2} s",
            broker.mqtt_stats().retained_messages.saturating_sub(1),
            started.elapsed().as_secs_f64()
        );
        broker.shutdown().await;
    });
}

/// Which database, for the report.
fn backend(opts: &StoreOptions) -> &'static str {
    match opts.location {
        Location::File(_) => "sqlite",
        Location::Postgres(_) => "postgres",
    }
}

/// Transitions per second through the writer thread, in batches of `per_batch`.
fn throughput(opts: &StoreOptions, per_batch: usize, total: usize) {
    let sync = opts.synchronous;
    let store = Store::open(opts).expect("store opens");
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(fleet_broker::store::STORE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<fleet_broker::engine::Outbound>(8192);
    let drain = std::thread::spawn(move || while out_rx.blocking_recv().is_some() {});
    let writer = spawn_writer(store, batch_rx, out_tx, metrics.clone()).expect("writer");
    let started = Instant::now();
    let mut i = 0;
    while i < total {
        let records = (i..(i + per_batch).min(total))
            .map(|k| fault_transition(format!("v{}", k % 10_000), &format!("E{k}"), T0 + k as u64))
            .collect::<Vec<_>>();
        i += records.len();
        batch_tx
            .blocking_send(StoreBatch {
                records,
                ..StoreBatch::default()
            })
            .expect("queued");
    }
    drop(batch_tx);
    writer.join();
    let elapsed = started.elapsed();
    let _ = drain.join();
    println!(
        "{} write throughput, synchronous={sync:?}, {per_batch} transition(s) per engine batch: {:.0} transitions/s ({total} in {:.2} s, {} commits)",
        backend(opts),
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        metrics.commits.load(Ordering::Relaxed),
    );
}

/// One transition at a time, each waiting for its commit (and fsync): the latency bound.
fn commit_latency(opts: &StoreOptions, total: usize) {
    let sync = opts.synchronous;
    let store = Store::open(opts).expect("store opens");
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(fleet_broker::store::STORE_QUEUE);
    let (out_tx, _out_rx) = mpsc::channel::<fleet_broker::engine::Outbound>(8192);
    let writer = spawn_writer(store, batch_rx, out_tx, metrics).expect("writer");
    let started = Instant::now();
    for k in 0..total {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        batch_tx
            .blocking_send(StoreBatch {
                records: vec![fault_transition(format!("v{k}"), "E", T0)],
                outbound: Vec::new(),
                after: vec![Box::new(move || {
                    let _ = done_tx.send(());
                })],
            })
            .expect("queued");
        done_rx.recv().expect("committed");
    }
    let elapsed = started.elapsed();
    drop(batch_tx);
    writer.join();
    println!(
        "{} commit latency, synchronous={sync:?}, one transition per commit, waiting for each: {:.2} ms per commit ({:.0} commits/s)",
        backend(opts),
        elapsed.as_secs_f64() * 1e3 / total as f64,
        total as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let n: usize = std::env::var("STORE_BENCH_VEHICLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.db");
    let file = |name: &str, synchronous| StoreOptions {
        location: Location::File(dir.path().join(name)),
        synchronous,
        fence: None,
    };
    let opts = file("fleet.db", Synchronous::Full);
    let took = populate(&opts, n);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "populate: {n} vehicles + 43,200 SLI minutes in {:.1} s ({:.0} vehicles/s), file {:.0} MB",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        size as f64 / 1e6
    );
    startup(&opts);
    startup(&opts);
    broker_startup(&path);
    for sync in [Synchronous::Full, Synchronous::Normal] {
        commit_latency(&file(&format!("latency-{sync:?}.db"), sync), 2000);
        for per_batch in [1, 16, 512] {
            let name = format!("throughput-{sync:?}-{per_batch}.db");
            throughput(&file(&name, sync), per_batch, 100_000);
        }
    }
    // The same on PostgreSQL, when given an empty database to fill.
    let Ok(url) = std::env::var("STORE_BENCH_POSTGRES") else {
        println!("postgres: set STORE_BENCH_POSTGRES=postgres://... (an empty database) to measure it too");
        return;
    };
    let pg = |synchronous| StoreOptions {
        location: Location::Postgres(url.clone()),
        synchronous,
        fence: None,
    };
    let took = populate(&pg(Synchronous::Full), n);
    println!(
        "postgres populate: {n} vehicles + 43,200 SLI minutes in {:.1} s ({:.0} vehicles/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
    );
    startup(&pg(Synchronous::Full));
    startup(&pg(Synchronous::Full));
    for sync in [Synchronous::Full, Synchronous::Normal] {
        commit_latency(&pg(sync), 2000);
        for per_batch in [1, 16, 512] {
            throughput(&pg(sync), per_batch, 100_000);
        }
    }
}
