//! The sender's SACK scoreboard (RFC 6675): which ranges above SND.UNA the peer reported holding.
//!
//! A fixed array of sorted, disjoint ranges; when it is full the highest range is forgotten, which costs at
//! most a needless retransmission, never correctness.

use super::seq;

const SLOTS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scoreboard {
    ranges: [(u32, u32); SLOTS],
    len: usize,
}

impl Scoreboard {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records a block reported by the peer, already checked to lie in (SND.UNA, SND.MAX]. Returns whether
    /// it told us anything new.
    pub fn insert(&mut self, left: u32, right: u32) -> bool {
        if !seq::lt(left, right) {
            return false;
        }
        let mut lo = left;
        let mut hi = right;
        let mut out = [(0u32, 0u32); SLOTS + 1];
        let mut n = 0;
        let mut placed = false;
        let mut changed = true;
        for &(l, r) in self.ranges() {
            if seq::lt(r, lo) {
                out[n] = (l, r);
                n += 1;
            } else if seq::gt(l, hi) {
                if !placed {
                    out[n] = (lo, hi);
                    n += 1;
                    placed = true;
                }
                out[n] = (l, r);
                n += 1;
            } else {
                if seq::le(l, lo) && seq::ge(r, hi) {
                    changed = false;
                }
                lo = seq::min(lo, l);
                hi = seq::max(hi, r);
            }
        }
        if !placed {
            out[n] = (lo, hi);
            n += 1;
        }
        let n = n.min(SLOTS);
        self.ranges[..n].copy_from_slice(&out[..n]);
        self.len = n;
        changed
    }

    /// Forgets everything below the cumulative ACK.
    pub fn prune(&mut self, una: u32) {
        let mut n = 0;
        for i in 0..self.len {
            let (l, r) = self.ranges[i];
            if seq::gt(r, una) {
                self.ranges[n] = (seq::max(l, una), r);
                n += 1;
            }
        }
        self.len = n;
    }

    /// Bytes covered by SACK blocks.
    pub fn sacked_bytes(&self) -> u32 {
        self.ranges().iter().fold(0u32, |a, &(l, r)| a.saturating_add(r.wrapping_sub(l)))
    }

    /// SACKed bytes below `s`.
    pub fn sacked_below(&self, s: u32) -> u32 {
        self.ranges().iter().fold(0u32, |a, &(l, r)| {
            if seq::le(r, s) {
                a.saturating_add(r.wrapping_sub(l))
            } else if seq::lt(l, s) {
                a.saturating_add(s.wrapping_sub(l))
            } else {
                a
            }
        })
    }

    /// The highest SACKed sequence number, if any.
    pub fn highest(&self) -> Option<u32> {
        self.ranges().last().map(|&(_, r)| r)
    }

    /// SACKed bytes at or above `s`.
    pub fn sacked_above(&self, s: u32) -> u32 {
        self.sacked_bytes().saturating_sub(self.sacked_below(s))
    }

    /// The first hole at or after `from` that counts as lost (RFC 6675 IsLost: at least `threshold` SACKed
    /// bytes above it): (start, length).
    pub fn next_lost_hole(&self, from: u32, threshold: u32) -> Option<(u32, u32)> {
        let (s, len) = self.next_hole(from)?;
        (self.sacked_above(s) >= threshold).then_some((s, len))
    }

    /// RFC 6675 "pipe": bytes between `una` and `max` believed in the network. Holes that count as lost
    /// add only what was retransmitted of them (below `high_rxt`); other holes and the tail add in full.
    pub fn pipe(&self, una: u32, max: u32, high_rxt: u32, threshold: u32) -> u32 {
        let mut pipe = 0u32;
        let mut s = una;
        for &(l, r) in self.ranges() {
            if seq::lt(s, l) {
                if self.sacked_above(l) >= threshold {
                    let rx_end = seq::min(l, seq::max(high_rxt, s));
                    pipe = pipe.saturating_add(seq::dist(s, rx_end));
                } else {
                    pipe = pipe.saturating_add(seq::dist(s, l));
                }
            }
            s = seq::max(s, r);
        }
        pipe.saturating_add(seq::dist(s, max))
    }

    /// The first un-SACKed hole at or after `from` and below the highest SACKed byte: (start, length).
    pub fn next_hole(&self, from: u32) -> Option<(u32, u32)> {
        let mut s = from;
        for &(l, r) in self.ranges() {
            if seq::lt(s, l) {
                return Some((s, l.wrapping_sub(s)));
            }
            s = seq::max(s, r);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_prunes_finds_holes() {
        let mut b = Scoreboard::default();
        assert!(b.insert(200, 300));
        assert!(b.insert(400, 500));
        assert!(!b.insert(420, 480));
        assert!(b.insert(300, 350));
        assert_eq!(b.ranges(), &[(200, 350), (400, 500)]);
        assert_eq!(b.sacked_bytes(), 250);
        assert_eq!(b.sacked_below(420), 170);
        assert_eq!(b.next_hole(100), Some((100, 100)));
        assert_eq!(b.next_hole(250), Some((350, 50)));
        assert_eq!(b.next_hole(500), None);
        assert_eq!(b.sacked_above(250), 200);
        // Only the hole with at least 150 SACKed bytes above it counts as lost.
        assert_eq!(b.next_lost_hole(100, 150), Some((100, 100)));
        assert_eq!(b.next_lost_hole(350, 150), None);
        // pipe over [100, 600) with nothing retransmitted: the lost hole [100,200) adds nothing, the hole
        // [350,400) (100 SACKed above, not lost) adds 50, the tail [500,600) 100.
        assert_eq!(b.pipe(100, 600, 100, 150), 150);
        // Half of the lost hole retransmitted adds 50.
        assert_eq!(b.pipe(100, 600, 150, 150), 200);
        b.prune(250);
        assert_eq!(b.ranges(), &[(250, 350), (400, 500)]);
        b.prune(600);
        assert!(b.is_empty());
    }

    #[test]
    fn bounded() {
        let mut b = Scoreboard::default();
        for i in 0..20u32 {
            b.insert(i * 10, i * 10 + 5);
        }
        assert_eq!(b.ranges().len(), SLOTS);
        assert_eq!(b.ranges()[0], (0, 5));
    }
}
