//! The store against real SQLite files in temporary directories: what is written comes
//! back, old schemas are migrated, bad files and paths give clear errors, and a write that
//! fails (a full disk, simulated with `PRAGMA max_page_count`) holds its announcements.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{
    Cause, Command, CommandKind, Reason, ReasonChange, ServiceState, SliMinute, Transition,
};
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::*;
use crate::engine::Outbound;

const T0: u64 = 1_700_000_000_000;

fn options(dir: &tempfile::TempDir) -> StoreOptions {
    StoreOptions {
        path: dir.path().join("data").join("fleet.db"),
        synchronous: Synchronous::Normal,
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
    Record::Transition(Transition {
        vehicle: vehicle.into(),
        from: ServiceState::InService,
        to,
        change,
        reasons,
        cause,
        at,
    })
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
fn a_new_database_and_its_directory_are_created_at_the_current_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&options(&dir)).expect("opens");
    assert!(store.path().exists());
    assert_eq!(
        schema::version(&store.conn).expect("version"),
        SCHEMA_VERSION
    );
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    assert!(store.load(0).expect("loads").is_empty());
}

#[test]
fn what_is_written_comes_back_on_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
    let maintenance = Reason::Maintenance {
        by: "ana".into(),
        note: "bell".into(),
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
        ])
        .expect("stored");
    drop(store);
    let store = Store::open(&options(&dir)).expect("opens again");
    let restored = store.load(0).expect("loads");
    let mut vehicles = restored.vehicles.clone();
    vehicles.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(vehicles.len(), 2);
    assert_eq!(vehicles[0].id, "a");
    let mut reasons = vehicles[0].reasons.clone();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(reasons, vec![fault("BRAKE", T0 + 1), maintenance]);
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

    let reader = StoreReader::open(store.path()).expect("reader");
    let log = reader.transitions(Some("a"), 10).expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].change, "set");
    assert_eq!(log[0].cause, "operator");
    assert_eq!(log[0].operator.as_deref(), Some("ana"));
    assert_eq!(
        log[0].reason.as_ref().and_then(|r| r["kind"].as_str()),
        Some("maintenance")
    );
    assert_eq!(log[1].cause, "rule");
    assert_eq!(reader.transitions(None, 10).expect("all").len(), 3);
}

#[test]
fn the_command_log_records_sends_and_acks_of_the_right_vehicle_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
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
    let reader = StoreReader::open(store.path()).expect("reader");
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

#[test]
fn a_database_of_schema_version_1_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    std::fs::create_dir_all(opts.path.parent().expect("dir")).expect("dir");
    {
        let mut conn = Connection::open(&opts.path).expect("open");
        assert_eq!(schema::migrate_to(&mut conn, 1).expect("v1"), 0);
        conn.execute_batch(&format!(
            "INSERT INTO vehicles (id, model, last_seen, changed_at) VALUES ('v1', 'e-bike', {T0}, {T0});
             INSERT INTO reasons (vehicle, kind, code, since) VALUES ('v1', 'hardware_fault', 'BRAKE', {T0});
             INSERT INTO sli_minutes (minute, good, valid) VALUES ({}, 5, 6);
             INSERT INTO meta (key, value) VALUES ('sli_saved_to', {T0});",
            T0 / 60_000
        ))
        .expect("v1 data");
        assert_eq!(schema::version(&conn).expect("version"), 1);
    }
    let mut store = Store::open(&opts).expect("migrates");
    assert_eq!(
        schema::version(&store.conn).expect("version"),
        SCHEMA_VERSION
    );
    let restored = store.load(0).expect("loads");
    assert_eq!(restored.vehicles.len(), 1);
    assert_eq!(restored.vehicles[0].reasons, vec![fault("BRAKE", T0)]);
    assert_eq!(restored.sli[0].down_ms, 0);
    assert_eq!((restored.sli[0].good, restored.sli[0].valid), (5, 6));
    // The v2 tables work.
    store
        .apply(&[Record::Seen(vec![view(
            "v1",
            T0 + 1,
            None,
            &[("BRAKE", 2)],
        )])])
        .expect("v2 column");
}

#[test]
fn a_database_from_a_newer_broker_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    drop(Store::open(&opts).expect("opens"));
    let conn = Connection::open(&opts.path).expect("open");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = Store::open(&opts).expect_err("refused");
    assert!(matches!(err, StoreError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn an_unwritable_path_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where a directory should be: fails even for root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("file");
    let err = Store::open(&StoreOptions {
        path: blocker.join("fleet.db"),
        synchronous: Synchronous::Full,
    })
    .expect_err("unwritable");
    assert!(matches!(err, StoreError::Directory { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("not-a-dir") && message.contains("[store] path"),
        "{message}"
    );
}

#[test]
fn a_database_in_use_by_another_broker_is_refused_until_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(&options(&dir)).expect("opens");
    let err = Store::open(&options(&dir)).expect_err("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("another running fleet-broker"),
        "{err}"
    );
    drop(first);
    Store::open(&options(&dir)).expect("free again");
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    std::fs::create_dir_all(opts.path.parent().expect("dir")).expect("dir");
    std::fs::write(&opts.path, vec![0x5a; 64 * 1024]).expect("garbage");
    let err = Store::open(&opts).expect_err("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("backup"), "{err}");
}

#[test]
fn a_database_with_damaged_pages_is_reported_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    {
        let mut store = Store::open(&opts).expect("opens");
        let records: Vec<Record> = (0..2000)
            .map(|i| Record::Registered {
                vehicle: format!("vehicle-{i:05}"),
                at: T0,
            })
            .collect();
        store.apply(&records).expect("stored");
        store.checkpoint().expect("checkpoint");
    }
    let mut bytes = std::fs::read(&opts.path).expect("read");
    assert!(bytes.len() > 8 * 4096);
    for b in &mut bytes[3 * 4096..6 * 4096] {
        *b = 0xa5;
    }
    std::fs::write(&opts.path, bytes).expect("damage");
    let err = Store::open(&opts).expect_err("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

fn message(topic: &str) -> Outbound {
    Outbound {
        topic: topic.into(),
        payload: b"{}".to_vec(),
        qos1: true,
        retain: false,
    }
}

#[test]
fn the_simulated_full_disk_is_sqlites_own_disk_full_error_and_the_write_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
    let pages: u64 = store
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("pages");
    store.page_limit.store(pages, Ordering::Relaxed);
    let records: Vec<Record> = (0..5000)
        .map(|i| Record::Registered {
            vehicle: format!("vehicle-{i:05}"),
            at: T0,
        })
        .collect();
    let err = store.apply(&records).expect_err("full");
    assert!(err.is_disk_full(), "{err}");
    assert!(
        store.load(0).expect("loads").vehicles.is_empty(),
        "a failed batch is not half stored"
    );
}

#[test]
fn a_write_failing_on_a_full_disk_holds_its_announcements_until_it_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&options(&dir)).expect("opens");
    let pages: u64 = store
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("pages");
    let limit = store.page_limit.clone();
    limit.store(pages.max(1), Ordering::Relaxed);
    let metrics = Arc::new(StoreMetrics::default());
    let (batch_tx, batch_rx) = mpsc::channel(STORE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let writer = spawn_writer(store, batch_rx, out_tx, metrics.clone()).expect("writer");
    let (replied_tx, replied_rx) = std::sync::mpsc::channel();
    let records: Vec<Record> = (0..5000)
        .map(|i| Record::Registered {
            vehicle: format!("vehicle-{i:05}"),
            at: T0,
        })
        .collect();
    batch_tx
        .blocking_send(StoreBatch {
            records,
            outbound: vec![message("fleet/events")],
            after: vec![Box::new(move || {
                let _ = replied_tx.send(());
            })],
        })
        .expect("queued");
    // The writer has tried and failed (it retries with backoff until the disk frees up):
    // from here on, anything announced would be announced before it was stored.
    let failed_attempt = || {
        metrics.write_errors.load(Ordering::Relaxed) >= 1
            && metrics.failing.load(Ordering::Relaxed) == 1
            && metrics.held.load(Ordering::Relaxed) == 2
    };
    let mut polls = 0;
    while !failed_attempt() {
        polls += 1;
        assert!(
            polls < 10_000,
            "no failed write holding both announcements within 10 s: {metrics:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(out_rx.try_recv().is_err(), "announced before it was stored");
    assert!(
        replied_rx.try_recv().is_err(),
        "replied before it was stored"
    );

    limit.store(1 << 30, Ordering::Relaxed);
    let m = out_rx.blocking_recv().expect("announced once stored");
    assert_eq!(m.topic, "fleet/events");
    replied_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("replied once stored");
    assert_eq!(metrics.failing.load(Ordering::Relaxed), 0);
    drop(batch_tx);
    writer.join();
    let store = Store::open(&options(&dir)).expect("reopens");
    assert_eq!(store.load(0).expect("loads").vehicles.len(), 5000);
}

#[test]
fn the_writer_announces_batches_in_order_and_flushes_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&options(&dir)).expect("opens");
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
                outbound: vec![message(&format!("vehicles/v{i}/service"))],
                after: Vec::new(),
            })
            .expect("queued");
    }
    drop(batch_tx);
    writer.join();
    for i in 0..100 {
        assert_eq!(
            out_rx.blocking_recv().expect("message").topic,
            format!("vehicles/v{i}/service")
        );
    }
    assert_eq!(metrics.records.load(Ordering::Relaxed), 100);
    let wal = {
        let mut name = options(&dir).path.into_os_string();
        name.push("-wal");
        std::path::PathBuf::from(name)
    };
    assert_eq!(
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0),
        0,
        "WAL checkpointed"
    );
}

#[test]
fn a_restart_accounts_the_gap_since_the_last_save_as_downtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
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
    let mut recovery = recover(fleet_rules::RulesConfig::default(), restored, now, true);
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

#[test]
fn the_incident_log_keeps_each_incident_with_its_end_and_the_open_one_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
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
    let reader = StoreReader::open(store.path()).expect("reader");
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
