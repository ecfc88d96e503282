//! Active/standby engines: one engine leads, holding a lease in PostgreSQL; the others
//! stand by and take over when the lease runs out. Every takeover increases the lease's
//! fencing epoch, and a write fenced with [`crate::store::lease::fence`] commits only for the current epoch,
//! so a deposed leader that wakes up late can neither record nor (since announcements
//! follow commits) announce anything.
//!
//! Why a lease row and not an advisory lock: an advisory lock lives as long as its
//! session, so a leader cut off from the database keeps it until the server notices the
//! dead TCP connection (minutes, with default keep-alives), and the leader itself learns
//! of the loss only when it next uses that session. A lease row with an expiry in the
//! database's own time gives both sides the same deadline: the leader stops acting when
//! its last renewal is `ttl` old by its own clock, measured from when it *sent* that
//! renewal, which is never later than the expiry the database recorded; a standby can
//! take the row only after that expiry. So the leader stops before its successor starts,
//! whatever the partition. The epoch comes with the row for free.
//!
//! This module holds the leader's view of its lease (pure, on the injected clock) and
//! [`run`], the task that renews it; the SQL is in [`crate::store::lease`].

mod task;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{Kind, TextWriter};
pub use crate::store::lease::{LeaseError, LeaseRow, PgLease};
pub use task::{run, LeaseHandle, LeaseTarget};
pub use watch::{Watch, WatchCounters, WatchSettings};

/// Who leads, as this engine knows it: for /readyz, /metrics and a standby's ops API.
#[derive(Debug)]
pub struct Status {
    /// This engine's node name.
    pub node: String,
    role: tokio::sync::watch::Receiver<Role>,
    /// Terms this engine began leading since it started.
    takeovers: AtomicU64,
}

impl Status {
    /// Status for `node`, following the lease task's `role`.
    pub fn new(node: String, role: tokio::sync::watch::Receiver<Role>) -> Arc<Status> {
        Arc::new(Status {
            node,
            role,
            takeovers: AtomicU64::new(0),
        })
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// This engine began a term.
    pub fn took_over(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    /// `fleet_leader`, `fleet_lease_epoch` and `fleet_takeovers_total`.
    pub fn render(&self, w: &mut TextWriter) {
        let (leading, epoch) = match self.role() {
            Role::Leader { epoch } => (1.0, epoch),
            Role::Standby { leader } => (0.0, leader.map_or(0, |l| l.epoch)),
        };
        w.family(
            "fleet_leader",
            Kind::Gauge,
            "1 while this engine holds the lease and acts, 0 while it stands by.",
        );
        w.sample("fleet_leader", &[("node", &self.node)], leading);
        w.single(
            "fleet_lease_epoch",
            Kind::Gauge,
            "The fencing epoch this engine leads with, or the live leader's (0: none known).",
            epoch as f64,
        );
        w.single(
            "fleet_takeovers_total",
            Kind::Counter,
            "Terms this engine began leading since it started.",
            self.takeovers.load(Ordering::Relaxed) as f64,
        );
    }
}

/// How long a lease lasts and how often the leader renews it (and a standby tries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// Lifetime of a grant in the database: a dead leader is replaced this long after its
    /// last renewal, plus up to one `renew_every`.
    pub ttl: Duration,
    /// Period of renewals and of a standby's attempts.
    pub renew_every: Duration,
}

impl Default for LeaseTimings {
    /// A takeover within 4 s of a leader's death (`ttl` + one attempt period), inside the
    /// 5 s the design promises, with two renewals per lifetime to spare.
    fn default() -> Self {
        LeaseTimings {
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
        }
    }
}

impl LeaseTimings {
    /// Share of `ttl` the leader gives up early, for clocks that run at slightly different
    /// rates here and in the database (and for the time a commit takes to land).
    const SAFETY_DIVISOR: u32 = 10;

    /// How long a grant is trusted locally, from the moment its request was sent.
    pub fn trusted_for(&self) -> Duration {
        self.ttl - self.ttl / Self::SAFETY_DIVISOR
    }

    /// Whether the timings can work: renewals must come well inside a lifetime.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl.is_zero() || self.renew_every.is_zero() {
            return Err("lease ttl and renew_every must be more than zero".into());
        }
        if self.renew_every * 2 > self.trusted_for() {
            return Err(format!(
                "renew_every ({:?}) must be at most half of 90 % of ttl ({:?}), so one lost renewal does not depose the leader",
                self.renew_every, self.ttl
            ));
        }
        Ok(())
    }
}

/// What this engine is, as the lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Holding the lease: acts, records and announces, with this fencing epoch.
    Leader {
        /// The fencing epoch of this term.
        epoch: u64,
    },
    /// Not holding it: watches, publishes nothing. `leader` is the holder last read from
    /// the database (none when the lease is free or the database unreachable).
    Standby {
        /// The current holder.
        leader: Option<LeaseRow>,
    },
}

/// The leader's local view of its lease: which epoch it holds and until when it may act.
#[derive(Debug, Clone)]
pub struct Leadership {
    timings: LeaseTimings,
    held: Option<Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    until: Instant,
}

impl Leadership {
    /// Holding nothing yet.
    pub fn new(timings: LeaseTimings) -> Leadership {
        Leadership {
            timings,
            held: None,
        }
    }

    /// The database granted (or renewed) `epoch` for a request sent at `sent_at`.
    pub fn granted(&mut self, epoch: u64, sent_at: Instant) {
        self.held = Some(Held {
            epoch,
            until: sent_at + self.timings.trusted_for(),
        });
    }

    /// The database refused: someone else holds the lease.
    pub fn refused(&mut self) {
        self.held = None;
    }

    /// The epoch to renew (the one held, even if its local trust ran out: the database
    /// decides whether the term goes on or a new one starts).
    pub fn epoch_to_renew(&self) -> u64 {
        self.held.map_or(0, |h| h.epoch)
    }

    /// The epoch this engine may act with at `now`: none once the trust ran out, even if
    /// the database could not be asked (a failed renewal changes nothing until then).
    pub fn acting_epoch(&self, now: Instant) -> Option<u64> {
        self.held.filter(|h| now < h.until).map(|h| h.epoch)
    }

    /// When the local trust runs out (to wake up then and step down on time).
    pub fn trusted_until(&self) -> Option<Instant> {
        self.held.map(|h| h.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> LeaseTimings {
        LeaseTimings {
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_is_trusted_for_ninety_percent_of_the_ttl_from_when_it_was_asked() {
        let mut l = Leadership::new(timings());
        let asked = Instant::now();
        tokio::time::advance(Duration::from_millis(400)).await; // the reply took 0.4 s
        l.granted(7, asked);
        assert_eq!(l.acting_epoch(Instant::now()), Some(7));
        assert_eq!(l.trusted_until(), Some(asked + Duration::from_millis(2700)));
        tokio::time::advance(Duration::from_millis(2299)).await;
        assert_eq!(l.acting_epoch(Instant::now()), Some(7));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            l.acting_epoch(Instant::now()),
            None,
            "stops at 2.7 s after asking"
        );
        assert_eq!(l.epoch_to_renew(), 7, "still renews its own term");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_keep_the_leader_acting_until_its_trust_runs_out_and_no_longer() {
        let mut l = Leadership::new(timings());
        l.granted(3, Instant::now());
        // The database is unreachable: no grant, no refusal.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.acting_epoch(Instant::now()), Some(3));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.acting_epoch(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_deposes_at_once_and_the_next_attempt_asks_for_a_new_term() {
        let mut l = Leadership::new(timings());
        l.granted(3, Instant::now());
        l.refused();
        assert_eq!(l.acting_epoch(Instant::now()), None);
        assert_eq!(l.epoch_to_renew(), 0);
    }

    #[test]
    fn timings_that_would_depose_on_one_lost_renewal_are_refused() {
        assert!(timings().check().is_ok());
        let tight = LeaseTimings {
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_secs(1),
        };
        assert!(tight.check().unwrap_err().contains("renew_every"));
        let zero = LeaseTimings {
            ttl: Duration::ZERO,
            renew_every: Duration::from_secs(1),
        };
        assert!(zero.check().is_err());
    }
}
