//! Burn rates and the multi-window, multi-burn-rate alert policy of the Google SRE
//! Workbook: page when 1h and 5m both burn above 14.4x or 6h and 30m both above 6x; ticket
//! when 3d and 6h both burn above 1x. Only changes of an alert's state are announced.

use crate::ledger::{Bucket, SliLedger};
use crate::{AlertSeverity, AlertState, BurnRates, Notification, UnixMs, BURN_WINDOWS};

/// The error budget as a fraction of valid time (kept positive so a 100 % target burns
/// fast instead of dividing by zero).
pub(crate) fn budget(target: f64) -> f64 {
    (1.0 - target).max(f64::EPSILON)
}

/// (1 - good/valid) / budget; 0 with no valid time.
pub(crate) fn burn(b: Bucket, target: f64) -> f64 {
    if b.valid == 0 {
        return 0.0;
    }
    (1.0 - b.good as f64 / b.valid as f64) / budget(target)
}

/// Burn rates over [`BURN_WINDOWS`] at the ledger's clock.
pub(crate) fn burn_rates(ledger: &SliLedger, target: f64) -> BurnRates {
    let over = |i: usize| burn(ledger.window(BURN_WINDOWS[i].1), target);
    BurnRates {
        m5: over(0),
        m30: over(1),
        h1: over(2),
        h6: over(3),
        d1: over(4),
        d3: over(5),
    }
}

impl BurnRates {
    /// Whether these rates meet the policy of `severity` (the alert fires at the next
    /// minute's evaluation if they still do).
    pub fn breaches(&self, severity: AlertSeverity) -> bool {
        match severity {
            AlertSeverity::Page => page(self),
            AlertSeverity::Ticket => ticket(self),
        }
    }
}

fn page(b: &BurnRates) -> bool {
    (b.h1 > 14.4 && b.m5 > 14.4) || (b.h6 > 6.0 && b.m30 > 6.0)
}

fn ticket(b: &BurnRates) -> bool {
    b.d3 > 1.0 && b.h6 > 1.0
}

/// Which alerts are firing.
#[derive(Debug, Default)]
pub(crate) struct Alerts {
    page: bool,
    ticket: bool,
}

impl Alerts {
    /// Evaluates the policy; returns a notification per alert whose state changed.
    pub(crate) fn evaluate(&mut self, burn: BurnRates, at: UnixMs) -> Vec<Notification> {
        let mut changes = Vec::new();
        for (severity, firing, now_firing) in [
            (AlertSeverity::Page, &mut self.page, page(&burn)),
            (AlertSeverity::Ticket, &mut self.ticket, ticket(&burn)),
        ] {
            if *firing != now_firing {
                *firing = now_firing;
                let state = if now_firing {
                    AlertState::Firing
                } else {
                    AlertState::Resolved
                };
                changes.push(Notification::SloAlert {
                    severity,
                    state,
                    burn,
                    at,
                });
            }
        }
        changes
    }

    /// The alerts that were firing before a restart fire again, without a notification.
    pub(crate) fn restore(&mut self, firing: &[AlertSeverity]) {
        self.page = firing.contains(&AlertSeverity::Page);
        self.ticket = firing.contains(&AlertSeverity::Ticket);
    }

    pub(crate) fn any_firing(&self) -> bool {
        self.page || self.ticket
    }

    pub(crate) fn firing(&self) -> Vec<AlertSeverity> {
        let mut firing = Vec::new();
        if self.page {
            firing.push(AlertSeverity::Page);
        }
        if self.ticket {
            firing.push(AlertSeverity::Ticket);
        }
        firing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn rates(m5: f64, m30: f64, h1: f64, h6: f64, d3: f64) -> BurnRates {
        BurnRates {
            m5,
            m30,
            h1,
            h6,
            d1: 0.0,
            d3,
        }
    }

    #[test]
    fn burning_exactly_the_budget_is_a_burn_rate_of_one() {
        let b = Bucket {
            good: 99,
            valid: 100,
            down: 0,
        };
        assert!(close(burn(b, 0.99), 1.0));
        assert!(close(burn(b, 0.995), 2.0));
        let all_bad = Bucket {
            good: 0,
            valid: 10,
            down: 0,
        };
        assert!(close(burn(all_bad, 0.995), 200.0));
        assert_eq!(burn(Bucket::default(), 0.995), 0.0);
    }

    #[test]
    fn a_page_needs_both_the_long_and_the_short_window_above_the_rate() {
        assert!(page(&rates(15.0, 0.0, 15.0, 0.0, 0.0)));
        assert!(!page(&rates(15.0, 0.0, 14.0, 0.0, 0.0)));
        assert!(!page(&rates(14.0, 0.0, 15.0, 0.0, 0.0)));
        assert!(page(&rates(0.0, 6.5, 0.0, 6.5, 0.0)));
        assert!(!page(&rates(0.0, 6.5, 0.0, 5.5, 0.0)));
    }

    #[test]
    fn a_ticket_needs_three_days_and_six_hours_above_one() {
        assert!(ticket(&rates(0.0, 0.0, 0.0, 1.1, 1.1)));
        assert!(!ticket(&rates(0.0, 0.0, 0.0, 1.1, 0.9)));
    }

    #[test]
    fn only_changes_are_announced() {
        let mut a = Alerts::default();
        let hot = rates(20.0, 20.0, 20.0, 20.0, 20.0);
        assert_eq!(a.evaluate(hot, 1).len(), 2);
        assert!(a.evaluate(hot, 2).is_empty());
        assert_eq!(a.firing(), [AlertSeverity::Page, AlertSeverity::Ticket]);
        let cool = rates(0.0, 0.0, 0.0, 2.0, 2.0);
        let changes = a.evaluate(cool, 3);
        assert!(matches!(
            changes.as_slice(),
            [Notification::SloAlert {
                severity: AlertSeverity::Page,
                state: AlertState::Resolved,
                ..
            }]
        ));
    }
}
