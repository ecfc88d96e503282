//! What only the SQLite store does, against real files in temporary directories: old
//! schemas are migrated, bad files and paths give clear errors, the lock file keeps a
//! second broker away, and a write that fails (a full disk, simulated with `PRAGMA
//! max_page_count`) holds its announcements. What both databases do (what is written comes
//! back, the logs, the writer's order) is tested against each in
//! `tests/tests/store_backends.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fleet_rules::{Reason, ServiceState};
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::*;
use crate::engine::Outbound;

const T0: u64 = 1_700_000_000_000;

fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data").join("fleet.db")
}

fn options(dir: &tempfile::TempDir) -> StoreOptions {
    StoreOptions {
        location: Location::File(path(dir)),
        synchronous: Synchronous::Normal,
        fence: None,
    }
}

/// The store's SQLite connection.
fn conn(store: &Store) -> &Connection {
    match &store.db {
        Db::Sqlite { conn, .. } => conn,
        Db::Postgres(_) => panic!("a SQLite store was opened"),
    }
}

/// The store's simulated size limit (see `Db::Sqlite::page_limit`).
fn page_limit(store: &Store) -> Arc<AtomicU64> {
    match &store.db {
        Db::Sqlite { page_limit, .. } => page_limit.clone(),
        Db::Postgres(_) => panic!("a SQLite store was opened"),
    }
}

fn fault(code: &str, since: u64) -> Reason {
    Reason::HardwareFault {
        code: code.into(),
        since,
    }
}

#[test]
fn a_new_database_and_its_directory_are_created_at_the_current_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&options(&dir)).expect("opens");
    assert!(path(&dir).exists());
    assert_eq!(
        schema::version(conn(&store)).expect("version"),
        SCHEMA_VERSION
    );
    let mode: String = conn(&store)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    assert!(store.load(0).expect("loads").is_empty());
}

#[test]
fn a_database_of_schema_version_1_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    std::fs::create_dir_all(path(&dir).parent().expect("dir")).expect("dir");
    {
        let mut conn = Connection::open(path(&dir)).expect("open");
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
        schema::version(conn(&store)).expect("version"),
        SCHEMA_VERSION
    );
    let restored = store.load(0).expect("loads");
    assert_eq!(restored.vehicles.len(), 1);
    assert_eq!(restored.vehicles[0].reasons, vec![fault("BRAKE", T0)]);
    assert_eq!(restored.sli[0].down_ms, 0);
    assert_eq!((restored.sli[0].good, restored.sli[0].valid), (5, 6));
    // The v2 tables work.
    store
        .apply(&[Record::Seen(vec![fleet_rules::VehicleView {
            id: "v1".into(),
            state: ServiceState::InService,
            reasons: Vec::new(),
            last_seen: T0 + 1,
            model: None,
            reported: None,
            battery: None,
            held: false,
            error_counts: vec![("BRAKE".into(), 2)],
        }])])
        .expect("v2 column");
}

#[test]
fn a_database_from_a_newer_broker_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir);
    drop(Store::open(&opts).expect("opens"));
    let conn = Connection::open(path(&dir)).expect("open");
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
        location: Location::File(blocker.join("fleet.db")),
        synchronous: Synchronous::Full,
        fence: None,
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
    std::fs::create_dir_all(path(&dir).parent().expect("dir")).expect("dir");
    std::fs::write(path(&dir), vec![0x5a; 64 * 1024]).expect("garbage");
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
    let mut bytes = std::fs::read(path(&dir)).expect("read");
    assert!(bytes.len() > 8 * 4096);
    for b in &mut bytes[3 * 4096..6 * 4096] {
        *b = 0xa5;
    }
    std::fs::write(path(&dir), bytes).expect("damage");
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
    let pages: u64 = conn(&store)
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("pages");
    page_limit(&store).store(pages, Ordering::Relaxed);
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
    let pages: u64 = conn(&store)
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("pages");
    let limit = page_limit(&store);
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
    let mut store = Store::open(&options(&dir)).expect("reopens");
    assert_eq!(store.load(0).expect("loads").vehicles.len(), 5000);
}
