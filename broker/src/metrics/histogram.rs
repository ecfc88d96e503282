//! A lock-free histogram of durations with fixed bucket bounds, in the shape Prometheus
//! expects (cumulative buckets, sum, count).

use std::sync::atomic::{AtomicU64, Ordering};

/// Durations observed in milliseconds, exposed in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow (`+Inf`) bucket; not cumulative.
    counts: Vec<AtomicU64>,
    sum_ms: AtomicU64,
}

/// A histogram's values at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`; the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
    /// Observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds, in seconds, ascending.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe_ms(&self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        let i = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The cumulative view.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, running));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            count: running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_accumulate() {
        static BOUNDS: [f64; 3] = [0.1, 1.0, 30.0];
        let h = Histogram::new(&BOUNDS);
        h.observe_ms(100); // exactly on a bound: le="0.1"
        h.observe_ms(900);
        h.observe_ms(31_000);
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(0.1, 1), (1.0, 2), (30.0, 2), (f64::INFINITY, 3)]
        );
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 32.0).abs() < 1e-9);
    }
}
