//! Hardware-fault detection per vehicle: a sliding time window of recent reports per error
//! code ("3 within 10 minutes", not "3 in a row") and total counts per code. Memory is
//! bounded: a window keeps fewer than `threshold` entries, a vehicle at most
//! [`MAX_WINDOWS`] windows and [`MAX_COUNTERS`] counters.

use std::collections::VecDeque;

use crate::UnixMs;

/// Error codes with an open window per vehicle; a new code drops the stalest window.
pub(crate) const MAX_WINDOWS: usize = 32;
/// Error codes counted separately per vehicle; further codes share [`OTHER_CODES`].
pub(crate) const MAX_COUNTERS: usize = 64;
/// The counter for codes past [`MAX_COUNTERS`]. Lowercase, so no valid code collides.
pub(crate) const OTHER_CODES: &str = "other";

/// Reports of one code still inside its window.
struct ErrorWindow {
    code: Box<str>,
    /// `(at, count)`, oldest first; the counts sum to less than the threshold.
    reports: VecDeque<(UnixMs, u32)>,
    last_at: UnixMs,
}

/// One vehicle's error history.
#[derive(Default)]
pub(crate) struct ErrorLog {
    windows: Vec<ErrorWindow>,
    counts: Vec<(Box<str>, u64)>,
}

impl ErrorLog {
    /// Adds `n` to the code's total.
    pub(crate) fn count(&mut self, code: &str, n: u32) {
        let key =
            if self.counts.len() < MAX_COUNTERS || self.counts.iter().any(|(c, _)| &**c == code) {
                code
            } else {
                OTHER_CODES
            };
        match self.counts.iter_mut().find(|(c, _)| &**c == key) {
            Some((_, total)) => *total = total.saturating_add(u64::from(n)),
            None => self.counts.push((key.into(), u64::from(n))),
        }
    }

    /// Puts back totals stored before a restart (replacing any counted since).
    pub(crate) fn restore_counts(&mut self, counts: &[(String, u64)]) {
        self.counts.clear();
        for (code, n) in counts.iter().take(MAX_COUNTERS + 1) {
            self.counts.push((code.as_str().into(), *n));
        }
    }

    /// Totals per code, sorted by code.
    pub(crate) fn counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .counts
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        counts.sort();
        counts
    }

    /// Records `n` reports of `code` at `now`. When the reports within `window_ms` of now
    /// reach `threshold`, returns how many there are and forgets them, so a later
    /// crossing (after a person cleared the fault) needs fresh reports.
    pub(crate) fn record(
        &mut self,
        code: &str,
        n: u32,
        now: UnixMs,
        threshold: u32,
        window_ms: u64,
    ) -> Option<u32> {
        if n == 0 {
            return None;
        }
        let pos = match self.windows.iter().position(|w| &*w.code == code) {
            Some(pos) => pos,
            None => {
                if self.windows.len() >= MAX_WINDOWS {
                    self.drop_stalest();
                }
                self.windows.push(ErrorWindow {
                    code: code.into(),
                    reports: VecDeque::new(),
                    last_at: now,
                });
                self.windows.len() - 1
            }
        };
        let w = &mut self.windows[pos];
        w.last_at = now;
        match w.reports.back_mut() {
            Some((at, count)) if *at == now => *count = count.saturating_add(n),
            _ => w.reports.push_back((now, n)),
        }
        while let Some(&(at, _)) = w.reports.front() {
            if now.saturating_sub(at) > window_ms {
                w.reports.pop_front();
            } else {
                break;
            }
        }
        let within: u64 = w.reports.iter().map(|&(_, k)| u64::from(k)).sum();
        if within < u64::from(threshold.max(1)) {
            return None;
        }
        self.windows.swap_remove(pos);
        Some(u32::try_from(within).unwrap_or(u32::MAX))
    }

    fn drop_stalest(&mut self) {
        if let Some(stalest) = (0..self.windows.len()).min_by_key(|&i| self.windows[i].last_at) {
            self.windows.swap_remove(stalest);
        }
    }

    #[cfg(test)]
    fn open_windows(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn three_reports_within_the_window_cross_the_threshold() {
        let mut log = ErrorLog::default();
        assert_eq!(log.record("BRAKE", 1, 0, 3, 10 * MIN), None);
        assert_eq!(log.record("BRAKE", 1, 4 * MIN, 3, 10 * MIN), None);
        assert_eq!(log.record("BRAKE", 1, 10 * MIN, 3, 10 * MIN), Some(3));
    }

    #[test]
    fn reports_spread_wider_than_the_window_never_cross() {
        let mut log = ErrorLog::default();
        for i in 0..20 {
            assert_eq!(log.record("BRAKE", 1, i * 6 * MIN, 3, 10 * MIN), None);
        }
    }

    #[test]
    fn a_count_adds_that_many_reports_at_once() {
        let mut log = ErrorLog::default();
        assert_eq!(log.record("BRAKE", 5, 0, 3, MIN), Some(5));
    }

    #[test]
    fn a_crossing_starts_the_window_afresh() {
        let mut log = ErrorLog::default();
        assert_eq!(log.record("BRAKE", 3, 0, 3, MIN), Some(3));
        assert_eq!(log.record("BRAKE", 1, 1, 3, MIN), None);
    }

    #[test]
    fn open_windows_per_vehicle_are_capped_dropping_the_stalest() {
        let mut log = ErrorLog::default();
        for i in 0..100u64 {
            log.record(&format!("E{i}"), 1, i, 3, MIN);
        }
        assert_eq!(log.open_windows(), MAX_WINDOWS);
        // The newest code's reports are still there.
        assert_eq!(log.record("E99", 2, 100, 3, MIN), Some(3));
    }

    #[test]
    fn counters_are_capped_and_the_rest_share_one() {
        let mut log = ErrorLog::default();
        for i in 0..(MAX_COUNTERS as u32 + 10) {
            log.count(&format!("E{i:03}"), 2);
        }
        let counts = log.counts();
        assert_eq!(counts.len(), MAX_COUNTERS + 1);
        assert!(counts.contains(&(OTHER_CODES.to_string(), 20)));
    }
}
