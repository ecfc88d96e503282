//! When to try a message again, decided without I/O: Slack's `Retry-After` is obeyed to
//! the second; server errors and timeouts back off exponentially with jitter; a token,
//! webhook or channel Slack refuses is retried slowly (an operator can fix it and the
//! outbox is still there); a message Slack can never accept, or one older than the give-up
//! time, is given up.

use std::time::Duration;

use fleet_rules::UnixMs;

/// First wait after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Wait while Slack refuses our credentials or channel.
pub const REJECTED_BACKOFF: Duration = Duration::from_secs(60);
/// Wait after a 429 without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest `Retry-After` obeyed (a longer one is cut to this; the give-up time still
/// applies).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What came of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the bot API returns the message's ts.
    Sent {
        /// Slack's message timestamp.
        ts: Option<String>,
    },
    /// 429: wait this long before any request.
    RateLimited(Duration),
    /// 5xx or an unreadable answer: not delivered, worth retrying.
    Failed(String),
    /// Timeout or broken connection after the request was sent: it may have been
    /// delivered (a bot token can look it up before posting again).
    Unknown(String),
    /// Slack refuses the token, webhook or channel: retried slowly until fixed.
    Rejected(String),
    /// This message can never be accepted (malformed, too long).
    Invalid(String),
}

/// What to do next with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Delivered.
    Done,
    /// Try again at this time.
    RetryAt(UnixMs),
    /// Stop trying.
    GiveUp(String),
}

/// The policy's settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// A message not delivered this long after it was composed is given up.
    pub give_up_after: Duration,
}

fn ms(d: Duration) -> UnixMs {
    d.as_millis() as UnixMs
}

impl RetryPolicy {
    /// After attempt number `attempts` (1 for the first) of a message composed at
    /// `created_at` ended in `outcome` at `now`. `jitter` is uniform in [0, 1).
    pub fn next(
        &self,
        outcome: &Outcome,
        attempts: u32,
        created_at: UnixMs,
        now: UnixMs,
        jitter: f64,
    ) -> Next {
        let wait = match outcome {
            Outcome::Sent { .. } => return Next::Done,
            Outcome::Invalid(why) => return Next::GiveUp(format!("Slack cannot accept it: {why}")),
            Outcome::RateLimited(after) => ms(*after),
            Outcome::Rejected(_) => ms(REJECTED_BACKOFF),
            Outcome::Failed(_) | Outcome::Unknown(_) => {
                let exp = attempts.saturating_sub(1).min(20);
                let full = ms(FIRST_BACKOFF)
                    .saturating_mul(1 << exp)
                    .min(ms(MAX_BACKOFF));
                // Half fixed, half random: retries of many brokers do not line up.
                full / 2 + (full as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as UnixMs
            }
        };
        let deadline = created_at.saturating_add(ms(self.give_up_after));
        if now >= deadline {
            let why = match outcome {
                Outcome::RateLimited(_) => "still rate limited".to_owned(),
                Outcome::Failed(e)
                | Outcome::Unknown(e)
                | Outcome::Rejected(e)
                | Outcome::Invalid(e) => e.clone(),
                Outcome::Sent { .. } => String::new(),
            };
            return Next::GiveUp(format!(
                "not delivered within {} ({attempts} attempts; last: {why})",
                humantime::format_duration(self.give_up_after)
            ));
        }
        // One last attempt at the deadline rather than none.
        Next::RetryAt((now + wait).min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const P: RetryPolicy = RetryPolicy {
        give_up_after: HOUR,
    };

    #[test]
    fn retry_after_is_obeyed_exactly() {
        let next = P.next(
            &Outcome::RateLimited(Duration::from_secs(7)),
            1,
            0,
            1_000,
            0.9,
        );
        assert_eq!(next, Next::RetryAt(8_000));
    }

    #[test]
    fn server_errors_back_off_exponentially_with_jitter_up_to_five_minutes() {
        let failed = Outcome::Failed("500".into());
        let at = |attempts, jitter| match P.next(&failed, attempts, 0, 0, jitter) {
            Next::RetryAt(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1, 0.0), 500);
        assert_eq!(at(1, 0.999), 999);
        assert_eq!(at(2, 0.0), 1_000);
        assert_eq!(at(4, 0.0), 4_000);
        assert_eq!(at(30, 0.0), 150_000);
        assert!(at(30, 0.999) <= 300_000);
    }

    #[test]
    fn a_refused_token_is_retried_every_minute_until_the_give_up_time() {
        let rejected = Outcome::Rejected("invalid_auth".into());
        assert_eq!(P.next(&rejected, 3, 0, 10_000, 0.5), Next::RetryAt(70_000));
        assert_eq!(
            P.next(&rejected, 60, 0, 3_590_000, 0.5),
            Next::RetryAt(3_600_000)
        );
        assert!(
            matches!(P.next(&rejected, 61, 0, 3_600_000, 0.5), Next::GiveUp(why) if why.contains("invalid_auth"))
        );
    }

    #[test]
    fn a_message_slack_can_never_accept_is_given_up_at_once() {
        assert!(matches!(
            P.next(&Outcome::Invalid("invalid_blocks".into()), 1, 0, 0, 0.0),
            Next::GiveUp(_)
        ));
    }

    #[test]
    fn success_is_done() {
        assert_eq!(
            P.next(&Outcome::Sent { ts: None }, 1, 0, 0, 0.0),
            Next::Done
        );
    }
}
