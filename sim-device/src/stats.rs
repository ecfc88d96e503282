//! What the simulated fleet counts: shared counters, latency samples and the process's own
//! CPU time, so every figure the simulator prints is measured, not assumed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Latency samples kept per measurement window; later samples are counted but dropped.
pub const MAX_SAMPLES: usize = 1_000_000;

/// Counters shared by every vehicle of one fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Vehicles connected and subscribed to their command topic now.
    pub connected: AtomicI64,
    /// Heartbeats handed to the MQTT client.
    pub heartbeats: AtomicU64,
    /// Heartbeats not sent because the client's queue was full (backpressure).
    pub heartbeats_dropped: AtomicU64,
    /// Error reports sent.
    pub error_reports: AtomicU64,
    /// Malformed or spoofed messages sent on purpose.
    pub bad_messages: AtomicU64,
    /// Commands received.
    pub commands: AtomicU64,
    /// `service_out` commands received.
    pub service_out: AtomicU64,
    /// `service_in` commands received.
    pub service_in: AtomicU64,
    /// Acks sent.
    pub acks: AtomicU64,
    /// Connection errors (failed connects and dropped connections).
    pub errors: AtomicU64,
    /// Successful connections after the first one of a vehicle.
    pub reconnects: AtomicU64,
    /// Probe heartbeats sent (see `fleet` for what a probe is).
    pub probes: AtomicU64,
    /// Probes with no answer within `fleet::PROBE_TIMEOUT`.
    pub probes_lost: AtomicU64,
    /// Probe round trips, in microseconds.
    pub probe_rtt: Samples,
    /// Lock requests received (journeys).
    pub unlock_requests: AtomicU64,
    /// Lock requests that did not decode.
    pub unlock_requests_malformed: AtomicU64,
    /// Lock answers handed to the client.
    pub unlock_answers: AtomicU64,
    /// Lock answers not sent: the answer queue or the client's queue was full.
    pub unlock_answers_dropped: AtomicU64,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A bounded list of latency samples in microseconds.
#[derive(Debug, Default)]
pub struct Samples {
    inner: Mutex<Vec<u32>>,
}

impl Samples {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let mut v = match self.inner.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        if v.len() < MAX_SAMPLES {
            v.push(us);
        }
    }

    /// Takes every sample recorded so far, leaving the list empty.
    pub fn take(&self) -> Vec<u32> {
        let mut v = match self.inner.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *v)
    }
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of microsecond samples (nearest rank).
    pub fn of_micros(mut us: Vec<u32>) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let rank = |p: f64| {
            let i = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1;
            f64::from(us[i]) / 1000.0
        };
        Percentiles {
            n: us.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }

    /// Percentiles of signed millisecond values (negative values are kept as measured).
    pub fn of_millis(mut ms: Vec<f64>) -> Percentiles {
        if ms.is_empty() {
            return Percentiles::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Percentiles {
            n: ms.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// CPU time (user + system) this process has used so far; `None` where `/proc` is absent.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time_of("self")
}

/// CPU time (user + system) of process `pid` ("self" for this one), from `/proc`.
pub fn cpu_time_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A CPU meter: the share of one core this process used since the meter was started.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    wall: Instant,
    cpu: Option<Duration>,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            cpu: own_cpu_time(),
        }
    }

    /// Cores used on average since `start` (1.0 = one full core).
    pub fn cores(&self) -> Option<f64> {
        let wall = self.wall.elapsed().as_secs_f64();
        let used = own_cpu_time()?.checked_sub(self.cpu?)?;
        (wall > 0.0).then(|| used.as_secs_f64() / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of_micros((1..=100).map(|i| i * 1000).collect());
        assert_eq!(
            (p.n, p.p50_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(Percentiles::of_micros(Vec::new()), Percentiles::default());
    }

    #[test]
    fn own_cpu_time_is_readable_on_linux() {
        assert!(own_cpu_time().is_some());
    }
}
