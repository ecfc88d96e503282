//! The task that holds the lease: every `renew_every` it renews (as leader) or tries to
//! take it (as standby), and it steps down the moment its local trust runs out, whether or
//! not the database answered. Its verdict is a [`Role`] on a watch channel.
//!
//! It also hands the lease over when this engine cannot see the fleet: a leader whose
//! upstream link has been down for half a `ttl` releases the lease if another engine
//! registered as seeing the upstream, and a standby that does not see it leaves the lease
//! to one that does (if none does, whoever tries first leads, blind, as a single engine
//! would be).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Leadership, LeaseError, LeaseRow, LeaseTimings, PgLease, Role};

/// While the database fails, a WARN line at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where the lease lives and who this engine is.
#[derive(Debug, Clone)]
pub struct LeaseTarget {
    /// PostgreSQL connection URL.
    pub url: String,
    /// This engine's node name (unique in the cluster).
    pub node: String,
    /// Its ops API address, shown to operators by standbys.
    pub address: String,
}

/// The running lease task.
#[derive(Debug)]
pub struct LeaseHandle {
    role: watch::Receiver<Role>,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl LeaseHandle {
    /// The role now and its changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Stops the task; a leader releases the lease so a standby takes over at once.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join.await;
    }
}

enum Answer {
    Granted(u64),
    Refused(LeaseRow),
    /// This leader could not see the fleet and released the lease to one that can.
    HandedOver(LeaseRow),
}

/// Starts the lease task on the current runtime. `eyes` says whether this engine sees the
/// fleet now (its upstream link, or a standby's watch, is up).
pub fn run(target: LeaseTarget, timings: LeaseTimings, eyes: Arc<AtomicBool>) -> LeaseHandle {
    let (role_tx, role) = watch::channel(Role::Standby { leader: None });
    let (stop, stop_rx) = oneshot::channel();
    let join = tokio::spawn(hold(target, timings, eyes, role_tx, stop_rx));
    LeaseHandle {
        role,
        stop: Some(stop),
        join,
    }
}

/// What this engine sees of the fleet at an attempt.
#[derive(Clone, Copy)]
struct Sight {
    /// Its link (or watch) is up.
    sees: bool,
    /// For how long it has been down.
    blind_for: Duration,
}

async fn attempt(
    conn: &mut Option<PgLease>,
    target: &LeaseTarget,
    held: u64,
    timings: LeaseTimings,
    sight: Sight,
) -> Result<Answer, LeaseError> {
    let lease = match conn {
        Some(lease) => lease,
        None => conn.insert(
            PgLease::open(
                &target.url,
                &target.node,
                &target.address,
                timings.renew_every,
            )
            .await?,
        ),
    };
    // Registrations older than two lifetimes are engines gone.
    let alive = timings.ttl * 2;
    if held > 0 && sight.blind_for >= timings.ttl / 2 && lease.another_sees_upstream(alive).await? {
        lease.release(held).await?;
        lease.register(false, sight.sees).await?;
        return Ok(Answer::HandedOver(lease.read().await?));
    }
    if held == 0 && !sight.sees && lease.another_sees_upstream(alive).await? {
        lease.register(false, false).await?;
        return Ok(Answer::Refused(lease.read().await?));
    }
    let answer = match lease.acquire(held, timings.ttl).await? {
        Some(epoch) => Answer::Granted(epoch),
        None => Answer::Refused(lease.read().await?),
    };
    lease
        .register(matches!(answer, Answer::Granted(_)), sight.sees)
        .await?;
    Ok(answer)
}

async fn hold(
    target: LeaseTarget,
    timings: LeaseTimings,
    eyes: Arc<AtomicBool>,
    role_tx: watch::Sender<Role>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut leadership = Leadership::new(timings);
    let mut conn: Option<PgLease> = None;
    let mut leader_row: Option<LeaseRow> = None;
    let mut last_warn: Option<Instant> = None;
    let mut blind_since: Option<Instant> = None;
    loop {
        let sent = Instant::now();
        let held = leadership.epoch_to_renew();
        let sees = eyes.load(Ordering::Relaxed);
        let sight = Sight {
            sees,
            blind_for: if sees {
                blind_since = None;
                Duration::ZERO
            } else {
                blind_since.get_or_insert(sent).elapsed()
            },
        };
        // Dropped before the answer is looked at: it borrows the connection.
        let answer = {
            let asked = tokio::time::timeout(
                timings.renew_every,
                attempt(&mut conn, &target, held, timings, sight),
            );
            tokio::pin!(asked);
            // While the database is asked, the local trust may run out: step down right then,
            // not when the answer (or the timeout) comes.
            loop {
                let trust_ends = leadership.trusted_until().filter(|&t| t > Instant::now());
                tokio::select! {
                    answer = &mut asked => break Some(answer),
                    _ = sleep_until_some(trust_ends) => {
                        publish(&role_tx, &leadership, &leader_row, &target.node);
                    }
                    _ = &mut stop => break None,
                }
            }
        };
        let Some(answer) = answer else {
            // Stopped while asking: the attempt is dropped, the term released.
            release(&conn, &leadership).await;
            let _ = role_tx.send(Role::Standby { leader: None });
            return;
        };
        match answer {
            Ok(Ok(Answer::Granted(epoch))) => {
                leadership.granted(epoch, sent);
                last_warn = None;
            }
            Ok(Ok(Answer::Refused(row))) => {
                leadership.refused();
                leader_row = Some(row);
                last_warn = None;
            }
            Ok(Ok(Answer::HandedOver(row))) => {
                warn!(node = %target.node, epoch = held, blind_ms = sight.blind_for.as_millis() as u64, "lease: this engine cannot see the upstream and another one can: released the lease to it");
                leadership.refused();
                leader_row = Some(row);
                last_warn = None;
            }
            failed => {
                // A fresh connection next time: this one may be half dead.
                conn = None;
                leader_row = None;
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", timings.renew_every),
                    };
                    warn!(node = %target.node, error = %why, "lease: PostgreSQL unreachable; a leader steps down when its lease runs out");
                    last_warn = Some(Instant::now());
                }
            }
        }
        let next = sent + timings.renew_every;
        loop {
            publish(&role_tx, &leadership, &leader_row, &target.node);
            let now = Instant::now();
            if now >= next {
                break;
            }
            // Wake at the next attempt, or earlier when the local trust runs out.
            let wake = leadership
                .trusted_until()
                .filter(|&t| t > now && t < next)
                .unwrap_or(next);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = &mut stop => {
                    release(&conn, &leadership).await;
                    let _ = role_tx.send(Role::Standby { leader: None });
                    return;
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn publish(
    role_tx: &watch::Sender<Role>,
    leadership: &Leadership,
    leader_row: &Option<LeaseRow>,
    node: &str,
) {
    let role = match leadership.acting_epoch(Instant::now()) {
        Some(epoch) => Role::Leader { epoch },
        None => Role::Standby {
            leader: leader_row.clone().filter(LeaseRow::is_live),
        },
    };
    // A standby reads the lease at every attempt; only a change of who leads (not the
    // time left on the lease) is news.
    let who = |r: &Role| match r {
        Role::Leader { epoch } => (None, *epoch),
        Role::Standby { leader } => (
            leader
                .as_ref()
                .map(|l| (l.holder.clone(), l.address.clone())),
            leader.as_ref().map_or(0, |l| l.epoch),
        ),
    };
    role_tx.send_if_modified(|current| {
        if who(current) == who(&role) && matches!(
            (&*current, &role),
            (Role::Leader { .. }, Role::Leader { .. }) | (Role::Standby { .. }, Role::Standby { .. })
        ) {
            return false;
        }
        match (&*current, &role) {
            (_, Role::Leader { epoch }) => info!(node, epoch, "lease: leading"),
            (Role::Leader { epoch }, Role::Standby { .. }) => {
                warn!(node, epoch, "lease: stepped down")
            }
            (Role::Standby { .. }, Role::Standby { leader }) => match leader {
                Some(l) => info!(node, leader = %l.holder, address = %l.address, epoch = l.epoch, "lease: standing by"),
                None => info!(node, "lease: standing by, no live leader known"),
            },
        }
        *current = role;
        true
    });
}

async fn release(conn: &Option<PgLease>, leadership: &Leadership) {
    let (Some(lease), Some(epoch)) = (conn, leadership.acting_epoch(Instant::now())) else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(2), lease.release(epoch)).await {
        Ok(Ok(true)) => info!(node = lease.node(), epoch, "lease: released"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(error = %e, "lease: not released; it expires on its own"),
        Err(_) => warn!("lease: release timed out; it expires on its own"),
    }
}
