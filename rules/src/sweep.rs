//! Time-driven work: heartbeat deadlines coming due (through the mass-loss guard), pending
//! vehicles released when their expiry leaves the guard's window, the end of an incident,
//! and the once-a-minute SLO alert evaluation.

use crate::burn::burn_rates;
use crate::deadlines::NOT_QUEUED;
use crate::ledger::MINUTE;
use crate::mass_loss::Verdict;
use crate::vehicle::Silence;
use crate::{Cause, Effect, Fleet, Notification, Reason, ReasonChange, UnixMs, BURN_WINDOWS};

/// Ids in a `MassLossStarted` sample.
const SAMPLE: usize = 10;
/// The longest burn-rate window (the windows are listed shortest first).
const LONGEST_BURN_MS: u64 = BURN_WINDOWS[BURN_WINDOWS.len() - 1].1;

impl Fleet {
    pub(crate) fn sweep(&mut self, now: UnixMs) {
        let now = self.observe(now);
        if self.blind.is_some() {
            // Silence it cannot observe is nobody's fault: deadlines wait for the view.
            self.blind_alert(now);
        } else {
            self.expire_due(now);
        }
        self.ledger.advance(now);
        let new_minute = now / MINUTE > self.evaluated_minute;
        if new_minute {
            self.evaluated_minute = now / MINUTE;
            let burn = burn_rates(&self.ledger, self.settings.slo_target);
            for alert in self.alerts.evaluate(burn, now) {
                self.effects.push(Effect::Notify(alert));
            }
        }
        // Answers cannot be seen while blind: nothing times out then.
        if self.blind.is_none() {
            self.journeys_due(now, new_minute);
        }
    }

    /// Deadlines due by `now`, pending vehicles whose expiry left the window, and the end
    /// of an incident.
    pub(crate) fn expire_due(&mut self, now: UnixMs) {
        while let Some((due, slot)) = self.deadlines.pop_due(now) {
            let Some(v) = self.registry.get_mut(slot) else {
                continue;
            };
            if v.heap_at != due {
                continue; // superseded, or the slot's former vehicle
            }
            v.heap_at = NOT_QUEUED;
            if v.silence != Silence::Talking {
                continue;
            }
            let real = self.timeouts.deadline(v.model, v.last_seen);
            if real > due {
                // It talked since the entry was made: check again at its real deadline.
                self.deadlines.push(real, slot);
                v.heap_at = real;
                continue;
            }
            self.expire(slot, due, now);
        }
        self.release_pending(now, now);
        self.end_incident_if_over(now, true);
    }

    /// The next instant a tick has work, or `None` when no tick could change anything
    /// before some other call does.
    pub(crate) fn next_wakeup(&self) -> Option<UnixMs> {
        let (journey_due, journeys_active) = self.journeys_wakeup();
        let minute = (journeys_active || self.alerts_may_change())
            .then_some((self.evaluated_minute + 1) * MINUTE);
        if let Some(blind) = &self.blind {
            return [blind.alert_due(), minute].into_iter().flatten().min();
        }
        [
            self.deadlines.next(),
            self.guard.next_check(),
            minute,
            journey_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the minute's alert evaluation could change an alert. Not when no vehicle is
    /// counted, none was within the longest burn window and no alert fires: every burn
    /// rate is 0 then and stays 0 until a call counts a vehicle again. The window is only
    /// summed when nobody is counted, so a live fleet pays nothing for the question.
    fn alerts_may_change(&self) -> bool {
        let (_, valid) = self.ledger.counts();
        valid > 0 || self.alerts.any_firing() || self.ledger.window(LONGEST_BURN_MS).valid > 0
    }

    /// The vehicle's deadline `due` passed (decided at `now`).
    fn expire(&mut self, slot: u32, due: UnixMs, now: UnixMs) {
        self.release_pending(due, now);
        let fleet = self.registry.len();
        match self.guard.on_expiry(due, slot, fleet) {
            Verdict::Evict => self.lose_heartbeat(slot, due, now, true),
            Verdict::Pend => self.silence(slot, Silence::Pending, due),
            Verdict::Start { silent, threshold } => {
                self.start_incident(silent, threshold, now);
                self.join_incident(slot, due, now);
            }
            Verdict::Join => self.join_incident(slot, due, now),
        }
    }

    /// Sets `heartbeat_lost{since}`. Losses caused by an incident do not count as flaps.
    fn lose_heartbeat(&mut self, slot: u32, since: UnixMs, now: UnixMs, count_flap: bool) {
        // Bad from its deadline, not from when the tick noticed (unless the SLI was
        // integrated past it meanwhile).
        let Some(from) = self.reclassify(slot, since, |v| {
            let from = v.state();
            v.silence = Silence::Lost;
            v.lost_since = since;
            v.streak = 0;
            from
        }) else {
            return;
        };
        let set = ReasonChange::Set(Reason::HeartbeatLost { since });
        self.announce(slot, from, set, Cause::Rule, now);
        if count_flap {
            self.record_flap(slot, since, now);
        }
    }

    fn record_flap(&mut self, slot: u32, since: UnixMs, now: UnixMs) {
        let (threshold, window_ms) = (self.settings.flap_threshold, self.settings.flap_window_ms);
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        if let Some(flips) = v.extra_mut().flap.record(since, threshold, window_ms) {
            let vehicle = v.id.to_string();
            self.effects.push(Effect::Notify(Notification::Flapping {
                vehicle,
                flips,
                window_ms,
                at: now,
            }));
        }
    }

    /// A talking vehicle becomes pending or held: bad in the SLI from `at`, no transition.
    fn silence(&mut self, slot: u32, silence: Silence, at: UnixMs) {
        self.reclassify(slot, at, |v| v.silence = silence);
    }

    fn join_incident(&mut self, slot: u32, due: UnixMs, now: UnixMs) {
        let Some(v) = self.registry.get_mut(slot) else {
            return;
        };
        v.wave_member = true;
        self.guard.member_joined(slot);
        if self.guard.holding() {
            self.silence(slot, Silence::Held, due);
        } else {
            self.lose_heartbeat(slot, due, now, false);
        }
    }

    /// The announcement first, then the wave so far joins: pending vehicles are held (or
    /// taken out), the ones already taken out count as silent members.
    fn start_incident(&mut self, silent: usize, threshold: usize, now: UnixMs) {
        self.guard.start(threshold, now);
        let wave: Vec<(UnixMs, u32)> = self.guard.wave().collect();
        let sample = wave
            .iter()
            .filter_map(|&(_, slot)| self.registry.get(slot).map(|v| v.id.to_string()))
            .take(SAMPLE)
            .collect();
        self.effects
            .push(Effect::Notify(Notification::MassLossStarted {
                silent,
                fleet: self.registry.len(),
                threshold,
                sample,
                holding: self.guard.holding(),
                at: now,
            }));
        for (due, slot) in wave {
            let Some(v) = self.registry.get_mut(slot) else {
                continue;
            };
            // Still silent since this very expiry, and not counted yet.
            if v.wave_member || self.timeouts.deadline(v.model, v.last_seen) != due {
                continue;
            }
            let (silence, lost_since) = (v.silence, v.lost_since);
            match silence {
                Silence::Pending => self.join_incident(slot, due, now),
                Silence::Lost if lost_since == due => {
                    v.wave_member = true;
                    self.guard.member_joined(slot);
                }
                _ => {}
            }
        }
    }

    /// Expiries that left the window by `reference`: without an incident, a vehicle still
    /// pending from that expiry is taken out now.
    fn release_pending(&mut self, reference: UnixMs, now: UnixMs) {
        while let Some((due, slot)) = self.guard.pop_expired(reference) {
            if self.guard.in_incident() {
                continue;
            }
            let Some(v) = self.registry.get(slot) else {
                continue;
            };
            if v.silence == Silence::Pending && self.timeouts.deadline(v.model, v.last_seen) == due
            {
                self.lose_heartbeat(slot, due, now, true);
            }
        }
    }

    /// Ends the incident if it is over (see the `mass_loss` module): the announcement, then
    /// the still-silent held vehicles are taken out as usual.
    pub(crate) fn end_incident_if_over(&mut self, now: UnixMs, settle: bool) {
        if !self.guard.should_end(now, settle) {
            return;
        }
        let Some(incident) = self.guard.end() else {
            return;
        };
        self.effects
            .push(Effect::Notify(Notification::MassLossEnded {
                recovered: incident.recovered,
                still_silent: incident.silent,
                at: now,
            }));
        for slot in incident.members {
            let Some(v) = self.registry.get_mut(slot) else {
                continue;
            };
            if !std::mem::take(&mut v.wave_member) {
                continue;
            }
            if v.silence == Silence::Held {
                let since = self.timeouts.deadline(v.model, v.last_seen);
                self.lose_heartbeat(slot, since, now, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn an_idle_tick_does_nothing_and_the_same_tick_twice_is_harmless() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        drain(&mut f);
        f.tick(T0 + 1);
        f.tick(T0 + 1);
        assert!(drain(&mut f).is_empty());
        f.tick(T0 + TIMEOUT);
        f.tick(T0 + TIMEOUT);
        assert_eq!(transitions(&drain(&mut f)).len(), 1);
    }

    #[test]
    fn poll_timeout_names_the_next_deadline_or_the_next_minute_boundary() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0 + 10).unwrap();
        assert_eq!(f.poll_timeout(), Some(T0 + MIN));
        f.tick(T0 + MIN);
        assert_eq!(f.poll_timeout(), Some(T0 + 2 * MIN));
        f.tick(T0 + 5 * MIN);
        assert_eq!(f.poll_timeout(), Some(T0 + 10 + TIMEOUT));
    }

    #[test]
    fn an_empty_fleet_has_nothing_due() {
        let mut f = fleet();
        assert_eq!(f.poll_timeout(), None);
        f.tick(T0 + 10 * MIN);
        assert_eq!(f.poll_timeout(), None);
        assert!(drain(&mut f).is_empty());
    }

    #[test]
    fn a_fleet_emptied_by_decommissioning_stays_due_until_its_history_leaves_the_burn_windows() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        f.decommission("v1", "ana", T0 + MIN).unwrap();
        // Its stale deadline first, then the minutes while its SLI time is in a window.
        assert_eq!(f.poll_timeout(), Some(T0 + MIN));
        f.tick(T0 + TIMEOUT);
        assert_eq!(f.poll_timeout(), Some(T0 + TIMEOUT + MIN));
        let three_days = 3 * 24 * 60 * MIN;
        f.tick(T0 + three_days);
        assert_eq!(f.poll_timeout(), Some(T0 + three_days + MIN));
        f.tick(T0 + three_days + 2 * MIN);
        assert_eq!(f.poll_timeout(), None);
        // A vehicle coming makes the minutes due again.
        f.heartbeat("v2", BARE, T0 + three_days + 3 * MIN).unwrap();
        assert_eq!(f.poll_timeout(), Some(T0 + three_days + 3 * MIN));
    }

    #[test]
    fn a_firing_alert_is_resolved_before_an_empty_fleet_has_nothing_due() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        for m in 5..=15 {
            f.tick(T0 + m * MIN);
        }
        let fired = notifications(&drain(&mut f));
        assert!(fired.iter().any(|n| matches!(
            n,
            Notification::SloAlert {
                severity: AlertSeverity::Page,
                state: AlertState::Firing,
                ..
            }
        )));
        f.decommission("v1", "ana", T0 + 15 * MIN).unwrap();
        // A report far later integrates past every window without evaluating the alerts.
        let later = T0 + 10 * 24 * 60 * MIN;
        f.sli(later);
        assert!(f.poll_timeout().is_some());
        f.tick(later);
        let resolved = notifications(&drain(&mut f));
        assert!(resolved.iter().any(|n| matches!(
            n,
            Notification::SloAlert {
                severity: AlertSeverity::Page,
                state: AlertState::Resolved,
                ..
            }
        )));
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn a_heartbeat_moves_the_deadline_without_touching_the_heap() {
        let mut f = fleet();
        f.heartbeat("v1", BARE, T0).unwrap();
        for i in 1..100 {
            f.heartbeat("v1", BARE, T0 + i * 1_000).unwrap();
        }
        assert_eq!(f.deadlines.len(), 1);
        f.tick(T0 + TIMEOUT);
        assert_eq!(f.deadlines.len(), 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(T0 + 99_000 + TIMEOUT - 1);
        assert_eq!(state(&f, "v1"), ServiceState::InService);
        f.tick(T0 + 99_000 + TIMEOUT);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn a_switch_to_a_model_with_a_shorter_timeout_takes_effect() {
        let mut f = fleet();
        f.heartbeat("v1", of_model("e-bike"), T0).unwrap();
        f.heartbeat("v1", of_model("scooter"), T0 + 1).unwrap();
        f.tick(T0 + 1 + TIMEOUT);
        assert_eq!(state(&f, "v1"), ServiceState::OutOfService);
    }

    #[test]
    fn a_late_tick_counts_the_vehicle_bad_from_its_deadline() {
        let mut f = fleet();
        for i in 0..10 {
            f.heartbeat(&format!("v{i}"), BARE, T0).unwrap();
        }
        for m in 1..60 {
            for i in 1..10 {
                f.heartbeat(&format!("v{i}"), BARE, T0 + m * MIN).unwrap();
            }
        }
        // v0 silent from T0 + 5m; the tick comes 55 minutes late.
        f.tick(T0 + 60 * MIN);
        let sli = f.sli(T0 + 60 * MIN);
        assert!((sli.window_sli - (600.0 - 55.0) / 600.0).abs() < 1e-9);
    }
}
