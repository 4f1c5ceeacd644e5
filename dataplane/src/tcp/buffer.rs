//! The byte buffers of one connection: the send buffer (queued and unacknowledged bytes) and the receive
//! buffer with its bounded out-of-order reassembly.
//!
//! Both are rings whose *capacity* (what the window and the send room are computed from) is fixed by the
//! config, but whose storage grows on demand, by doubling, up to that capacity: a connection that never
//! carries data holds no buffer memory, and one that carries a little holds a little. Growth copies what
//! is held once, then the ring stays; [`SendBuffer::release`]/[`RecvBuffer::release`] give the storage back
//! when the connection no longer needs it (TIME-WAIT, closed). A million idle flows therefore cost their
//! engines' state, not a million times the configured buffer sizes, and accepting a connection zeroes
//! nothing.

use super::seq;

/// The smallest storage a ring grows to: a segment or two, so small flows do not double many times.
const MIN_STORAGE: usize = 2048;

/// The storage size for holding `need` bytes, for a ring of logical capacity `cap`.
fn grown(current: usize, need: usize, cap: usize) -> usize {
    need.max(MIN_STORAGE).max(current.saturating_mul(2)).next_power_of_two().min(cap)
}

/// Bytes from `snd_una` on: sent-but-unacknowledged first, then queued. The head is always `snd_una`.
pub struct SendBuffer {
    /// Storage, `ring.len()` bytes; empty until the first push, never longer than `cap`.
    ring: Vec<u8>,
    cap: usize,
    head: usize,
    len: usize,
}

impl core::fmt::Debug for SendBuffer {
    // The bytes themselves would drown any log line.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBuffer")
            .field("capacity", &self.capacity())
            .field("storage", &self.ring.len())
            .field("len", &self.len)
            .finish()
    }
}

impl SendBuffer {
    /// A buffer of `capacity` bytes; nothing is allocated until bytes are pushed.
    pub fn new(capacity: usize) -> Self {
        SendBuffer { ring: Vec::new(), cap: capacity.max(1), head: 0, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of storage currently allocated (at most the capacity).
    pub fn storage(&self) -> usize {
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

    /// Makes the storage hold at least `need` bytes, keeping what is queued (it moves to the front).
    fn reserve(&mut self, need: usize) {
        let old = self.ring.len();
        if need <= old {
            return;
        }
        let mut ring = vec![0u8; grown(old, need, self.cap)];
        if self.len > 0 {
            let first = self.len.min(old - self.head);
            ring[..first].copy_from_slice(&self.ring[self.head..self.head + first]);
            ring[first..self.len].copy_from_slice(&self.ring[..self.len - first]);
        }
        self.ring = ring;
        self.head = 0;
    }

    /// Appends as much of `data` as fits; returns how much.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        self.reserve(self.len + n);
        let cap = self.ring.len();
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
        let cap = self.ring.len();
        let start = (self.head + offset) % cap;
        let first = n.min(cap - start);
        out[..first].copy_from_slice(&self.ring[start..start + first]);
        out[first..n].copy_from_slice(&self.ring[..n - first]);
        n
    }

    /// Drops `n` bytes from the head (they were acknowledged).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.head = (self.head + n) % self.ring.len();
        self.len -= n;
    }

    /// Gives the storage back if nothing is held; it grows again on the next push.
    pub fn release(&mut self) {
        if self.len == 0 {
            self.ring = Vec::new();
            self.head = 0;
        }
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
    /// Storage, `ring.len()` bytes; empty until the first byte lands, never longer than `cap`.
    ring: Vec<u8>,
    cap: usize,
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
            .field("storage", &self.ring.len())
            .field("read_seq", &self.read_seq)
            .field("nxt", &self.nxt)
            .field("ooo", &self.ooo)
            .finish()
    }
}

impl RecvBuffer {
    /// A buffer of `capacity` bytes whose first byte is `start`; nothing is allocated until bytes land.
    pub fn new(capacity: usize, max_ooo: usize, start: u32) -> Self {
        RecvBuffer {
            ring: Vec::new(),
            cap: capacity.max(1),
            read_idx: 0,
            read_seq: start,
            nxt: start,
            ooo: Vec::with_capacity(max_ooo),
            max_ooo,
            recent: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of storage currently allocated (at most the capacity).
    pub fn storage(&self) -> usize {
        self.ring.len()
    }

    /// Gives the storage back if nothing is held (nothing unread, nothing out of order).
    pub fn release(&mut self) {
        if self.readable() == 0 && self.ooo.is_empty() {
            self.ring = Vec::new();
            self.read_idx = 0;
        }
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
        (self.read_idx + seq::dist(self.read_seq, s) as usize) % self.ring.len()
    }

    /// Makes the storage reach `need` bytes past `read_seq`, keeping everything held: the ring is laid
    /// out afresh from `read_seq`, so every held byte keeps its distance from it.
    fn reserve(&mut self, need: usize) {
        let old = self.ring.len();
        if need <= old {
            return;
        }
        let mut ring = vec![0u8; grown(old, need, self.cap)];
        if old > 0 {
            let first = old - self.read_idx;
            ring[..first].copy_from_slice(&self.ring[self.read_idx..]);
            ring[first..old].copy_from_slice(&self.ring[..self.read_idx]);
        }
        self.ring = ring;
        self.read_idx = 0;
    }

    /// Writes `data` at `s`, which the caller has checked lies within the capacity from `read_seq`.
    fn copy_in(&mut self, s: u32, data: &[u8]) {
        self.reserve(seq::dist(self.read_seq, s) as usize + data.len());
        let cap = self.ring.len();
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
        let n = self.readable().min(self.ring.len());
        let cap = self.ring.len();
        if n == 0 {
            return (&[], &[]);
        }
        let first = n.min(cap - self.read_idx);
        (&self.ring[self.read_idx..self.read_idx + first], &self.ring[..n - first])
    }

    /// Consumes up to `n` in-order bytes; returns how many.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.readable());
        if let Some(k) = (self.read_idx + n).checked_rem(self.ring.len()) {
            self.read_idx = k;
        }
        self.read_seq = self.read_seq.wrapping_add(n as u32);
        n
    }

    /// Moves both edges up to `s`, forgetting every byte below it (delivered elsewhere).
    pub fn advance_to(&mut self, s: u32) {
        if seq::gt(s, self.read_seq) {
            let phys = self.ring.len();
            if phys > 0 {
                let k = seq::dist(self.read_seq, s) as usize % phys;
                self.read_idx = (self.read_idx + k) % phys;
            }
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
    fn send_storage_grows_keeping_order_and_is_released_when_empty() {
        let mut b = SendBuffer::new(10_000);
        assert_eq!(b.storage(), 0);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(b.push(&data[..1500]), 1500);
        assert_eq!(b.storage(), MIN_STORAGE);
        // Wrap the small ring, then grow it while wrapped: the order must survive.
        b.consume(1000);
        assert_eq!(b.push(&data[1500..2400]), 900);
        assert_eq!(b.storage(), MIN_STORAGE);
        assert_eq!(b.push(&data[2400..]), 7600);
        assert_eq!(b.storage(), 10_000);
        assert_eq!(b.free(), 1000);
        let mut out = vec![0u8; 9000];
        assert_eq!(b.copy_out(0, &mut out), 9000);
        assert_eq!(&out[..], &data[1000..]);
        b.release();
        assert_eq!(b.storage(), 10_000, "held bytes keep their storage");
        b.consume(9000);
        b.release();
        assert_eq!((b.storage(), b.len()), (0, 0));
        assert_eq!(b.push(b"again"), 5);
        assert_eq!(b.copy_out(0, &mut out[..5]), 5);
        assert_eq!(&out[..5], b"again");
    }

    #[test]
    fn recv_storage_grows_around_out_of_order_ranges() {
        let start = u32::MAX - 100;
        let mut b = RecvBuffer::new(65_536, 4, start);
        assert_eq!(b.storage(), 0);
        assert_eq!(b.peek(), (&[][..], &[][..]));
        b.write(start, &[1; 1500]);
        let mut out = vec![0u8; 1500];
        assert_eq!(b.read(&mut out[..1000]), 1000);
        // A range far above the edge, landing in a wrapped ring, then growth past it.
        let far = start.wrapping_add(1500 + 3000);
        assert!(b.write(far, &[3; 500]).out_of_order);
        assert!(b.storage() >= 4000);
        let o = b.write(start.wrapping_add(1500), &[2; 3000]);
        assert_eq!(o.advanced, 3500);
        let mut all = vec![0u8; 4000];
        assert_eq!(b.read(&mut all), 4000);
        assert!(all[..500].iter().all(|&x| x == 1));
        assert!(all[500..3500].iter().all(|&x| x == 2));
        assert!(all[3500..].iter().all(|&x| x == 3));
        b.release();
        assert_eq!(b.storage(), 0);
        // Skipping ahead with nothing stored must not touch storage.
        b.advance_to(b.nxt().wrapping_add(70_000));
        assert_eq!((b.readable(), b.consume(10)), (0, 0));
        b.write(b.nxt(), b"xy");
        assert_eq!(b.peek().0, b"xy");
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
