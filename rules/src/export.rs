//! What the owner persists between restarts, read out cheaply: the SLI ledger's minute
//! buckets, and the vehicles in slot order in bounded chunks (for checkpointing last-seen
//! times and model names, which change on every heartbeat and so are never announced).

use crate::fleet::VehicleView;
use crate::ledger::{Bucket, MINUTE};
use crate::{Fleet, UnixMs};

/// One minute of the SLI history, as stored. `minute` is unix ms / 60,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SliMinute {
    /// Unix minute.
    pub minute: u64,
    /// Vehicle-milliseconds in service.
    pub good: u64,
    /// Vehicle-milliseconds of the active fleet.
    pub valid: u64,
    /// Milliseconds the broker itself was down.
    pub down_ms: u64,
}

impl SliMinute {
    pub(crate) fn from_bucket(minute: u64, b: Bucket) -> SliMinute {
        SliMinute {
            minute,
            good: b.good,
            valid: b.valid,
            down_ms: b.down,
        }
    }

    pub(crate) fn bucket(&self) -> Bucket {
        Bucket {
            good: self.good,
            valid: self.valid,
            down: self.down_ms,
        }
    }
}

/// Where a chunked scan over the vehicles stands. The default starts at the beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanCursor(u32);

impl Fleet {
    /// The SLI history from unix minute `from` to the current one (partial), integrated up
    /// to `now`, oldest first. Minutes older than the history kept are not returned.
    pub fn sli_minutes(&mut self, from: u64, now: UnixMs) -> Vec<SliMinute> {
        let now = self.observe(now);
        self.ledger.advance(now);
        self.ledger
            .minutes_since(from)
            .map(|(m, b)| SliMinute::from_bucket(m, b))
            .collect()
    }

    /// The unix minute `now` falls in (for [`Fleet::sli_minutes`] bookkeeping).
    pub fn minute_of(now: UnixMs) -> u64 {
        now / MINUTE
    }

    /// Views of the vehicles last seen at or after `seen_since`, looking at no more than
    /// `max` vehicles from `cursor`. Returns the next cursor, or `None` when the scan has
    /// covered every vehicle. Vehicles registered or decommissioned during a scan may be
    /// missed or seen once; a checkpoint taken this way is caught up by the next one.
    pub fn scan(
        &self,
        cursor: ScanCursor,
        max: usize,
        seen_since: UnixMs,
    ) -> (Vec<VehicleView>, Option<ScanCursor>) {
        let (views, next) = self.registry.scan(cursor.0, max.max(1), |v| {
            (v.last_seen >= seen_since).then(|| self.view(v))
        });
        (views, next.map(ScanCursor))
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn a_chunked_scan_visits_every_vehicle_once() {
        let mut f = fleet();
        for i in 0..10 {
            f.heartbeat(&format!("v{i}"), BARE, T0).unwrap();
        }
        f.decommission("v3", "ana", T0).unwrap();
        let mut seen = Vec::new();
        let mut cursor = Some(ScanCursor::default());
        let mut rounds = 0;
        while let Some(c) = cursor {
            let (views, next) = f.scan(c, 4, 0);
            seen.extend(views.into_iter().map(|v| v.id));
            cursor = next;
            rounds += 1;
        }
        seen.sort();
        assert_eq!(seen.len(), 9);
        assert!(!seen.contains(&"v3".to_string()));
        assert_eq!(rounds, 3);
    }

    #[test]
    fn a_scan_returns_only_vehicles_seen_since_the_given_time() {
        let mut f = fleet();
        f.heartbeat("old", BARE, T0).unwrap();
        f.heartbeat("new", of_model("e-bike"), T0 + MIN).unwrap();
        f.error_report("new", &[("LOW_TIRE_PRESSURE", 2)], T0 + 2 * MIN)
            .unwrap();
        let (views, next) = f.scan(ScanCursor::default(), 100, T0 + 1);
        assert_eq!(next, None);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].id, "new");
        assert_eq!(views[0].last_seen, T0 + 2 * MIN);
        assert_eq!(views[0].model.as_deref(), Some("e-bike"));
        assert_eq!(
            views[0].error_counts,
            [("LOW_TIRE_PRESSURE".to_string(), 2)]
        );
    }

    #[test]
    fn sli_minutes_cover_the_current_partial_minute() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        let minutes = f.sli_minutes(Fleet::minute_of(T0), T0 + MIN + 1_000);
        assert_eq!(minutes.len(), 2);
        let last = minutes.last().copied().unwrap_or_default();
        assert_eq!(last.minute, Fleet::minute_of(T0 + MIN));
        assert_eq!((last.good, last.valid, last.down_ms), (1_000, 1_000, 0));
        let from_now = f.sli_minutes(Fleet::minute_of(T0 + MIN), T0 + MIN + 2_000);
        assert_eq!(from_now.len(), 1);
        assert_eq!(from_now[0].good, 2_000);
    }
}
