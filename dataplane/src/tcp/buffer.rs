//! The byte buffers of one connection: the send buffer (queued and unacknowledged bytes) and the receive
//! buffer with its bounded out-of-order reassembly.
//!
//! Both are rings allocated once, at open, with the sizes from the config; no packet allocates.

use super::seq;

/// Bytes from `snd_una` on: sent-but-unacknowledged first, then queued. The head is always `snd_una`.
pub struct SendBuffer {
    ring: Box<[u8]>,
    head: usize,
    len: usize,
}

impl core::fmt::Debug for SendBuffer {
    // The bytes themselves would drown any log line.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBuffer").field("capacity", &self.capacity()).field("len", &self.len).finish()
    }
}

impl SendBuffer {
    pub fn new(capacity: usize) -> Self {
        SendBuffer { ring: vec![0u8; capacity.max(1)].into_boxed_slice(), head: 0, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }

    /// Appends as much of `data` as fits; returns how much.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let cap = self.capacity();
        let tail = (self.head + self.len) % cap;
        let first = n.min(cap - tail);
        self.ring[tail..tail + first].copy_from_slice(&data[..first]);
        self.ring[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    /// Copies bytes starting `offset` bytes after the head into `out`; returns how many.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = out.len().min(self.len - offset);
        let cap = self.capacity();
        let start = (self.head + offset) % cap;
        let first = n.min(cap - start);
        out[..first].copy_from_slice(&self.ring[start..start + first]);
        out[first..n].copy_from_slice(&self.ring[..n - first]);
        n
    }

    /// Drops `n` bytes from the head (they were acknowledged).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % self.capacity();
        self.len -= n;
    }
}

/// What writing one segment's payload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// How far the contiguous edge moved.
    pub advanced: u32,
    /// Bytes landed above the contiguous edge (out of order).
    pub out_of_order: bool,
    /// Some bytes were already held (a duplicate, e.g. a peer's retransmission).
    pub duplicate: bool,
    /// Some bytes could not be stored (beyond the buffer or one range too many); they were not held.
    pub refused: bool,
}

/// Received bytes from `read_seq` (the next byte the application reads) on. `[read_seq, nxt)` is contiguous;
/// `ooo` holds sorted, disjoint, non-adjacent ranges above `nxt`.
pub struct RecvBuffer {
    ring: Box<[u8]>,
    read_idx: usize,
    read_seq: u32,
    nxt: u32,
    ooo: Vec<(u32, u32)>,
    max_ooo: usize,
    /// Left edge of the range most recently added to, reported first in SACK (RFC 2018 §4).
    recent: Option<u32>,
}

impl core::fmt::Debug for RecvBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvBuffer")
            .field("capacity", &self.capacity())
            .field("read_seq", &self.read_seq)
            .field("nxt", &self.nxt)
            .field("ooo", &self.ooo)
            .finish()
    }
}

impl RecvBuffer {
    pub fn new(capacity: usize, max_ooo: usize, start: u32) -> Self {
        RecvBuffer {
            ring: vec![0u8; capacity.max(1)].into_boxed_slice(),
            read_idx: 0,
            read_seq: start,
            nxt: start,
            ooo: Vec::with_capacity(max_ooo),
            max_ooo,
            recent: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// The contiguous receive edge (RCV.NXT).
    pub fn nxt(&self) -> u32 {
        self.nxt
    }

    pub fn read_seq(&self) -> u32 {
        self.read_seq
    }

    /// Bytes in order, ready for the application.
    pub fn readable(&self) -> usize {
        seq::dist(self.read_seq, self.nxt) as usize
    }

    /// One past the last sequence number the buffer can hold.
    pub fn right_edge(&self) -> u32 {
        self.read_seq.wrapping_add(self.capacity() as u32)
    }

    pub fn ooo_ranges(&self) -> &[(u32, u32)] {
        &self.ooo
    }

    pub fn recent_range(&self) -> Option<u32> {
        self.recent
    }

    /// Moves the contiguous edge on by `n` sequence numbers that carry no bytes (a FIN). Only valid with
    /// no out-of-order data above, which the caller guarantees (a FIN is only accepted at the edge).
    pub fn skip_fin(&mut self) {
        self.nxt = self.nxt.wrapping_add(1);
        self.read_seq = self.read_seq.wrapping_add(1);
    }

    fn idx(&self, s: u32) -> usize {
        (self.read_idx + seq::dist(self.read_seq, s) as usize) % self.capacity()
    }

    fn copy_in(&mut self, s: u32, data: &[u8]) {
        let cap = self.capacity();
        let start = self.idx(s);
        let first = data.len().min(cap - start);
        self.ring[start..start + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Stores the payload of a segment that starts at `s`.
    pub fn write(&mut self, s: u32, data: &[u8]) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        let Ok(len) = u32::try_from(data.len()) else {
            out.refused = true;
            return out;
        };
        let mut start = s;
        let mut end = s.wrapping_add(len);
        let mut payload = data;
        if seq::lt(start, self.nxt) {
            out.duplicate = true;
            if seq::le(end, self.nxt) {
                return out;
            }
            let skip = seq::dist(start, self.nxt) as usize;
            payload = payload.get(skip..).unwrap_or(&[]);
            start = self.nxt;
        }
        let right = self.right_edge();
        if seq::gt(end, right) {
            out.refused = true;
            if seq::le(right, start) {
                return out;
            }
            let keep = seq::dist(start, right) as usize;
            payload = payload.get(..keep).unwrap_or(&[]);
            end = right;
        }
        if payload.is_empty() {
            return out;
        }
        if start == self.nxt {
            self.copy_in(start, payload);
            let old = self.nxt;
            self.nxt = end;
            // Swallow ranges the new bytes reach or cover.
            while let Some(&(l, r)) = self.ooo.first() {
                if seq::le(l, self.nxt) {
                    if seq::gt(r, self.nxt) {
                        self.nxt = r;
                    } else {
                        out.duplicate = true;
                    }
                    if self.recent == Some(l) {
                        self.recent = None;
                    }
                    self.ooo.remove(0);
                } else {
                    break;
                }
            }
            out.advanced = seq::dist(old, self.nxt);
            return out;
        }
        // Out of order: merge into the sorted range list.
        out.out_of_order = true;
        let mut lo = start;
        let mut hi = end;
        let mut first = self.ooo.len();
        let mut last = self.ooo.len();
        for (i, &(l, r)) in self.ooo.iter().enumerate() {
            if seq::lt(r, lo) {
                continue;
            }
            if seq::gt(l, hi) {
                if first == self.ooo.len() {
                    first = i;
                    last = i;
                }
                break;
            }
            if first == self.ooo.len() {
                first = i;
            }
            last = i + 1;
            if seq::le(l, start) && seq::ge(r, end) {
                out.duplicate = true;
            }
            lo = seq::min(lo, l);
            hi = seq::max(hi, r);
        }
        if first == last && self.ooo.len() >= self.max_ooo {
            // A new range would pass the bound: not stored, so not held and not SACKed.
            out.refused = true;
            out.out_of_order = false;
            return out;
        }
        self.copy_in(start, payload);
        // In place: the list was reserved at open with room for `max_ooo` ranges, so nothing allocates.
        if first == last {
            self.ooo.insert(first, (lo, hi));
        } else {
            if let Some(slot) = self.ooo.get_mut(first) {
                *slot = (lo, hi);
            }
            self.ooo.drain(first + 1..last);
        }
        self.recent = Some(lo);
        out
    }

    /// Copies in-order bytes into `out` and consumes them.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let (a, b) = self.peek();
        let n = out.len().min(a.len() + b.len());
        let first = n.min(a.len());
        out[..first].copy_from_slice(&a[..first]);
        out[first..n].copy_from_slice(&b[..n - first]);
        self.consume(n);
        n
    }

    /// The in-order bytes, as at most two slices (the ring may wrap).
    pub fn peek(&self) -> (&[u8], &[u8]) {
        let n = self.readable();
        let cap = self.capacity();
        let first = n.min(cap - self.read_idx);
        (&self.ring[self.read_idx..self.read_idx + first], &self.ring[..n - first])
    }

    /// Consumes up to `n` in-order bytes; returns how many.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.readable());
        self.read_idx = (self.read_idx + n) % self.capacity();
        self.read_seq = self.read_seq.wrapping_add(n as u32);
        n
    }

    /// Moves both edges up to `s`, forgetting every byte below it (delivered elsewhere).
    pub fn advance_to(&mut self, s: u32) {
        if seq::gt(s, self.read_seq) {
            let k = seq::dist(self.read_seq, s) as usize % self.capacity();
            self.read_idx = (self.read_idx + k) % self.capacity();
            self.read_seq = s;
        }
        if seq::gt(s, self.nxt) {
            self.nxt = s;
        }
        while let Some(&(l, r)) = self.ooo.first() {
            if seq::le(l, self.nxt) {
                self.nxt = seq::max(self.nxt, r);
                if self.recent == Some(l) {
                    self.recent = None;
                }
                self.ooo.remove(0);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_ring_wraps() {
        let mut b = SendBuffer::new(8);
        assert_eq!(b.push(b"abcdef"), 6);
        b.consume(4);
        assert_eq!(b.push(b"ghijklmn"), 6);
        let mut out = [0u8; 8];
        assert_eq!(b.copy_out(0, &mut out), 8);
        assert_eq!(&out, b"efghijkl");
        assert_eq!(b.copy_out(3, &mut out[..2]), 2);
        assert_eq!(&out[..2], b"hi");
        assert_eq!(b.copy_out(8, &mut out), 0);
    }

    #[test]
    fn reassembly_merges_and_bounds() {
        let start = u32::MAX - 3;
        let mut b = RecvBuffer::new(32, 2, start);
        let o = b.write(start.wrapping_add(4), b"efgh");
        assert!(o.out_of_order && o.advanced == 0);
        let o = b.write(start.wrapping_add(12), b"mn");
        assert!(o.out_of_order);
        // A third range would pass the bound of two.
        let o = b.write(start.wrapping_add(20), b"uv");
        assert!(o.refused && !o.out_of_order);
        assert_eq!(b.ooo_ranges().len(), 2);
        // Bridging the gap between the two ranges merges them.
        let o = b.write(start.wrapping_add(8), b"ijkl");
        assert!(o.out_of_order);
        assert_eq!(b.ooo_ranges(), &[(start.wrapping_add(4), start.wrapping_add(14))]);
        let o = b.write(start, b"abcd");
        assert_eq!(o.advanced, 14);
        let mut out = [0u8; 32];
        assert_eq!(b.read(&mut out), 14);
        assert_eq!(&out[..14], b"abcdefghijklmn");
        // Beyond the right edge is trimmed.
        let o = b.write(start.wrapping_add(14), &[1u8; 40]);
        assert!(o.refused);
        assert_eq!(b.readable(), 32);
    }

    #[test]
    fn advance_skips_and_keeps_ranges_above() {
        let mut b = RecvBuffer::new(64, 4, 100);
        b.write(100, b"ab");
        b.write(110, b"xyz");
        b.advance_to(105);
        assert_eq!(b.nxt(), 105);
        assert_eq!(b.readable(), 0);
        b.write(105, b"01234");
        assert_eq!(b.nxt(), 113);
        let mut out = [0u8; 16];
        assert_eq!(b.read(&mut out), 8);
        assert_eq!(&out[..8], b"01234xyz");
    }
}
