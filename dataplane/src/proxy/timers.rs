//! Per-core timer queue: which flow wants attention when.
//!
//! A min-heap of (deadline, slot, generation) with lazy deletion: re-arming a flow pushes a new entry and
//! records the deadline in the flow; a popped entry whose deadline or generation no longer matches the
//! flow is stale and skipped. Pushing is O(log n) and only happens when a flow's next deadline moves
//! earlier or was consumed, so the heap stays close to one live entry per flow.

use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    slot: u32,
    generation: u32,
}

/// The timer heap of one core.
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TimerQueue {
    pub fn with_capacity(n: usize) -> Self {
        TimerQueue { heap: BinaryHeap::with_capacity(n) }
    }

    /// Arms a timer for the flow in `slot` (generation `generation`) at `at`.
    pub fn arm(&mut self, at: Instant, slot: u32, generation: u32) {
        if at != Instant::FAR_FUTURE {
            self.heap.push(Reverse(Entry { at, slot, generation }));
        }
    }

    /// The earliest armed deadline (possibly stale), for the core's own next deadline.
    pub fn next_deadline(&self) -> Instant {
        self.heap.peek().map(|Reverse(e)| e.at).unwrap_or(Instant::FAR_FUTURE)
    }

    /// Pops one entry due at `now`: `(slot, generation, deadline)`. The caller checks it is still live.
    pub fn pop_due(&mut self, now: Instant) -> Option<(u32, u32, Instant)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => {
                let e = *e;
                self.heap.pop();
                Some((e.slot, e.generation, e.at))
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut q = TimerQueue::default();
        q.arm(Instant::from_millis(30), 3, 0);
        q.arm(Instant::from_millis(10), 1, 0);
        q.arm(Instant::FAR_FUTURE, 9, 0);
        q.arm(Instant::from_millis(20), 2, 5);
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_deadline(), Instant::from_millis(10));
        assert_eq!(q.pop_due(Instant::from_millis(5)), None);
        assert_eq!(q.pop_due(Instant::from_millis(25)), Some((1, 0, Instant::from_millis(10))));
        assert_eq!(q.pop_due(Instant::from_millis(25)), Some((2, 5, Instant::from_millis(20))));
        assert_eq!(q.pop_due(Instant::from_millis(25)), None);
    }
}
