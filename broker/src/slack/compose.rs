//! Bursts become few messages: faults, flaps and manual changes wait up to the grouping
//! window after the first of their kind, then go out as one message listing them all (at
//! most [`VEHICLES_PER_MESSAGE`] per message); incidents and alerts go out at once. Pure:
//! the caller passes the time.

use std::collections::BTreeMap;

use fleet_rules::UnixMs;
use slack_morphism::prelude::SlackMessageContent;

use super::notice::{Grouping, Notice};
use super::render::{self, Style, VEHICLES_PER_MESSAGE};

/// A message ready to be stored and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Idempotency key: `{kind}-{seq of its first notice}`, unique in the store.
    pub key: String,
    /// The notices it carries, by seq.
    pub notices: Vec<i64>,
    /// The message.
    pub content: SlackMessageContent,
    /// The thread it opens.
    pub opens: Option<String>,
    /// The thread it resolves.
    pub resolves: Option<String>,
}

/// Notices waiting to be composed.
#[derive(Debug)]
pub struct Grouper {
    window_ms: UnixMs,
    waiting: BTreeMap<i64, Notice>,
}

impl Grouper {
    /// Groups within `window_ms` of the first notice of a kind.
    pub fn new(window_ms: UnixMs) -> Grouper {
        Grouper {
            window_ms,
            waiting: BTreeMap::new(),
        }
    }

    /// A notice read from the outbox.
    pub fn add(&mut self, seq: i64, notice: Notice) {
        self.waiting.insert(seq, notice);
    }

    /// Notices waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// When the next message will be ready.
    pub fn next_due(&self) -> Option<UnixMs> {
        self.waiting
            .values()
            .map(|n| match n.grouping() {
                Grouping::Alone => n.at(),
                Grouping::Vehicles(_) => n.at().saturating_add(self.window_ms),
            })
            .min()
    }

    /// Every message ready at `now`, in the order of their first notice.
    pub fn take_ready(&mut self, now: UnixMs, style: &Style) -> Vec<Draft> {
        let mut groups: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
        let mut ready: Vec<Vec<i64>> = Vec::new();
        for (seq, n) in &self.waiting {
            match n.grouping() {
                Grouping::Alone => ready.push(vec![*seq]),
                Grouping::Vehicles(kind) => groups.entry(kind).or_default().push(*seq),
            }
        }
        for seqs in groups.into_values() {
            let first_at = self.waiting.get(&seqs[0]).map_or(0, Notice::at);
            let window_passed = now >= first_at.saturating_add(self.window_ms);
            for chunk in seqs.chunks(VEHICLES_PER_MESSAGE) {
                if window_passed || chunk.len() == VEHICLES_PER_MESSAGE {
                    ready.push(chunk.to_vec());
                }
            }
        }
        ready.sort_by_key(|seqs| seqs[0]);
        ready
            .into_iter()
            .filter_map(|seqs| {
                let notices: Vec<Notice> =
                    seqs.iter().filter_map(|s| self.waiting.remove(s)).collect();
                let first = notices.first()?;
                let key = format!("{}-{}", first.kind(), seqs[0]);
                let refs: Vec<&Notice> = notices.iter().collect();
                let content = match first.grouping() {
                    Grouping::Vehicles(kind) => render::group(kind, &refs, style, &key),
                    Grouping::Alone => render::single(first, style, &key),
                };
                Some(Draft {
                    key,
                    notices: seqs,
                    content,
                    opens: first.opens().map(str::to_owned),
                    resolves: first.resolves().map(str::to_owned),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::render::Language;

    const STYLE: Style = Style {
        lang: Language::En,
        utc_offset_min: 0,
    };
    const WINDOW: UnixMs = 10_000;

    fn fault(i: usize, at: UnixMs) -> Notice {
        Notice::HardwareFault {
            vehicle: format!("v{i}"),
            code: "MOTOR".into(),
            reports: 1,
            window_ms: 60_000,
            model: None,
            battery: None,
            at,
        }
    }

    fn mass_loss(at: UnixMs) -> Notice {
        Notice::MassLossStarted {
            incident: format!("mass_loss-{at}"),
            silent: 100,
            fleet: 400,
            threshold: 80,
            sample: vec!["v1".into()],
            holding: true,
            at,
        }
    }

    #[test]
    fn faults_wait_for_the_window_then_go_out_as_one_message() {
        let mut g = Grouper::new(WINDOW);
        for i in 0..30 {
            g.add(i as i64 + 1, fault(i, 1_000 + i as u64 * 100));
        }
        assert_eq!(g.next_due(), Some(11_000));
        assert!(g.take_ready(10_999, &STYLE).is_empty());
        let drafts = g.take_ready(11_000, &STYLE);
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].key, "hardware_fault-1");
        assert_eq!(drafts[0].notices.len(), 30);
        assert!(g.is_empty());
    }

    #[test]
    fn five_hundred_faults_become_five_messages_with_every_vehicle() {
        let mut g = Grouper::new(WINDOW);
        for i in 0..500 {
            g.add(i as i64 + 1, fault(i, 1_000));
        }
        // Full messages need not wait for the window.
        let early = g.take_ready(1_000, &STYLE);
        assert_eq!(early.len(), 5);
        let text: String = early
            .iter()
            .map(|d| serde_json::to_string(&d.content).unwrap_or_default())
            .collect();
        for i in 0..500 {
            assert!(text.contains(&format!("`v{i}`")), "v{i} missing");
        }
        let keys: std::collections::BTreeSet<&str> = early.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys.len(), 5);
    }

    #[test]
    fn an_incident_does_not_wait_behind_a_group_of_faults() {
        let mut g = Grouper::new(WINDOW);
        g.add(1, fault(1, 1_000));
        g.add(2, mass_loss(1_500));
        let drafts = g.take_ready(1_500, &STYLE);
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].key, "mass_loss_started-2");
        assert_eq!(drafts[0].opens.as_deref(), Some("mass_loss-1500"));
        assert_eq!(g.len(), 1);
        assert_eq!(g.next_due(), Some(11_000));
    }

    #[test]
    fn kinds_are_grouped_apart() {
        let mut g = Grouper::new(WINDOW);
        g.add(1, fault(1, 0));
        g.add(
            2,
            Notice::Flapping {
                vehicle: "v2".into(),
                flips: 3,
                window_ms: 3_600_000,
                at: 0,
            },
        );
        g.add(3, fault(3, 0));
        let drafts = g.take_ready(WINDOW, &STYLE);
        let keys: Vec<&str> = drafts.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["hardware_fault-1", "flapping-2"]);
        assert_eq!(drafts[0].notices, [1, 3]);
    }
}
