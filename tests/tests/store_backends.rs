//! The store against both of its databases: every scenario here runs on a SQLite file in a
//! temporary directory and on a fresh PostgreSQL 15 cluster (Debian's package; missing
//! PostgreSQL fails under CI). What is written comes back on load, the logs read back as
//! they were written, the writer announces in order; and what only PostgreSQL does: one
//! broker per database, a writer that holds its announcements while the server is down
//! and delivers them once it is back, and writes fenced by the leader lease's epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_broker::ha::PgLease;
use fleet_broker::store::{
    recover, spawn_writer, Fence, IncidentChange, Location, Record, Store, StoreBatch, StoreError,
    StoreMetrics, StoreOptions, StoreReader, Synchronous, STORE_QUEUE,
};
use fleet_rules::{
    Cause, Command, CommandKind, Reason, ReasonChange, ServiceState, SliMinute, Transition,
};
use fleet_tests::postgres::Postgres;
use tokio::sync::mpsc;

const T0: u64 = 1_700_000_000_000;

/// Runs `scenario` on a new SQLite file, then on a new PostgreSQL cluster.
fn on_both(scenario: fn(&StoreOptions)) {
    let dir = tempfile::tempdir().expect("tempdir");
    scenario(&StoreOptions {
        location: Location::File(dir.path().join("data").join("fleet.db")),
        synchronous: Synchronous::Normal,
        fence: None,
    });
    if let Some(pg) = Postgres::start() {
        scenario(&postgres(&pg));
    }
}

fn postgres(pg: &Postgres) -> StoreOptions {
    StoreOptions {
        location: Location::Postgres(pg.url()),
        synchronous: Synchronous::Full,
        fence: None,
    }
}

fn transition(
    vehicle: &str,
    change: ReasonChange,
    reasons: Vec<Reason>,
    cause: Cause,
    at: u64,
) -> Record {
    let to = if reasons.is_empty() {
        ServiceState::InService
    } else {
        ServiceState::OutOfService
    };
    Record::Transition(
        Transition {
            vehicle: vehicle.into(),
            from: ServiceState::InService,
            to,
            change,
            reasons,
            cause,
            at,
        },
        None,
    )
}

fn fault(code: &str, since: u64) -> Reason {
    Reason::HardwareFault {
        code: code.into(),
        since,
    }
}

fn view(
    id: &str,
    last_seen: u64,
    model: Option<&str>,
    counts: &[(&str, u64)],
) -> fleet_rules::VehicleView {
    fleet_rules::VehicleView {
        id: id.into(),
        state: ServiceState::InService,
        reasons: Vec::new(),
        last_seen,
        model: model.map(str::to_owned),
        reported: None,
        battery: None,
        held: false,
        error_counts: counts.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
    }
}

#[test]
fn what_is_written_comes_back_on_load_on_both() {
    on_both(what_is_written_comes_back_on_load);
}

#[test]
fn the_command_log_records_sends_and_acks_of_the_right_vehicle_only_on_both() {
    on_both(the_command_log_records_sends_and_acks_of_the_right_vehicle_only);
}

#[test]
fn the_writer_announces_batches_in_order_and_flushes_at_the_end_on_both() {
    on_both(the_writer_announces_batches_in_order_and_flushes_at_the_end);
}

#[test]
fn a_restart_accounts_the_gap_since_the_last_save_as_downtime_on_both() {
    on_both(a_restart_accounts_the_gap_since_the_last_save_as_downtime);
}

#[test]
fn after_a_crash_the_last_announcements_come_back_to_be_published_again_on_both() {
    on_both(after_a_crash_the_last_announcements_come_back_to_be_published_again);
}

#[test]
fn the_incident_log_keeps_each_incident_with_its_end_and_the_open_one_too_on_both() {
    on_both(the_incident_log_keeps_each_incident_with_its_end_and_the_open_one_too);
}

#[test]
fn a_postgres_database_in_use_by_another_broker_is_refused_until_it_stops() {
    let Some(pg) = Postgres::start() else { return };
    let opts = postgres(&pg);
    let first = Store::open(&opts).expect("opens");
    let err = Store::open(&opts).expect_err("in use");
    assert!(matches!(err, StoreError::PostgresInUse { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("another running fleet-broker"),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1:"),
        "names the server: {message}"
    );
    drop(first);
    Store::open(&opts).expect("free again");
}

#[test]
fn a_postgres_url_nobody_answers_is_a_clear_error_without_the_password() {
    let port = fleet_tests::upstream::free_port();
    let err = Store::open(&StoreOptions {
        location: Location::Postgres(format!(
            "postgres://fleet:s3cret@127.0.0.1:{port}/fleet?connect_timeout=2"
        )),
        synchronous: Synchronous::Full,
        fence: None,
    })
    .expect_err("nobody listens");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Postgres { .. }), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("[store] url"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn a_fenced_postgres_store_writes_and_announces_only_while_its_node_leads_with_that_epoch() {
    let Some(pg) = Postgres::start() else { return };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lease = |node: &str| {
        runtime
            .block_on(PgLease::open(
                &pg.url(),
                node,
                "http://ops.example",
                fleet_tests::WAIT,
            ))
            .expect("lease table")
    };
    let (a, b) = (lease("a"), lease("b"));
    let ttl = Duration::from_secs(60);
    let first = runtime
        .block_on(a.acquire(0, ttl))
        .expect("acquire")
        .expect("a leads");
    let fenced = |node: &str, epoch: &Arc<AtomicU64>| StoreOptions {
        location: Location::Postgres(pg.url()),
        synchronous: Synchronous::Full,
        fence: Some(Fence {
            node: node.to_owned(),
            epoch: epoch.clone(),
        }),
    };
    let epoch_a = Arc::new(AtomicU64::new(first));
    let store = Store::open(&fenced("a", &epoch_a)).expect("opens");
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(STORE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let writer = spawn_writer(store, batch_rx, out_tx, metrics.clone()).expect("writer");
    let batch = |vehicle: &str, announce: &str| StoreBatch {
        records: vec![Record::Registered {
            vehicle: vehicle.to_owned(),
            at: T0,
        }],
        outbound: vec![announce.to_owned()],
        after: Vec::new(),
    };
    batch_tx
        .blocking_send(batch("v1", "first term"))
        .expect("queued");
    assert_eq!(out_rx.blocking_recv().as_deref(), Some("first term"));

    // a's term ends and b takes over, while a still believes it leads with its epoch.
    assert!(runtime.block_on(a.release(first)).expect("release"));
    let second = runtime
        .block_on(b.acquire(0, ttl))
        .expect("acquire")
        .expect("b leads");
    assert_eq!(second, first + 1);
    batch_tx.blocking_send(batch("v2", "late")).expect("queued");
    drop(batch_tx);
    writer.join();
    assert_eq!(out_rx.try_recv().ok(), None, "a deposed writer announced");
    assert_eq!(metrics.fenced_batches.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.failing.load(Ordering::Relaxed), 0);

    // The new leader writes, unhindered by the old one's session.
    let epoch_b = Arc::new(AtomicU64::new(second));
    let mut store_b = Store::open(&fenced("b", &epoch_b)).expect("b opens");
    store_b
        .apply(&[Record::Registered {
            vehicle: "v3".into(),
            at: T0,
        }])
        .expect("b writes");
    // An engine that knows it does not lead (epoch 0) is refused without asking.
    epoch_a.store(0, Ordering::Release);
    let mut store_a = Store::open(&fenced("a", &epoch_a)).expect("a opens");
    let refused = store_a.apply(&[Record::Registered {
        vehicle: "v4".into(),
        at: T0,
    }]);
    assert!(
        matches!(refused, Err(StoreError::Deposed { epoch: 0 })),
        "{refused:?}"
    );
    let mut ids: Vec<String> = store_b
        .load(0)
        .expect("loads")
        .vehicles
        .into_iter()
        .map(|v| v.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["v1", "v3"]);
}

#[test]
fn a_postgres_writer_holds_its_announcements_while_the_server_is_down_and_delivers_them_after() {
    let Some(pg) = Postgres::start() else { return };
    let opts = postgres(&pg);
    let store = Store::open(&opts).expect("opens");
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(STORE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let writer = spawn_writer(store, batch_rx, out_tx, metrics.clone()).expect("writer");
    let registered = |i: usize| Record::Registered {
        vehicle: format!("v{i}"),
        at: T0,
    };
    batch_tx
        .blocking_send(StoreBatch {
            records: vec![registered(0)],
            outbound: vec!["before".to_owned()],
            after: Vec::new(),
        })
        .expect("queued");
    assert_eq!(out_rx.blocking_recv().as_deref(), Some("before"));

    pg.stop();
    batch_tx
        .blocking_send(StoreBatch {
            records: (1..=100).map(registered).collect(),
            outbound: vec!["during".to_owned()],
            after: Vec::new(),
        })
        .expect("queued");
    let failed = || {
        metrics.write_errors.load(Ordering::Relaxed) >= 2
            && metrics.failing.load(Ordering::Relaxed) == 1
    };
    let mut polls = 0;
    while !failed() {
        polls += 1;
        assert!(polls < 1_000, "no failing write within 10 s: {metrics:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(out_rx.try_recv().is_err(), "announced before it was stored");

    pg.start_again();
    let delivered = std::thread::spawn(move || {
        let m = out_rx.blocking_recv();
        (m, out_rx)
    });
    let mut polls = 0;
    while !delivered.is_finished() {
        polls += 1;
        assert!(
            polls < 2_000,
            "not delivered within 20 s of the server's return"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (m, _out_rx) = delivered.join().expect("receiver thread");
    assert_eq!(m.as_deref(), Some("during"));
    assert_eq!(metrics.failing.load(Ordering::Relaxed), 0);
    drop(batch_tx);
    writer.join();
    let mut store = Store::open(&opts).expect("reopens");
    assert_eq!(store.load(0).expect("loads").vehicles.len(), 101);
}

fn what_is_written_comes_back_on_load(opts: &StoreOptions) {
    let mut store = Store::open(opts).expect("opens");
    let maintenance = Reason::Maintenance {
        by: "ana".into(),
        note: "bell".into(),
        since: T0 + 3,
    };
    // The journey's failure count is kept with it.
    let unlock = Reason::JourneyFailures {
        journey: "unlock".into(),
        failures: 3,
        since: T0 + 3,
    };
    store
        .apply(&[
            Record::Registered {
                vehicle: "a".into(),
                at: T0,
            },
            Record::Registered {
                vehicle: "b".into(),
                at: T0,
            },
            Record::Registered {
                vehicle: "gone".into(),
                at: T0,
            },
            transition(
                "a",
                ReasonChange::Set(fault("BRAKE", T0 + 1)),
                vec![fault("BRAKE", T0 + 1)],
                Cause::Rule,
                T0 + 1,
            ),
            transition(
                "a",
                ReasonChange::Set(maintenance.clone()),
                vec![fault("BRAKE", T0 + 1), maintenance.clone()],
                Cause::Operator {
                    name: "ana".into(),
                    note: "bell".into(),
                },
                T0 + 3,
            ),
            transition(
                "a",
                ReasonChange::Set(unlock.clone()),
                vec![fault("BRAKE", T0 + 1), unlock.clone(), maintenance.clone()],
                Cause::Rule,
                T0 + 3,
            ),
            transition(
                "gone",
                ReasonChange::Decommissioned,
                vec![],
                Cause::Operator {
                    name: "bo".into(),
                    note: String::new(),
                },
                T0 + 4,
            ),
            Record::Seen(vec![view("b", T0 + 9, Some("e-bike"), &[("MOTOR", 4)])]),
            Record::Sli {
                minutes: vec![SliMinute {
                    minute: T0 / 60_000,
                    good: 10,
                    valid: 12,
                    down_ms: 0,
                }],
                saved_to: T0 + 10,
                keep_from: 0,
            },
            Record::JourneySli {
                minutes: vec![fleet_rules::JourneyMinute {
                    journey: "unlock".into(),
                    minute: T0 / 60_000,
                    good: 7,
                    valid: 9,
                }],
                keep_from: 0,
            },
        ])
        .expect("stored");
    drop(store);
    let mut store = Store::open(opts).expect("opens again");
    let restored = store.load(0).expect("loads");
    assert_eq!(
        restored
            .journey_minutes
            .iter()
            .map(|m| (m.journey.as_str(), m.good, m.valid))
            .collect::<Vec<_>>(),
        [("unlock", 7, 9)]
    );
    let mut vehicles = restored.vehicles.clone();
    vehicles.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(vehicles.len(), 2);
    assert_eq!(vehicles[0].id, "a");
    let mut reasons = vehicles[0].reasons.clone();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(reasons, vec![fault("BRAKE", T0 + 1), unlock, maintenance]);
    assert_eq!(vehicles[1].id, "b");
    assert_eq!(vehicles[1].model.as_deref(), Some("e-bike"));
    assert_eq!(vehicles[1].last_seen, T0 + 9);
    assert!(vehicles[1].reasons.is_empty());
    assert_eq!(
        restored.error_counts,
        vec![("b".to_string(), vec![("MOTOR".to_string(), 4)])]
    );
    assert_eq!(restored.decommissioned, vec!["gone".to_string()]);
    assert_eq!(restored.sli.len(), 1);
    assert_eq!(restored.sli_saved_to, Some(T0 + 10));
    assert_eq!(restored.stopped_at, None);

    let reader = StoreReader::open(store.location()).expect("reader");
    let log = reader.transitions(Some("a"), 10).expect("log");
    assert_eq!(log.len(), 3);
    assert_eq!(
        log[0].reason.as_ref().and_then(|r| r["kind"].as_str()),
        Some("journey_failures")
    );
    assert_eq!(log[1].change, "set");
    assert_eq!(log[1].cause, "operator");
    assert_eq!(log[1].operator.as_deref(), Some("ana"));
    assert_eq!(
        log[1].reason.as_ref().and_then(|r| r["kind"].as_str()),
        Some("maintenance")
    );
    assert_eq!(log[2].cause, "rule");
    assert_eq!(reader.transitions(None, 10).expect("all").len(), 4);
    // The digest's day figure for each journey sums its stored minutes.
    assert_eq!(
        reader.journey_totals(T0 / 60_000).expect("totals"),
        vec![("unlock".to_string(), 7, 9)]
    );
    assert!(reader
        .journey_totals(T0 / 60_000 + 1)
        .expect("none later")
        .is_empty());
}

fn the_command_log_records_sends_and_acks_of_the_right_vehicle_only(opts: &StoreOptions) {
    let mut store = Store::open(opts).expect("opens");
    let command = Command {
        vehicle: "a".into(),
        command: CommandKind::ServiceOut,
        reasons: vec![fault("BRAKE", T0)],
        issued_at: T0,
        resend: false,
    };
    store
        .apply(&[
            Record::CommandSent {
                id: "c1".into(),
                command: command.clone(),
            },
            Record::CommandSent {
                id: "c2".into(),
                command,
            },
            Record::CommandAck {
                id: "c1".into(),
                vehicle: "a".into(),
                ok: true,
                error: None,
                at: T0 + 5,
            },
            Record::CommandAck {
                id: "c2".into(),
                vehicle: "intruder".into(),
                ok: true,
                error: None,
                at: T0 + 6,
            },
        ])
        .expect("stored");
    let reader = StoreReader::open(store.location()).expect("reader");
    let mut log = reader.commands("a", 10).expect("commands");
    log.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(log[0].acked_at, Some(T0 + 5));
    assert_eq!(log[0].ok, Some(true));
    assert_eq!(log[1].acked_at, None);
    store
        .apply(&[Record::PruneCommands { before: T0 + 1 }])
        .expect("pruned");
    assert!(reader.commands("a", 10).expect("commands").is_empty());
}

fn the_writer_announces_batches_in_order_and_flushes_at_the_end(opts: &StoreOptions) {
    let store = Store::open(opts).expect("opens");
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(STORE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel(1024);
    let writer = spawn_writer(store, batch_rx, out_tx, metrics.clone()).expect("writer");
    for i in 0..100 {
        batch_tx
            .blocking_send(StoreBatch {
                records: vec![Record::Registered {
                    vehicle: format!("v{i}"),
                    at: T0,
                }],
                outbound: vec![format!("vehicles/v{i}/service")],
                after: Vec::new(),
            })
            .expect("queued");
    }
    drop(batch_tx);
    writer.join();
    for i in 0..100 {
        assert_eq!(
            out_rx.blocking_recv().expect("message"),
            format!("vehicles/v{i}/service")
        );
    }
    assert_eq!(metrics.records.load(Ordering::Relaxed), 100);
    let mut store = Store::open(opts).expect("reopens");
    assert_eq!(store.load(0).expect("loads").vehicles.len(), 100);
    if let Location::File(path) = &opts.location {
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        assert_eq!(
            std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0),
            0,
            "WAL checkpointed"
        );
    }
}

fn a_restart_accounts_the_gap_since_the_last_save_as_downtime(opts: &StoreOptions) {
    let mut store = Store::open(opts).expect("opens");
    store
        .apply(&[
            Record::Registered {
                vehicle: "a".into(),
                at: T0,
            },
            Record::Sli {
                minutes: vec![SliMinute {
                    minute: T0 / 60_000,
                    good: 1000,
                    valid: 1000,
                    down_ms: 0,
                }],
                saved_to: T0 + 1000,
                keep_from: 0,
            },
            Record::Stopped { at: T0 + 1000 },
        ])
        .expect("stored");
    let restored = store.load(0).expect("loads");
    let now = T0 + 1000 + 10 * 60_000;
    let mut recovery = recover(
        fleet_rules::RulesConfig::default(),
        restored,
        None,
        now,
        true,
    );
    assert_eq!(recovery.downtime_ms, 10 * 60_000);
    assert!(recovery.clean_stop);
    assert_eq!(recovery.vehicles, 1);
    let sli = recovery.fleet.sli(now);
    assert_eq!(sli.downtime_ms, 10 * 60_000);
    assert!(
        sli.window_sli < 0.01,
        "downtime counted bad: {}",
        sli.window_sli
    );
}

fn the_incident_log_keeps_each_incident_with_its_end_and_the_open_one_too(opts: &StoreOptions) {
    let mut store = Store::open(opts).expect("opens");
    let records = [
        Record::Incident(IncidentChange::MassLossOpened {
            at: T0,
            threshold: 50,
        }),
        Record::Incident(IncidentChange::AlertFiring {
            page: true,
            at: T0 + 1_000,
        }),
        Record::Incident(IncidentChange::MassLossClosed { at: T0 + 60_000 }),
        Record::Incident(IncidentChange::BlindOpened { since: T0 + 90_000 }),
        Record::Incident(IncidentChange::BlindClosed { at: T0 + 95_000 }),
    ];
    store.apply(&records).expect("stored");
    let reader = StoreReader::open(store.location()).expect("reader");
    assert_eq!(
        reader.incidents(0, 10).expect("reads"),
        [
            ("blind".to_owned(), T0 + 90_000, Some(T0 + 95_000)),
            ("page".to_owned(), T0 + 1_000, None),
            ("mass_loss".to_owned(), T0, Some(T0 + 60_000)),
        ]
    );
    // An old closed incident is out of a later window; the open page alert is not.
    let later = reader.incidents(T0 + 80_000, 10).expect("reads");
    assert_eq!(later.len(), 2, "{later:?}");
    // The open-incident marks a restart goes on with are as before.
    let open = store.load(0).expect("loads").open;
    assert_eq!(open.page_since, Some(T0 + 1_000));
    assert_eq!(open.mass_loss, None);
}

fn announced(vehicle: &str, at: u64) -> Record {
    let Record::Transition(t, _) = transition(
        vehicle,
        ReasonChange::Set(fault("MOTOR", at)),
        vec![fault("MOTOR", at)],
        Cause::Rule,
        at,
    ) else {
        unreachable!()
    };
    Record::Transition(
        t,
        Some(format!("{{\"vehicle\":\"{vehicle}\",\"at\":{at}}}")),
    )
}

fn after_a_crash_the_last_announcements_come_back_to_be_published_again(opts: &StoreOptions) {
    let mut store = Store::open(opts).expect("opens");
    let latest = T0 + 60_000;
    store
        .apply(&[
            announced("old", latest - fleet_broker::store::UNSURE_MS - 1),
            announced("recent", latest - fleet_broker::store::UNSURE_MS),
            announced("last", latest),
        ])
        .expect("stored");
    // Killed: no Stopped record. The announcements of the last UNSURE_MS come back.
    let restored = store.load(0).expect("loads");
    let recovery = recover(
        fleet_rules::RulesConfig::default(),
        restored,
        None,
        latest + 5_000,
        true,
    );
    assert!(!recovery.clean_stop);
    assert_eq!(
        recovery.unsure_events,
        [
            format!(
                "{{\"vehicle\":\"recent\",\"at\":{}}}",
                latest - fleet_broker::store::UNSURE_MS
            ),
            format!("{{\"vehicle\":\"last\",\"at\":{latest}}}"),
        ]
    );
    // A clean stop published everything: nothing to send again.
    store
        .apply(&[Record::Stopped { at: latest + 1 }])
        .expect("stored");
    let restored = store.load(0).expect("loads");
    let recovery = recover(
        fleet_rules::RulesConfig::default(),
        restored,
        None,
        latest + 5_000,
        true,
    );
    assert!(recovery.clean_stop);
    assert!(recovery.unsure_events.is_empty());
}
