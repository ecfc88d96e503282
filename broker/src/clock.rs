//! The broker's one source of time: wall-clock unix ms anchored once at startup and
//! advanced by tokio's clock, so tests drive it with `tokio::time::pause()`/`advance()`.

use std::time::Duration;

use fleet_rules::UnixMs;
use tokio::time::Instant;

/// Unix ms now, and the tokio instant of a unix-ms deadline.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: UnixMs,
    base: Instant,
}

impl Clock {
    /// Anchored to the system clock now.
    pub fn system() -> Clock {
        #[allow(clippy::disallowed_methods)] // the single place that reads the wall clock
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock::starting_at(wall.as_millis() as UnixMs)
    }

    /// Anchored to `base_ms` now (tests).
    pub fn starting_at(base_ms: UnixMs) -> Clock {
        Clock {
            base_ms,
            base: Instant::now(),
        }
    }

    /// Unix ms now.
    pub fn now(&self) -> UnixMs {
        self.base_ms + self.base.elapsed().as_millis() as UnixMs
    }

    /// The tokio instant at which unix time `at` falls.
    pub fn instant_at(&self, at: UnixMs) -> Instant {
        self.base + Duration::from_millis(at.saturating_sub(self.base_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn time_follows_tokio_time() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.now(), 1_000_000);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), 1_090_000);
        assert_eq!(clock.instant_at(1_090_000), Instant::now());
    }
}
