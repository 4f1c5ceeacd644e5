//! Test helpers: a seeded in-memory link that loses, duplicates, corrupts and reorders frames.

use std::collections::BinaryHeap;

use dataplane::time::{Duration, Instant};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub loss: f64,
    pub dup: f64,
    pub corrupt: f64,
    /// Uniform extra delay on top of `base`, which reorders frames.
    pub jitter_us: u64,
    pub base_us: u64,
}

/// Frames in flight one way: ordered by arrival time, then by send order.
#[derive(Default)]
pub struct Wire {
    q: BinaryHeap<std::cmp::Reverse<(Instant, u64, Vec<u8>)>>,
    n: u64,
}

impl Wire {
    pub fn send(&mut self, rng: &mut ChaCha8Rng, f: Faults, now: Instant, frame: &[u8], up: bool) {
        if !up || rng.random_bool(f.loss) {
            return;
        }
        let copies = if rng.random_bool(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut b = frame.to_vec();
            if rng.random_bool(f.corrupt) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            let delay = f.base_us + rng.random_range(0..=f.jitter_us);
            self.n += 1;
            self.q.push(std::cmp::Reverse((now + Duration::from_micros(delay), self.n, b)));
        }
    }

    pub fn next_time(&self) -> Instant {
        self.q.peek().map_or(Instant::FAR_FUTURE, |r| r.0 .0)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_time() <= now {
            self.q.pop().map(|r| r.0 .2)
        } else {
            None
        }
    }
}
