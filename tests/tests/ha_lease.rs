//! The leader lease and its fencing epoch against a real PostgreSQL 15 (Debian's package,
//! a fresh cluster per test): one engine leads, a dead leader is replaced within the lease
//! timings with a new epoch, a deposed leader's fenced write is refused, a takeover waits
//! for a fenced write in flight, and a leader cut off from the database steps down before
//! its successor starts.

use std::time::Duration;

use fleet_broker::ha::{self, LeaseTarget, LeaseTimings, PgLease, Role};
use fleet_broker::store::lease as pg;
use fleet_tests::postgres::{Cuttable, Postgres};
use fleet_tests::WAIT;
use tokio::sync::watch;
use tokio::time::Instant;

/// Short timings so the tests take seconds (renewals well inside a lifetime).
const TIMINGS: LeaseTimings = LeaseTimings {
    ttl: Duration::from_millis(1500),
    renew_every: Duration::from_millis(300),
};

/// An engine that sees the fleet.
fn sees() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true))
}

fn target(url: &str, node: &str) -> LeaseTarget {
    LeaseTarget {
        url: url.to_owned(),
        node: node.to_owned(),
        address: format!("http://{node}.example:8080"),
    }
}

/// Waits (bounded) until the role satisfies `ok`; returns when it did.
async fn until(role: &mut watch::Receiver<Role>, ok: impl Fn(&Role) -> bool) -> (Instant, Role) {
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let now = role.borrow_and_update();
            if ok(&now) {
                return (Instant::now(), now.clone());
            }
        }
        tokio::time::timeout_at(deadline, role.changed())
            .await
            .unwrap_or_else(|_| panic!("role still {:?} after {WAIT:?}", *role.borrow()))
            .expect("the lease task runs");
    }
}

fn leads(role: &Role) -> bool {
    matches!(role, Role::Leader { .. })
}

/// A connection to `pg` with an empty table `facts (v TEXT)` that fenced writes fill.
async fn facts_table(pg: &Postgres) -> tokio_postgres::Client {
    let db = pg::connect(&pg.url(), WAIT).await.expect("connect");
    db.batch_execute("CREATE TABLE facts (v TEXT NOT NULL)")
        .await
        .expect("table");
    db
}

async fn raw(pg: &Postgres, node: &str) -> PgLease {
    PgLease::open(&pg.url(), node, &format!("http://{node}"), WAIT)
        .await
        .expect("connect")
}

#[tokio::test]
async fn one_engine_leads_keeps_its_term_by_renewing_and_the_other_knows_who_leads() {
    let Some(pg) = Postgres::start() else { return };
    let a = ha::run(target(&pg.url(), "a"), TIMINGS, sees());
    let mut a_role = a.role();
    let (_, role) = until(&mut a_role, leads).await;
    assert_eq!(role, Role::Leader { epoch: 1 });

    let b = ha::run(target(&pg.url(), "b"), TIMINGS, sees());
    let mut b_role = b.role();
    let (_, seen) = until(&mut b_role, |r| {
        matches!(r, Role::Standby { leader: Some(_) })
    })
    .await;
    let Role::Standby {
        leader: Some(leader),
    } = seen
    else {
        unreachable!()
    };
    assert_eq!(
        (
            leader.holder.as_str(),
            leader.address.as_str(),
            leader.epoch
        ),
        ("a", "http://a.example:8080", 1)
    );

    // Two lifetimes later a is still leading the same term: it renewed, b never took over.
    let quiet = tokio::time::timeout(TIMINGS.ttl * 2, a_role.changed()).await;
    assert!(quiet.is_err(), "a's role changed: {:?}", *a_role.borrow());
    assert_eq!(*a_role.borrow(), Role::Leader { epoch: 1 });
    assert!(!leads(&b_role.borrow()));

    // A clean stop releases the lease: b leads at its next attempt, with a new epoch.
    let stopped = Instant::now();
    a.stop().await;
    let (at, role) = until(&mut b_role, leads).await;
    assert_eq!(role, Role::Leader { epoch: 2 });
    assert!(
        at - stopped <= TIMINGS.renew_every + Duration::from_millis(500),
        "released lease taken after {:?}",
        at - stopped
    );
    b.stop().await;
}

#[tokio::test]
async fn a_dead_leader_is_replaced_within_the_ttl_and_one_attempt_with_the_next_epoch() {
    let Some(pg) = Postgres::start() else { return };
    // a takes the lease and then dies: it never renews.
    let a = raw(&pg, "a").await;
    let granted = Instant::now();
    assert_eq!(a.acquire(0, TIMINGS.ttl).await.expect("acquire"), Some(1));

    let b = ha::run(target(&pg.url(), "b"), TIMINGS, sees());
    let mut b_role = b.role();
    let (at, role) = until(&mut b_role, leads).await;
    assert_eq!(role, Role::Leader { epoch: 2 });
    let took = at - granted;
    println!("takeover {took:?} after the dead leader's last grant");
    assert!(
        took >= TIMINGS.ttl,
        "taken over before the lease expired: {took:?}"
    );
    assert!(
        took <= TIMINGS.ttl + TIMINGS.renew_every + Duration::from_millis(500),
        "takeover took {took:?}"
    );

    // a wakes up: its renewal is refused, the lease is b's.
    assert_eq!(a.acquire(1, TIMINGS.ttl).await.expect("renew"), None);
    let row = a.read().await.expect("read");
    assert_eq!((row.holder.as_str(), row.epoch), ("b", 2));
    b.stop().await;
}

#[tokio::test]
async fn a_deposed_leaders_fenced_write_is_refused_and_writes_nothing() {
    let Some(pg) = Postgres::start() else { return };
    let mut db = facts_table(&pg).await;
    let a = raw(&pg, "a").await;
    let short = Duration::from_millis(400);
    assert_eq!(a.acquire(0, short).await.expect("acquire"), Some(1));

    let tx = db.transaction().await.expect("begin");
    pg::fence(&tx, "a", 1).await.expect("a leads epoch 1");
    tx.execute("INSERT INTO facts VALUES ('first term')", &[])
        .await
        .expect("insert");
    tx.commit().await.expect("commit");

    // a stalls past its lease; b takes over.
    let b = raw(&pg, "b").await;
    let deadline = Instant::now() + WAIT;
    let epoch = loop {
        if let Some(e) = b.acquire(0, TIMINGS.ttl).await.expect("acquire") {
            break e;
        }
        assert!(Instant::now() < deadline, "b never got the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(epoch, 2);

    let tx = db.transaction().await.expect("begin");
    let refused = pg::fence(&tx, "a", 1).await;
    assert!(
        matches!(refused, Err(pg::LeaseError::Deposed { epoch: 1 })),
        "{refused:?}"
    );
    drop(tx); // rolled back
    let n: i64 = db
        .query_one("SELECT count(*) FROM facts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "only the first term's write is there");
    // b's fence holds.
    let tx = db.transaction().await.expect("begin");
    pg::fence(&tx, "b", 2).await.expect("b leads epoch 2");
}

#[tokio::test]
async fn a_takeover_waits_for_the_fenced_write_in_flight_so_no_old_write_lands_in_the_new_term() {
    let Some(pg) = Postgres::start() else { return };
    let mut db = facts_table(&pg).await;
    let a = raw(&pg, "a").await;
    assert_eq!(
        a.acquire(0, Duration::from_millis(800))
            .await
            .expect("acquire"),
        Some(1)
    );
    let tx = db.transaction().await.expect("begin");
    pg::fence(&tx, "a", 1).await.expect("a leads");

    // The lease runs out while a's transaction is open; b tries to take over.
    let deadline = Instant::now() + WAIT;
    while a.read().await.expect("read").remaining_ms > 0 {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = raw(&pg, "b").await;
    let takeover = tokio::spawn(async move { b.acquire(0, TIMINGS.ttl).await });
    // b's UPDATE waits on a's row lock (PostgreSQL says so).
    let watcher = pg::connect(&pg.url(), WAIT).await.expect("connect");
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE fleet_leader%'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            !takeover.is_finished(),
            "the takeover did not wait for a's write"
        );
        assert!(Instant::now() < deadline, "the takeover never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.execute("INSERT INTO facts VALUES ('late')", &[])
        .await
        .expect("insert");
    assert!(
        !takeover.is_finished(),
        "the new term began while a's write was open"
    );
    tx.commit()
        .await
        .expect("a's write commits: it was fenced in its term");
    // Only now does b's term begin. (PostgreSQL stamps the row with the time b's UPDATE
    // arrived, before its wait, so the order shows in the lock wait, not in the stamps.)
    let granted = takeover.await.expect("join").expect("acquire");
    assert_eq!(granted, Some(2));
    let late: i64 = watcher
        .query_one("SELECT count(*) FROM facts WHERE v = 'late'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(late, 1);
}

#[tokio::test]
async fn a_leader_cut_off_from_postgres_steps_down_before_its_successor_leads() {
    let Some(pg) = Postgres::start() else { return };
    let proxy = Cuttable::start(pg.port).await;
    let a = ha::run(target(&pg.url_via(proxy.port), "a"), TIMINGS, sees());
    let mut a_role = a.role();
    until(&mut a_role, leads).await;
    let b = ha::run(target(&pg.url(), "b"), TIMINGS, sees());
    let mut b_role = b.role();
    until(&mut b_role, |r| {
        matches!(r, Role::Standby { leader: Some(_) })
    })
    .await;

    let cut = Instant::now();
    proxy.cut();
    let (a_down, b_up) = tokio::join!(until(&mut a_role, |r| !leads(r)), until(&mut b_role, leads));
    println!(
        "partition: a stepped down {:?} after the cut, b led {:?} after it",
        a_down.0 - cut,
        b_up.0 - cut
    );
    assert_eq!(b_up.1, Role::Leader { epoch: 2 });
    assert!(
        a_down.0 < b_up.0,
        "a acted until {:?}, b from {:?}",
        a_down.0 - cut,
        b_up.0 - cut
    );
    assert!(b_up.0 - cut <= TIMINGS.ttl + TIMINGS.renew_every + Duration::from_millis(500));
    b.stop().await;
}

#[tokio::test]
async fn the_lease_goes_to_an_engine_that_sees_the_upstream_and_a_blind_leader_hands_it_over() {
    let Some(pg) = Postgres::start() else { return };
    let (a_eyes, b_eyes, c_eyes) = (sees(), sees(), sees());
    b_eyes.store(false, std::sync::atomic::Ordering::Relaxed);
    let a = ha::run(target(&pg.url(), "a"), TIMINGS, a_eyes.clone());
    let mut a_role = a.role();
    until(&mut a_role, leads).await;
    // b does not see the upstream, c does.
    let b = ha::run(target(&pg.url(), "b"), TIMINGS, b_eyes);
    let c = ha::run(target(&pg.url(), "c"), TIMINGS, c_eyes.clone());
    let (mut b_role, mut c_role) = (b.role(), c.role());
    let standing = |r: &Role| matches!(r, Role::Standby { leader: Some(_) });
    until(&mut b_role, standing).await;
    until(&mut c_role, standing).await;

    // a goes blind: after half a ttl it releases the lease to c, not to the blind b.
    let blind = Instant::now();
    a_eyes.store(false, std::sync::atomic::Ordering::Relaxed);
    let (at, role) = until(&mut c_role, leads).await;
    assert_eq!(role, Role::Leader { epoch: 2 });
    let took = at - blind;
    println!("handed over {took:?} after the leader went blind");
    assert!(took >= TIMINGS.ttl / 2, "handed over too early: {took:?}");
    assert!(
        took <= TIMINGS.ttl / 2 + 2 * TIMINGS.renew_every + Duration::from_millis(500),
        "handover took {took:?}"
    );
    assert!(!leads(&a_role.borrow()), "a still leads");
    // c goes blind too while a and b still are: nobody who sees is left, so c keeps it.
    c_eyes.store(false, std::sync::atomic::Ordering::Relaxed);
    let kept = tokio::time::timeout(TIMINGS.ttl * 2, c_role.changed()).await;
    assert!(kept.is_err(), "c's role changed: {:?}", *c_role.borrow());
    assert!(!leads(&b_role.borrow()) && !leads(&a_role.borrow()));
    for lease in [a, b, c] {
        lease.stop().await;
    }
}
