//! The SLI ledger: good and valid vehicle-time, integrated piecewise at every change of the
//! counts, kept as per-minute buckets in a ring as long as the SLO window (43,201 buckets
//! of 24 bytes for 30 days). Each bucket also says how long the broker itself was down in
//! that minute, so an outage of the broker is accounted for instead of skipped.

use crate::vehicle::SliClass;
use crate::UnixMs;

/// One minute in ms.
pub(crate) const MINUTE: u64 = 60_000;
/// The longest burn-rate window (3 days): the ring is never shorter.
const LONGEST_BURN_MINUTES: u64 = 3 * 24 * 60;

/// Vehicle-milliseconds counted good and valid, and milliseconds the broker was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) good: u64,
    pub(crate) valid: u64,
    pub(crate) down: u64,
}

/// Current counts and the per-minute history.
pub(crate) struct SliLedger {
    /// Integrated up to here.
    clock: UnixMs,
    /// The earliest instant the history covers (startup, or older imported minutes).
    since: UnixMs,
    /// The minute `clock` is in.
    minute: u64,
    good: u64,
    valid: u64,
    /// Minute `m` lives at `m % len`.
    ring: Vec<Bucket>,
    /// While the broker cannot see the fleet (see [`SliLedger::set_down`]): the time is
    /// downtime, and with `Some(true)` the valid count is valid but not good.
    down: Option<bool>,
}

impl SliLedger {
    /// A ledger starting at `now` keeping at least `history_ms` of buckets.
    pub(crate) fn new(now: UnixMs, history_ms: u64) -> SliLedger {
        let minutes = history_ms.div_ceil(MINUTE).max(LONGEST_BURN_MINUTES) + 1;
        SliLedger {
            clock: now,
            since: now,
            minute: now / MINUTE,
            good: 0,
            valid: 0,
            ring: vec![Bucket::default(); usize::try_from(minutes).unwrap_or(usize::MAX)],
            down: None,
        }
    }

    /// From the clock on, time is integrated as downtime (`Some(bad)`, as
    /// [`SliLedger::account_downtime`] does for a gap) or as usual (`None`). The caller
    /// advances the ledger to the switch first.
    pub(crate) fn set_down(&mut self, down: Option<bool>) {
        self.down = down;
    }

    /// Vehicles counted good and valid right now.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.good, self.valid)
    }

    /// Re-counts one vehicle from `before` to `after` at the ledger's clock.
    pub(crate) fn shift(&mut self, before: SliClass, after: SliClass) {
        if before == after {
            return;
        }
        match before {
            SliClass::Good => {
                self.good -= 1;
                self.valid -= 1;
            }
            SliClass::Bad => self.valid -= 1,
            SliClass::Uncounted => {}
        }
        match after {
            SliClass::Good => {
                self.good += 1;
                self.valid += 1;
            }
            SliClass::Bad => self.valid += 1,
            SliClass::Uncounted => {}
        }
    }

    fn slot(&self, minute: u64) -> usize {
        (minute % self.ring.len() as u64) as usize
    }

    /// Integrates the current counts up to `to` (an earlier `to` changes nothing).
    pub(crate) fn advance(&mut self, to: UnixMs) {
        if to <= self.clock {
            return;
        }
        let len = self.ring.len() as u64;
        let to_minute = to / MINUTE;
        if to_minute >= self.minute + len {
            // Every bucket kept would be rewritten: start at the oldest one kept.
            self.minute = to_minute + 1 - len;
            self.clock = self.minute * MINUTE;
            self.ring.fill(Bucket::default());
        }
        while self.clock < to {
            let boundary = (self.minute + 1) * MINUTE;
            let end = to.min(boundary);
            let dt = end - self.clock;
            let slot = self.slot(self.minute);
            let bucket = &mut self.ring[slot];
            match self.down {
                None => {
                    bucket.good = bucket.good.saturating_add(self.good.saturating_mul(dt));
                    bucket.valid = bucket.valid.saturating_add(self.valid.saturating_mul(dt));
                }
                Some(bad) => {
                    bucket.down = bucket.down.saturating_add(dt);
                    if bad {
                        bucket.valid = bucket.valid.saturating_add(self.valid.saturating_mul(dt));
                    }
                }
            }
            self.clock = end;
            if end == boundary {
                self.minute += 1;
                let slot = self.slot(self.minute);
                self.ring[slot] = Bucket::default();
            }
        }
    }

    /// Sums over the last `window_ms` up to the clock, in whole minutes plus the current
    /// partial one (exact when the clock is on a minute boundary). Windows longer than the
    /// history sum what exists.
    pub(crate) fn window(&self, window_ms: u64) -> Bucket {
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        let first = self
            .clock
            .saturating_sub(window_ms)
            .div_ceil(MINUTE)
            .max(oldest_kept);
        let mut sum = Bucket::default();
        for minute in first..=self.minute {
            let b = self.ring[self.slot(minute)];
            sum.good = sum.good.saturating_add(b.good);
            sum.valid = sum.valid.saturating_add(b.valid);
            sum.down = sum.down.saturating_add(b.down);
        }
        sum
    }

    /// How much of the last `window_ms` the history covers (less than the window while
    /// the broker has not yet run for that long).
    pub(crate) fn covered(&self, window_ms: u64) -> u64 {
        self.clock - self.since.max(self.clock.saturating_sub(window_ms))
    }

    /// Where the ledger is integrated up to.
    pub(crate) fn clock(&self) -> UnixMs {
        self.clock
    }

    /// The buckets of minutes `from..=` the current one (which is partial), oldest first,
    /// limited to the history kept.
    pub(crate) fn minutes_since(&self, from: u64) -> impl Iterator<Item = (u64, Bucket)> + '_ {
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        (from.max(oldest_kept)..=self.minute).map(|m| (m, self.ring[self.slot(m)]))
    }

    /// Puts back a stored bucket. Minutes outside the history kept (or after the clock)
    /// are ignored. Only meaningful before the ledger integrates past its start.
    pub(crate) fn import(&mut self, minute: u64, bucket: Bucket) {
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        if (oldest_kept..=self.minute).contains(&minute) {
            let slot = self.slot(minute);
            self.ring[slot] = bucket;
            if bucket != Bucket::default() {
                self.since = self.since.min(minute * MINUTE);
            }
        }
    }

    /// Accounts `from..to` (up to the clock) as time the broker was down: `down` in every
    /// minute it covers, and with `bad` the current valid count as valid but not good
    /// vehicle-time (nobody could reach the fleet). Returns the downtime within the history
    /// kept.
    pub(crate) fn account_downtime(&mut self, from: UnixMs, to: UnixMs, bad: bool) -> u64 {
        let oldest_kept = (self.minute + 1).saturating_sub(self.ring.len() as u64);
        let mut at = from.max(oldest_kept * MINUTE);
        let to = to.min(self.clock);
        if at < to {
            self.since = self.since.min(at);
        }
        let mut total = 0;
        while at < to {
            let minute = at / MINUTE;
            let end = to.min((minute + 1) * MINUTE);
            let dt = end - at;
            let slot = self.slot(minute);
            let bucket = &mut self.ring[slot];
            bucket.down = bucket.down.saturating_add(dt);
            if bad {
                bucket.valid = bucket.valid.saturating_add(self.valid.saturating_mul(dt));
            }
            total += dt;
            at = end;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000 * MINUTE;

    fn ledger_with(good: u64, bad: u64) -> SliLedger {
        let mut l = SliLedger::new(T0, 30 * 24 * 60 * MINUTE);
        for _ in 0..good {
            l.shift(SliClass::Uncounted, SliClass::Good);
        }
        for _ in 0..bad {
            l.shift(SliClass::Uncounted, SliClass::Bad);
        }
        l
    }

    #[test]
    fn ten_vehicles_with_one_out_for_six_of_sixty_minutes_give_ninety_nine_percent() {
        let mut l = ledger_with(10, 0);
        l.advance(T0 + 20 * MINUTE);
        l.shift(SliClass::Good, SliClass::Bad);
        l.advance(T0 + 26 * MINUTE);
        l.shift(SliClass::Bad, SliClass::Good);
        l.advance(T0 + 60 * MINUTE);
        let w = l.window(60 * MINUTE);
        assert_eq!(w.valid, 600 * MINUTE);
        assert_eq!(w.good, 594 * MINUTE);
    }

    #[test]
    fn a_change_mid_minute_is_split_across_the_minute_boundary() {
        let mut l = ledger_with(2, 0);
        l.advance(T0 + MINUTE / 2);
        l.shift(SliClass::Good, SliClass::Bad);
        l.advance(T0 + 2 * MINUTE);
        let first = l.ring[l.slot(T0 / MINUTE)];
        let second = l.ring[l.slot(T0 / MINUTE + 1)];
        assert_eq!(
            first,
            Bucket {
                good: 2 * MINUTE / 2 + MINUTE / 2,
                valid: 2 * MINUTE,
                down: 0,
            }
        );
        assert_eq!(
            second,
            Bucket {
                good: MINUTE,
                valid: 2 * MINUTE,
                down: 0,
            }
        );
    }

    #[test]
    fn windows_longer_than_the_history_use_what_exists() {
        let mut l = ledger_with(3, 1);
        l.advance(T0 + 5 * MINUTE);
        let w = l.window(3 * 24 * 60 * MINUTE);
        assert_eq!(w.valid, 4 * 5 * MINUTE);
        assert_eq!(w.good, 3 * 5 * MINUTE);
    }

    #[test]
    fn history_older_than_the_ring_is_forgotten_and_a_long_gap_is_cheap() {
        let mut l = SliLedger::new(T0, 60 * MINUTE);
        l.shift(SliClass::Uncounted, SliClass::Bad);
        l.advance(T0 + 10 * MINUTE);
        l.shift(SliClass::Bad, SliClass::Good);
        let far = T0 + 365 * 24 * 60 * MINUTE;
        l.advance(far);
        let w = l.window(10 * 24 * 60 * MINUTE);
        assert_eq!(w.good, w.valid);
        assert_eq!(w.valid, (LONGEST_BURN_MINUTES) * MINUTE);
    }

    #[test]
    fn exported_minutes_imported_into_a_later_ledger_give_the_same_window() {
        let mut before = ledger_with(3, 1);
        before.advance(T0 + 10 * MINUTE + MINUTE / 2);
        let saved: Vec<(u64, Bucket)> = before.minutes_since(T0 / MINUTE).collect();
        assert_eq!(saved.len(), 11);
        assert_eq!(saved[10].0, T0 / MINUTE + 10);
        let mut after = SliLedger::new(before.clock(), 30 * 24 * 60 * MINUTE);
        for (minute, bucket) in saved {
            after.import(minute, bucket);
        }
        assert_eq!(after.window(60 * MINUTE), before.window(60 * MINUTE));
    }

    #[test]
    fn downtime_is_marked_per_minute_and_counted_bad_when_asked() {
        let restart = T0 + 3 * MINUTE + MINUTE / 2;
        let mut l = SliLedger::new(restart, 30 * 24 * 60 * MINUTE);
        l.shift(SliClass::Uncounted, SliClass::Good);
        l.shift(SliClass::Uncounted, SliClass::Good);
        let down = l.account_downtime(T0 + MINUTE / 2, restart, true);
        assert_eq!(down, 3 * MINUTE);
        let first = l.ring[l.slot(T0 / MINUTE)];
        assert_eq!(first.down, MINUTE / 2);
        assert_eq!(first.valid, 2 * MINUTE / 2);
        assert_eq!(first.good, 0);
        let w = l.window(60 * MINUTE);
        assert_eq!((w.good, w.valid, w.down), (0, 6 * MINUTE, 3 * MINUTE));
    }

    #[test]
    fn downtime_counted_as_excluded_adds_no_vehicle_time() {
        let restart = T0 + 2 * MINUTE;
        let mut l = SliLedger::new(restart, 30 * 24 * 60 * MINUTE);
        l.shift(SliClass::Uncounted, SliClass::Good);
        assert_eq!(l.account_downtime(T0, restart, false), 2 * MINUTE);
        let w = l.window(60 * MINUTE);
        assert_eq!((w.good, w.valid, w.down), (0, 0, 2 * MINUTE));
    }

    #[test]
    fn a_down_stretch_is_downtime_bad_or_excluded_and_then_counts_as_usual() {
        for (bad, valid_while_down) in [(true, 2 * 2 * MINUTE), (false, 0)] {
            let mut l = SliLedger::new(T0, 30 * 24 * 60 * MINUTE);
            l.shift(SliClass::Uncounted, SliClass::Good);
            l.shift(SliClass::Uncounted, SliClass::Good);
            l.advance(T0 + MINUTE);
            l.set_down(Some(bad));
            l.advance(T0 + 3 * MINUTE);
            l.set_down(None);
            l.advance(T0 + 4 * MINUTE);
            let w = l.window(60 * MINUTE);
            let usual = 2 * 2 * MINUTE;
            assert_eq!(
                (w.good, w.valid, w.down),
                (usual, usual + valid_while_down, 2 * MINUTE),
                "bad = {bad}"
            );
        }
    }

    #[test]
    fn a_downtime_longer_than_the_history_is_cut_to_it() {
        let restart = T0 + 365 * 24 * 60 * MINUTE;
        let mut l = SliLedger::new(restart, 60 * MINUTE);
        let down = l.account_downtime(T0, restart, true);
        assert_eq!(down, LONGEST_BURN_MINUTES * MINUTE);
    }

    #[test]
    fn advancing_to_an_earlier_time_changes_nothing() {
        let mut l = ledger_with(1, 0);
        l.advance(T0 + MINUTE);
        l.advance(T0);
        assert_eq!(l.window(MINUTE * 10).valid, MINUTE);
    }
}
