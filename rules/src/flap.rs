//! Flap detection: a vehicle whose heartbeat is lost again and again within the flap window
//! is reported once per episode, not on every flip. An episode ends once a full window has
//! passed in which the vehicle was not flapping.

use std::collections::VecDeque;

use crate::UnixMs;

/// The recent `heartbeat_lost` sets of one vehicle (at most `threshold` of them).
#[derive(Default)]
pub(crate) struct FlapHistory {
    sets: VecDeque<UnixMs>,
    /// A new episode can start from here on.
    episode_until: UnixMs,
}

impl FlapHistory {
    /// Records a `heartbeat_lost` set at `at`. Returns the sets within the window when this
    /// starts a flapping episode.
    pub(crate) fn record(&mut self, at: UnixMs, threshold: u32, window_ms: u64) -> Option<u32> {
        let threshold = usize::try_from(threshold.max(1)).unwrap_or(usize::MAX);
        self.sets.push_back(at);
        while self.sets.len() > threshold {
            self.sets.pop_front();
        }
        while let Some(&t) = self.sets.front() {
            if at.saturating_sub(t) >= window_ms {
                self.sets.pop_front();
            } else {
                break;
            }
        }
        if self.sets.len() < threshold {
            return None;
        }
        let oldest = self.sets.front().copied().unwrap_or(at);
        let starts = at >= self.episode_until;
        // Flapping lasts until the oldest of these sets leaves the window; the episode one
        // full window longer.
        self.episode_until = oldest.saturating_add(window_ms).saturating_add(window_ms);
        starts.then(|| u32::try_from(self.sets.len()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn the_third_flip_within_an_hour_reports_flapping_once() {
        let mut f = FlapHistory::default();
        assert_eq!(f.record(0, 3, HOUR), None);
        assert_eq!(f.record(10, 3, HOUR), None);
        assert_eq!(f.record(20, 3, HOUR), Some(3));
        assert_eq!(f.record(30, 3, HOUR), None);
        assert_eq!(f.record(HOUR, 3, HOUR), None);
    }

    #[test]
    fn flips_spread_wider_than_the_window_are_not_flapping() {
        let mut f = FlapHistory::default();
        for i in 0..10 {
            assert_eq!(f.record(i * HOUR / 2, 3, HOUR), None);
        }
    }

    #[test]
    fn a_new_episode_is_reported_after_a_full_quiet_window() {
        let mut f = FlapHistory::default();
        f.record(0, 3, HOUR);
        f.record(1, 3, HOUR);
        assert_eq!(f.record(2, 3, HOUR), Some(3));
        // Flapping until 0 + 1h; quiet until 2h; a burst at 2h starts a new episode.
        let start = 2 * HOUR;
        f.record(start, 3, HOUR);
        f.record(start + 1, 3, HOUR);
        assert_eq!(f.record(start + 2, 3, HOUR), Some(3));
    }

    #[test]
    fn a_burst_less_than_a_window_after_flapping_is_the_same_episode() {
        let mut f = FlapHistory::default();
        f.record(0, 3, HOUR);
        f.record(1, 3, HOUR);
        assert_eq!(f.record(2, 3, HOUR), Some(3));
        let start = HOUR + HOUR / 2;
        f.record(start, 3, HOUR);
        f.record(start + 1, 3, HOUR);
        assert_eq!(f.record(start + 2, 3, HOUR), None);
    }
}
