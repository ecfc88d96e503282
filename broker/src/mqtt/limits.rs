//! Rate limits of the MQTT front: a token bucket per client for publishes (excess dropped
//! and counted; a client that never stops flooding is disconnected) and one bucket for
//! CONNECTs of the whole listener (a reconnect storm is admitted at a bounded pace).
//!
//! Time comes in as a tokio `Instant`, so tests drive it with `tokio::time::pause()`.

use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Publish and connect limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Publishes per second one client may send on average.
    pub publish_rate: f64,
    /// Publishes one client may send at once after a quiet spell.
    pub publish_burst: u32,
    /// A client whose publishes are dropped this many times without ever pausing long
    /// enough to refill its bucket is disconnected; 0 never disconnects.
    pub disconnect_after: u32,
    /// CONNECTs per second the listener accepts on average.
    pub connect_rate: f64,
    /// CONNECTs accepted at once.
    pub connect_burst: u32,
    /// Publishes per second one backend or ops user (`[[auth.users]]`) may send: a
    /// backend sending unlock requests to a fleet publishes far more than a vehicle.
    pub user_publish_rate: f64,
    /// Publishes one user may send at once.
    pub user_publish_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            publish_rate: 10.0,
            publish_burst: 100,
            disconnect_after: 1_000,
            connect_rate: 1_000.0,
            connect_burst: 20_000,
            user_publish_rate: 2_000.0,
            user_publish_burst: 4_000,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            tokens: burst,
            burst,
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                f64::MIN_POSITIVE
            },
            last: now,
        }
    }

    /// Refills for the time since the last call; whether the bucket is full now.
    fn refill(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= self.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Allow,
    /// Over the rate: drop it, keep the client.
    Drop,
    /// Over the rate for too long: drop it and disconnect the client.
    Disconnect,
}

struct ClientBucket {
    bucket: TokenBucket,
    /// Drops since the bucket was last full.
    strikes: u32,
    /// The verdict on the publish being processed, for the ACL hook that runs next.
    pending: Option<Verdict>,
}

/// A token bucket per client id.
pub struct PublishLimiter {
    limits: Limits,
    clients: DashMap<String, ClientBucket>,
}

impl PublishLimiter {
    /// With `limits`.
    pub fn new(limits: Limits) -> PublishLimiter {
        PublishLimiter {
            limits,
            clients: DashMap::new(),
        }
    }

    /// Judges one publish of `client_id` (a vehicle, or any client that is no user) at
    /// `now`. A `Drop` or `Disconnect` is also kept for `take_pending`.
    pub fn check(&self, client_id: &str, now: Instant) -> Verdict {
        self.check_at(client_id, false, now)
    }

    /// As [`PublishLimiter::check`], for a client that is a user when `user`: it gets the
    /// users' rate.
    pub fn check_at(&self, client_id: &str, user: bool, now: Instant) -> Verdict {
        let (rate, burst) = if user {
            (
                self.limits.user_publish_rate,
                self.limits.user_publish_burst,
            )
        } else {
            (self.limits.publish_rate, self.limits.publish_burst)
        };
        let mut entry = self
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| ClientBucket {
                bucket: TokenBucket::new(rate, burst, now),
                strikes: 0,
                pending: None,
            });
        let client = entry.value_mut();
        if client.bucket.refill(now) {
            client.strikes = 0;
        }
        let verdict = if client.bucket.try_take(now) {
            Verdict::Allow
        } else {
            client.strikes = client.strikes.saturating_add(1);
            if self.limits.disconnect_after > 0 && client.strikes >= self.limits.disconnect_after {
                Verdict::Disconnect
            } else {
                Verdict::Drop
            }
        };
        client.pending = (verdict != Verdict::Allow).then_some(verdict);
        verdict
    }

    /// The verdict `check` gave the publish `client_id` is sending now, if it was not
    /// `Allow`; clears it.
    pub fn take_pending(&self, client_id: &str) -> Option<Verdict> {
        self.clients
            .get_mut(client_id)
            .and_then(|mut c| c.pending.take())
    }

    /// Forgets a client that disconnected.
    pub fn forget(&self, client_id: &str) {
        self.clients.remove(client_id);
    }

    /// Clients with a bucket now.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// One bucket for the CONNECTs of the whole listener.
pub struct ConnectLimiter {
    bucket: Mutex<TokenBucket>,
}

impl ConnectLimiter {
    /// With `limits.connect_rate` and `limits.connect_burst`, full at `now`.
    pub fn new(limits: &Limits, now: Instant) -> ConnectLimiter {
        ConnectLimiter {
            bucket: Mutex::new(TokenBucket::new(
                limits.connect_rate,
                limits.connect_burst,
                now,
            )),
        }
    }

    /// Whether one more CONNECT may be processed at `now`.
    pub fn try_admit(&self, now: Instant) -> bool {
        let mut bucket = match self.bucket.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        bucket.try_take(now)
    }
}

/// How long an empty bucket with `rate` takes to grant one token (for messages).
pub fn refill_interval(rate: f64) -> Duration {
    if rate.is_finite() && rate > 0.0 {
        Duration::from_secs_f64((1.0 / rate).min(86_400.0))
    } else {
        Duration::from_secs(86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: u32, disconnect_after: u32) -> Limits {
        Limits {
            publish_rate: rate,
            publish_burst: burst,
            disconnect_after,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_grants_its_burst_then_refills_at_its_rate() {
        let now = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, now);
        assert!(b.try_take(now) && b.try_take(now) && b.try_take(now));
        assert!(!b.try_take(now));
        assert!(!b.try_take(now + Duration::from_millis(400)));
        assert!(b.try_take(now + Duration::from_millis(500)));
        // Never more than the burst, however long it was quiet.
        let later = now + Duration::from_secs(3600);
        assert!(b.try_take(later) && b.try_take(later) && b.try_take(later));
        assert!(!b.try_take(later));
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_over_the_rate_are_dropped_and_the_client_keeps_its_link() {
        let limiter = PublishLimiter::new(limits(1.0, 2, 0));
        let now = Instant::now();
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
        for _ in 0..1000 {
            assert_eq!(limiter.check("v1", now), Verdict::Drop);
        }
        assert_eq!(limiter.take_pending("v1"), Some(Verdict::Drop));
        assert_eq!(limiter.take_pending("v1"), None);
        assert_eq!(
            limiter.check("v1", now + Duration::from_secs(1)),
            Verdict::Allow
        );
        assert_eq!(limiter.take_pending("v1"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_publishes_at_the_users_rate_and_a_vehicle_at_its_own() {
        let limiter = PublishLimiter::new(Limits {
            user_publish_rate: 100.0,
            user_publish_burst: 50,
            ..limits(1.0, 2, 0)
        });
        let now = Instant::now();
        let allowed = |id: &str, user: bool| {
            (0..60)
                .filter(|_| limiter.check_at(id, user, now) == Verdict::Allow)
                .count()
        };
        assert_eq!(allowed("backend", true), 50);
        assert_eq!(allowed("v1", false), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn one_flooding_client_does_not_use_up_another_clients_bucket() {
        let limiter = PublishLimiter::new(limits(1.0, 1, 0));
        let now = Instant::now();
        limiter.check("flood", now);
        assert_eq!(limiter.check("flood", now), Verdict::Drop);
        assert_eq!(limiter.check("v2", now), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_pauses_is_disconnected_after_the_set_number_of_drops() {
        let limiter = PublishLimiter::new(limits(10.0, 5, 3));
        let mut now = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check("v1", now), Verdict::Allow);
        }
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        // A short pause that does not refill the bucket does not wipe the strikes.
        now += Duration::from_millis(100);
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
        assert_eq!(limiter.check("v1", now), Verdict::Disconnect);
        assert_eq!(limiter.take_pending("v1"), Some(Verdict::Disconnect));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_that_refills_the_bucket_forgives_earlier_drops() {
        let limiter = PublishLimiter::new(limits(10.0, 2, 3));
        let mut now = Instant::now();
        for _ in 0..2 {
            limiter.check("v1", now);
        }
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        now += Duration::from_secs(1);
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_client_starts_with_a_full_bucket() {
        let limiter = PublishLimiter::new(limits(1.0, 1, 0));
        let now = Instant::now();
        limiter.check("v1", now);
        assert_eq!(limiter.check("v1", now), Verdict::Drop);
        limiter.forget("v1");
        assert_eq!(limiter.tracked(), 0);
        assert_eq!(limiter.check("v1", now), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn connects_beyond_the_burst_wait_for_the_rate() {
        let limits = Limits {
            connect_rate: 100.0,
            connect_burst: 3,
            ..Limits::default()
        };
        let now = Instant::now();
        let limiter = ConnectLimiter::new(&limits, now);
        assert!(limiter.try_admit(now) && limiter.try_admit(now) && limiter.try_admit(now));
        assert!(!limiter.try_admit(now));
        assert!(limiter.try_admit(now + refill_interval(100.0)));
    }
}
