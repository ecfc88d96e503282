//! The heartbeat deadline index: a min-heap of `(deadline, slot)` that heartbeats never touch.
//!
//! A heartbeat only moves the vehicle's `last_seen`. When an entry comes due, the sweep
//! compares it with the vehicle's real deadline and pushes it again if that moved, so a
//! live vehicle costs one pop and one push per timeout period and an idle tick is a peek.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::UnixMs;

/// `Vehicle::heap_at` when the vehicle has no entry (it is not talking, or not yet armed).
pub(crate) const NOT_QUEUED: UnixMs = UnixMs::MAX;

/// Deadlines by slot. An entry is live only while it equals its vehicle's `heap_at`;
/// any other entry is stale and dropped when it comes due.
#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(UnixMs, u32)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, at: UnixMs, slot: u32) {
        self.heap.push(Reverse((at, slot)));
    }

    /// The earliest entry, possibly stale (waking early is harmless).
    pub(crate) fn next(&self) -> Option<UnixMs> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: UnixMs) -> Option<(UnixMs, u32)> {
        let Reverse((at, slot)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((at, slot))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_earliest_first_and_not_before_their_time() {
        let mut d = Deadlines::default();
        d.push(30, 1);
        d.push(10, 2);
        d.push(20, 3);
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.pop_due(25), Some((10, 2)));
        assert_eq!(d.pop_due(25), Some((20, 3)));
        assert_eq!(d.pop_due(25), None);
        assert_eq!(d.len(), 1);
    }
}
