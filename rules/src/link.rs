//! The broker's view of the fleet lost and regained (see the `blind` module for the
//! policy): what the rules do at each end of a blind stretch.

use crate::blind::{Blind, Blindness};
use crate::vehicle::Silence;
use crate::{Effect, Fleet, Notification, UnixMs};

impl Fleet {
    /// The broker lost its view of the fleet at `now`. What was due before is handled
    /// first (it was observable). A second call while blind changes nothing.
    pub fn link_lost(&mut self, now: UnixMs, how: Blindness) {
        let now = self.observe(now);
        if self.blind.is_some() {
            return;
        }
        self.sweep(now);
        self.ledger.advance(now);
        self.ledger.set_down(Some(how.downtime_is_bad));
        self.blind = Some(Blind::new(now, &how));
    }

    /// The view is back at `now`: returns how long the broker was blind (`None` if it was
    /// not). Deadlines resume with the restart grace counted from `now`, except at the
    /// first link of a fleet restored from a standby's watch, which saw the fleet until
    /// then (the grace stays counted from when the watch began).
    pub fn link_restored(&mut self, now: UnixMs) -> Option<u64> {
        let now = self.observe(now);
        let blind = self.blind.take()?;
        self.abandon_journeys(now);
        self.ledger.advance(now);
        self.ledger.set_down(None);
        if !std::mem::take(&mut self.watched_until_link) {
            self.timeouts.restored_at = Some(now);
        }
        let pending: Vec<u32> = self
            .registry
            .iter_from(0)
            .filter(|(_, v)| v.silence == Silence::Pending)
            .map(|(slot, _)| slot)
            .collect();
        for slot in pending {
            self.reclassify(slot, now, |v| v.silence = Silence::Talking);
            self.arm(slot);
        }
        let blind_ms = now.saturating_sub(blind.since);
        if blind.alerted {
            self.effects.push(Effect::Notify(Notification::BlindEnded {
                since: blind.since,
                blind_ms,
                at: now,
            }));
        }
        Some(blind_ms)
    }

    /// Since when the broker has been blind, if it is.
    pub fn blind_since(&self) -> Option<UnixMs> {
        self.blind.as_ref().map(|b| b.since)
    }

    /// While blind: notifies the stretch once it lasts past the alert delay.
    pub(crate) fn blind_alert(&mut self, now: UnixMs) {
        let Some(blind) = self.blind.as_mut() else {
            return;
        };
        if !blind.alert(now) {
            return;
        }
        let since = blind.since;
        self.effects
            .push(Effect::Notify(Notification::BlindStarted {
                since,
                at: now,
            }));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testkit::*;
    use crate::*;

    const HOW: Blindness = Blindness {
        downtime_is_bad: true,
        alert_after: Duration::from_secs(60),
    };

    #[test]
    fn nobody_is_taken_out_while_blind_and_deadlines_resume_with_the_grace() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.heartbeat("v2", BARE, T0 + MIN).unwrap();
        drain(&mut f);
        f.link_lost(T0 + 2 * MIN, HOW);
        assert_eq!(f.blind_since(), Some(T0 + 2 * MIN));
        // Both deadlines pass while blind.
        f.tick(T0 + 20 * MIN);
        assert!(transitions(&drain(&mut f)).is_empty());
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        assert_eq!(f.link_restored(T0 + 20 * MIN), Some(18 * MIN));
        assert_eq!(f.blind_since(), None);
        // The grace (the timeout) counts from the restore.
        f.tick(T0 + 20 * MIN + TIMEOUT - 1);
        assert!(transitions(&drain(&mut f)).is_empty());
        f.heartbeat("v2", BARE, T0 + 21 * MIN).unwrap();
        f.tick(T0 + 20 * MIN + TIMEOUT);
        let out = transitions(&drain(&mut f));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].vehicle, "v1");
        assert_eq!(state(&f, "v2"), ServiceState::InService);
    }

    #[test]
    fn what_was_due_before_the_loss_is_handled_at_the_loss() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        f.link_lost(T0 + TIMEOUT + MIN, HOW);
        assert_eq!(transitions(&drain(&mut f)).len(), 1);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn blind_time_is_downtime_in_the_sli() {
        for (bad, window_sli) in [(true, 0.5), (false, 1.0)] {
            let mut f = fleet();
            f.heartbeat("v1", BARE, T0).unwrap();
            f.link_lost(
                T0 + MIN,
                Blindness {
                    downtime_is_bad: bad,
                    ..HOW
                },
            );
            f.tick(T0 + 2 * MIN);
            f.link_restored(T0 + 2 * MIN);
            f.heartbeat("v1", BARE, T0 + 2 * MIN).unwrap();
            let report = f.sli(T0 + 2 * MIN);
            assert_eq!(report.downtime_ms, MIN, "bad = {bad}");
            assert!((report.window_sli - window_sli).abs() < 1e-9, "{report:?}");
        }
    }

    #[test]
    fn a_long_blind_stretch_is_notified_once_and_its_end_too() {
        // Downtime left out of the SLI: no burn-rate alert joins in.
        const HOW: Blindness = Blindness {
            downtime_is_bad: false,
            alert_after: Duration::from_secs(60),
        };
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        // A short one says nothing.
        f.link_lost(T0 + 1000, HOW);
        // The minute's alert evaluation, then the blind alert: never v1's deadline.
        assert_eq!(f.poll_timeout(), Some(T0 + MIN));
        f.tick(T0 + MIN);
        assert_eq!(f.poll_timeout(), Some(T0 + 1000 + 60_000));
        f.tick(T0 + 30_000);
        f.link_restored(T0 + MIN + 500);
        assert!(notifications(&drain(&mut f)).is_empty());
        f.link_lost(T0 + 2 * MIN, HOW);
        f.link_lost(T0 + 2 * MIN + 5_000, HOW); // already blind: ignored
        f.tick(T0 + 3 * MIN);
        f.tick(T0 + 4 * MIN);
        f.link_restored(T0 + 5 * MIN);
        assert_eq!(
            notifications(&drain(&mut f)),
            [
                Notification::BlindStarted {
                    since: T0 + 2 * MIN,
                    at: T0 + 3 * MIN
                },
                Notification::BlindEnded {
                    since: T0 + 2 * MIN,
                    blind_ms: 3 * MIN,
                    at: T0 + 5 * MIN
                }
            ]
        );
    }

    #[test]
    fn pending_vehicles_return_to_talking_when_the_view_is_back() {
        let mut cfg = config();
        cfg.mass_loss.min_vehicles = 10;
        cfg.mass_loss.fraction = 0.5;
        let mut f = Fleet::new(cfg, T0);
        for i in 0..20 {
            f.heartbeat(&format!("v{i}"), BARE, T0).unwrap();
        }
        for i in 5..20 {
            f.heartbeat(&format!("v{i}"), BARE, T0 + TIMEOUT).unwrap();
        }
        // v0..v4 expire together: the first (the onset) goes out, the rest are pending.
        f.tick(T0 + TIMEOUT + 1);
        let out_before = transitions(&drain(&mut f)).len();
        assert!(out_before < 5, "{out_before}");
        f.link_lost(T0 + TIMEOUT + 2, HOW);
        f.link_restored(T0 + TIMEOUT + 10 * MIN);
        // Nobody else is taken out within the grace, and the pending ones count good again.
        f.tick(T0 + TIMEOUT + 10 * MIN + TIMEOUT - 1);
        assert!(transitions(&drain(&mut f)).is_empty());
        let report = f.sli(T0 + TIMEOUT + 10 * MIN + 1);
        assert_eq!(report.in_service, 20 - out_before);
        assert!(
            (report.fraction - (20 - out_before) as f64 / 20.0).abs() < 1e-9,
            "{report:?}"
        );
    }
}
