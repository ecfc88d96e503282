//! An event-based SLI: good events over valid events, kept in per-minute counts for the SLO
//! window, with the error budget and the same burn-rate windows as the CMC SLI. The broker
//! uses it for the second CMC SLI, the share of commands acknowledged in time.

use std::time::Duration;

use crate::burn::budget;
use crate::config::millis;
use crate::ledger::MINUTE;
use crate::{BurnRates, EventSliReport, UnixMs, BURN_WINDOWS};

/// Good and valid events per minute over a rolling window.
pub struct EventSli {
    target: f64,
    window_ms: u64,
    /// The latest minute recorded or reported.
    minute: u64,
    /// Minute `m` lives at `m % len`: `(good, valid)`.
    ring: Vec<(u64, u64)>,
}

impl EventSli {
    /// An empty SLI with this target over this rolling window (at least the longest burn
    /// window is kept).
    pub fn new(target: f64, window: Duration, now: UnixMs) -> EventSli {
        let window_ms = millis(window);
        let longest = BURN_WINDOWS[BURN_WINDOWS.len() - 1].1;
        let minutes = window_ms.max(longest).div_ceil(MINUTE) + 1;
        EventSli {
            target,
            window_ms,
            minute: now / MINUTE,
            ring: vec![(0, 0); usize::try_from(minutes).unwrap_or(usize::MAX)],
        }
    }

    fn slot(&self, minute: u64) -> usize {
        (minute % self.ring.len() as u64) as usize
    }

    /// Moves the current minute forward to the one `now` is in, clearing the minutes passed.
    fn advance(&mut self, now: UnixMs) {
        let to = now / MINUTE;
        if to <= self.minute {
            return;
        }
        if to - self.minute >= self.ring.len() as u64 {
            self.ring.fill((0, 0));
        } else {
            for m in self.minute + 1..=to {
                let slot = self.slot(m);
                self.ring[slot] = (0, 0);
            }
        }
        self.minute = to;
    }

    /// Counts one valid event, good or not, that happened at `at`. An event older than the
    /// history kept is dropped; one in an earlier minute still kept counts there.
    pub fn record(&mut self, good: bool, at: UnixMs) {
        self.advance(at);
        let minute = at / MINUTE;
        if minute + (self.ring.len() as u64) <= self.minute {
            return;
        }
        let slot = self.slot(minute);
        let bucket = &mut self.ring[slot];
        bucket.0 += u64::from(good);
        bucket.1 += 1;
    }

    /// The minutes from unix minute `from` to `now`'s that counted an event: `(minute,
    /// good, valid)`, for an owner that keeps them across restarts.
    pub fn minutes(&mut self, from: u64, now: UnixMs) -> Vec<(u64, u64, u64)> {
        self.advance(now);
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        (from.max(oldest_kept)..=self.minute)
            .filter_map(|m| {
                let (good, valid) = self.ring[self.slot(m)];
                (valid > 0).then_some((m, good, valid))
            })
            .collect()
    }

    /// Puts a stored minute's counts back (after a restart), replacing what the minute
    /// holds; a minute outside the history kept, or ahead of the clock, is dropped.
    pub fn import(&mut self, minute: u64, good: u64, valid: u64) {
        if minute > self.minute || minute + (self.ring.len() as u64) <= self.minute {
            return;
        }
        let slot = self.slot(minute);
        self.ring[slot] = (good.min(valid), valid);
    }

    /// Sums over the last `window_ms` up to `now`'s minute (inclusive), like the CMC ledger.
    fn window(&self, now: UnixMs, window_ms: u64) -> (u64, u64) {
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        let first = now
            .saturating_sub(window_ms)
            .div_ceil(MINUTE)
            .max(oldest_kept);
        (first..=self.minute).fold((0, 0), |(g, v), m| {
            let (bg, bv) = self.ring[self.slot(m)];
            (g + bg, v + bv)
        })
    }

    fn burn(&self, (good, valid): (u64, u64)) -> f64 {
        if valid == 0 {
            return 0.0;
        }
        (1.0 - good as f64 / valid as f64) / budget(self.target)
    }

    /// The figures at `now`.
    pub fn report(&mut self, now: UnixMs) -> EventSliReport {
        self.advance(now);
        let now = now.max(self.minute * MINUTE);
        let (good, valid) = self.window(now, self.window_ms);
        let window_sli = if valid == 0 {
            1.0
        } else {
            good as f64 / valid as f64
        };
        let over = |i: usize| self.burn(self.window(now, BURN_WINDOWS[i].1));
        EventSliReport {
            at: now,
            target: self.target,
            window_ms: self.window_ms,
            good,
            valid,
            window_sli,
            error_budget_remaining: 1.0 - (1.0 - window_sli) / budget(self.target),
            burn: BurnRates {
                m5: over(0),
                m30: over(1),
                h1: over(2),
                h6: over(3),
                d1: over(4),
                d3: over(5),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = MINUTE;
    const T0: UnixMs = 1_000_000 * MIN;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn no_events_is_a_perfect_sli_with_the_whole_budget_left() {
        let mut s = EventSli::new(0.99, 30 * DAY, T0);
        let r = s.report(T0 + 10 * MIN);
        assert_eq!((r.good, r.valid, r.window_sli), (0, 0, 1.0));
        assert!(close(r.error_budget_remaining, 1.0));
        assert_eq!(r.burn, BurnRates::default());
    }

    #[test]
    fn one_bad_event_in_a_hundred_burns_a_one_percent_budget_at_one() {
        let mut s = EventSli::new(0.99, 30 * DAY, T0);
        for i in 0..100 {
            s.record(i != 0, T0 + 2 * MIN);
        }
        let r = s.report(T0 + 3 * MIN);
        assert_eq!((r.good, r.valid), (99, 100));
        assert!(close(r.window_sli, 0.99));
        assert!(close(r.error_budget_remaining, 0.0));
        assert!(close(r.burn.m5, 1.0));
        assert!(close(r.burn.d3, 1.0));
    }

    #[test]
    fn events_leave_the_short_windows_as_time_passes() {
        let mut s = EventSli::new(0.9, 30 * DAY, T0);
        s.record(false, T0);
        s.record(true, T0);
        let r = s.report(T0 + 4 * MIN);
        assert!(close(r.burn.m5, 5.0));
        let r = s.report(T0 + 6 * MIN);
        assert_eq!(r.burn.m5, 0.0);
        assert!(close(r.burn.h1, 5.0));
        assert_eq!(r.valid, 2);
    }

    #[test]
    fn history_older_than_the_window_is_forgotten_even_after_a_long_gap() {
        let mut s = EventSli::new(0.99, 3 * DAY, T0);
        s.record(false, T0);
        let r = s.report(T0 + 4 * 24 * 60 * MIN);
        assert_eq!(r.valid, 0);
        s.record(true, T0 + 400 * 24 * 60 * MIN);
        let r = s.report(T0 + 400 * 24 * 60 * MIN);
        assert_eq!((r.good, r.valid), (1, 1));
    }

    #[test]
    fn a_late_event_counts_in_its_own_minute_and_a_too_old_one_is_dropped() {
        let mut s = EventSli::new(0.99, 3 * DAY, T0);
        s.record(true, T0 + 10 * MIN);
        s.record(false, T0 + 2 * MIN);
        let r = s.report(T0 + 10 * MIN);
        assert_eq!((r.good, r.valid), (1, 2));
        // 2 bad of 2 in the 5m window? No: the late one fell 8 minutes back.
        assert!(close(r.burn.m5, 0.0));
        s.record(false, T0 - 5 * 24 * 60 * MIN);
        assert_eq!(s.report(T0 + 10 * MIN).valid, 2);
    }
}
