//! Rate-limited logging of rejected input: at most N lines per window, with the number
//! suppressed in between, so a flooding client cannot flood the log.

use fleet_rules::UnixMs;

/// Allows `limit` log lines per `window_ms`.
#[derive(Debug)]
pub struct RateLimitedLog {
    limit: u32,
    window_ms: u64,
    window_start: UnixMs,
    used: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    /// A limiter.
    pub fn new(limit: u32, window_ms: u64) -> RateLimitedLog {
        RateLimitedLog {
            limit,
            window_ms,
            window_start: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; counts it as suppressed if not.
    pub fn allow(&mut self, now: UnixMs) -> bool {
        if now >= self.window_start + self.window_ms {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines suppressed since the last logged one.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_limit_are_suppressed_and_counted_until_the_window_ends() {
        let mut log = RateLimitedLog::new(2, 1000);
        assert!(log.allow(0));
        assert!(log.allow(1));
        assert!(!log.allow(2));
        assert!(!log.allow(999));
        assert!(log.allow(1000));
        assert_eq!(log.take_suppressed(), 2);
        assert_eq!(log.take_suppressed(), 0);
    }
}
