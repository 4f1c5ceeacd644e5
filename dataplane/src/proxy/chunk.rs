//! Relayed byte chunks that cross between the two cores without a heap allocation per chunk, and the
//! per-half backlog that holds them until the engine's send buffer has room.
//!
//! A core copies the bytes it relays out of its engine's receive buffer into a [`Chunk`] taken from its
//! own [`ChunkPool`]: a free list of byte vectors (a bounded `crossbeam-channel`, like the packet pool's),
//! in two size classes so a 64-byte chunk does not pin 16 KiB. The chunk crosses the channel by value;
//! the other core keeps it in the flow's [`Backlog`] and copies it once into its engine's send buffer;
//! when it is dropped, on whichever core, its vector goes back to the pool it came from. A pool allocates
//! only while warming up (or when more chunks are in flight than it ever had); its free lists are bounded,
//! so a burst's worth of vectors beyond them is freed rather than hoarded.
//!
//! Compared with a `Vec` per chunk appended byte by byte into a `VecDeque<u8>`, this saves an allocation
//! and a free per chunk and one copy of every relayed byte.

use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;

/// Chunks up to this many bytes come from the small class.
pub const SMALL_CHUNK: usize = 2048;
/// How many free vectors each class keeps, at most (small: 16 MiB worth, large: 8 MiB worth).
const SMALL_KEEP: usize = 8192;
const LARGE_KEEP: usize = 512;

/// Bytes of one direction of one flow, in stream order. Derefs to its bytes.
pub struct Chunk {
    bytes: Vec<u8>,
    /// The free list the vector returns to; `None` for a chunk made from an application's own vector.
    home: Option<Sender<Vec<u8>>>,
}

impl Chunk {
    /// A chunk of `bytes` that belongs to no pool (an application's reply, a test).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Chunk { bytes, home: None }
    }
}

impl core::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl core::fmt::Debug for Chunk {
    // The bytes would drown any log line.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Chunk").field("len", &self.bytes.len()).field("pooled", &self.home.is_some()).finish()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            let mut bytes = std::mem::take(&mut self.bytes);
            bytes.clear();
            // A full free list (or a pool that is gone) frees the vector instead.
            let _ = home.try_send(bytes);
        }
    }
}

#[derive(Debug)]
struct FreeList {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    size: usize,
}

impl FreeList {
    fn new(size: usize, keep: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(keep);
        FreeList { tx, rx, size }
    }
}

/// Counters of a chunk pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Chunks handed out.
    pub chunks: u64,
    /// Of those, how many needed a fresh vector (warm-up, or more in flight than ever before).
    pub fresh: u64,
}

/// The chunks one core sends. See the module docs.
#[derive(Debug)]
pub struct ChunkPool {
    small: FreeList,
    large: FreeList,
    stats: ChunkStats,
}

impl Default for ChunkPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkPool {
    pub fn new() -> Self {
        ChunkPool {
            small: FreeList::new(SMALL_CHUNK, SMALL_KEEP),
            large: FreeList::new(super::msg::MAX_CHUNK, LARGE_KEEP),
            stats: ChunkStats::default(),
        }
    }

    /// A chunk holding a copy of `data` (at most [`MAX_CHUNK`](super::msg::MAX_CHUNK) bytes by
    /// convention; more still works, through a larger vector).
    pub fn copy_from(&mut self, data: &[u8]) -> Chunk {
        let class = if data.len() <= SMALL_CHUNK { &self.small } else { &self.large };
        self.stats.chunks += 1;
        let mut bytes = match class.rx.try_recv() {
            Ok(v) => v,
            Err(_) => {
                self.stats.fresh += 1;
                Vec::with_capacity(class.size.max(data.len()))
            }
        };
        bytes.extend_from_slice(data);
        Chunk { bytes, home: Some(class.tx.clone()) }
    }

    pub fn stats(&self) -> ChunkStats {
        self.stats
    }
}

/// Relayed bytes of one direction of one flow that wait for room in the engine's send buffer: whole
/// chunks, the first one possibly partly sent already.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    chunks: VecDeque<Chunk>,
    /// Bytes of the first chunk already taken.
    front: usize,
    /// Bytes waiting, over all chunks.
    len: usize,
}

impl Backlog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk` from its byte `skip` on (the bytes before are ones the peer already has).
    pub fn push(&mut self, chunk: Chunk, skip: usize) {
        let Some(fresh) = chunk.len().checked_sub(skip).filter(|&n| n > 0) else { return };
        if self.chunks.is_empty() {
            self.front = skip;
        } else if skip > 0 {
            // Only the first chunk carries an offset: copy the rest of a trimmed one into a fresh chunk
            // (this happens once per takeover resync, not on the fast path).
            let rest = chunk.get(skip..).unwrap_or(&[]).to_vec();
            self.len += rest.len();
            self.chunks.push_back(Chunk::from_vec(rest));
            return;
        }
        self.len += fresh;
        self.chunks.push_back(chunk);
    }

    /// Offers the waiting bytes in order to `send`, which returns how many it took; stops when it takes
    /// less than offered. Returns the bytes taken.
    pub fn pump(&mut self, mut send: impl FnMut(&[u8]) -> usize) -> usize {
        let mut total = 0;
        while let Some(first) = self.chunks.front() {
            let rest = first.get(self.front..).unwrap_or(&[]);
            let offered = rest.len();
            let took = send(rest).min(offered);
            total += took;
            self.drop_front(took);
            if took < offered {
                break;
            }
        }
        total
    }

    /// Like [`Backlog::pump`], but offers at most `max` bytes in all (policy `replica`: only what the
    /// standby was offered may go out).
    pub fn pump_at_most(&mut self, max: usize, mut send: impl FnMut(&[u8]) -> usize) -> usize {
        let mut left = max;
        self.pump(|b| {
            let b = b.get(..b.len().min(left)).unwrap_or(&[]);
            if b.is_empty() {
                return 0;
            }
            let took = send(b);
            left -= took.min(left);
            took
        })
    }

    /// The contiguous run of waiting bytes that starts `skip` bytes in (up to the end of its chunk);
    /// empty when `skip` is at or past the end.
    pub fn piece_at(&self, skip: usize) -> &[u8] {
        let mut at = skip;
        for (i, c) in self.chunks.iter().enumerate() {
            let rest = c.get(if i == 0 { self.front } else { 0 }..).unwrap_or(&[]);
            if at < rest.len() {
                return rest.get(at..).unwrap_or(&[]);
            }
            at -= rest.len();
        }
        &[]
    }

    /// Drops the first `n` waiting bytes (fewer if fewer wait); finished chunks go back to their pool.
    pub fn drop_front(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 || self.chunks.front().is_some_and(|c| self.front >= c.len()) {
            let Some(first) = self.chunks.front() else { break };
            let left = first.len().saturating_sub(self.front);
            if n >= left {
                n -= left;
                self.chunks.pop_front();
                self.front = 0;
            } else {
                self.front += n;
                n = 0;
            }
        }
    }

    /// The waiting bytes, in order (tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for (i, c) in self.chunks.iter().enumerate() {
            let from = if i == 0 { self.front } else { 0 };
            out.extend_from_slice(c.get(from..).unwrap_or(&[]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_return_to_their_pool_from_another_thread() {
        let mut pool = ChunkPool::new();
        let a = pool.copy_from(&[1; 64]);
        let b = pool.copy_from(&[2; 5000]);
        assert_eq!((&a[..], b.len()), (&[1u8; 64][..], 5000));
        assert_eq!(pool.stats(), ChunkStats { chunks: 2, fresh: 2 });
        std::thread::spawn(move || drop((a, b))).join().ok();
        for _ in 0..100 {
            let small = pool.copy_from(&[3; 100]);
            let large = pool.copy_from(&[4; 9000]);
            assert_eq!((small[99], large[8999]), (3, 4));
        }
        assert_eq!(pool.stats(), ChunkStats { chunks: 202, fresh: 2 });
    }

    #[test]
    fn backlog_pumps_in_order_across_chunks_and_partial_takes() {
        let mut pool = ChunkPool::new();
        let mut q = Backlog::new();
        q.push(pool.copy_from(b"abcdef"), 2);
        q.push(pool.copy_from(b"ghij"), 0);
        q.push(Chunk::from_vec(b"klmnop".to_vec()), 3);
        q.push(pool.copy_from(b"xyz"), 3);
        assert_eq!((q.len(), q.to_vec()), (11, b"cdefghijnop".to_vec()));
        let mut out = Vec::new();
        // A receiver with room for 5 bytes, then 3, then all.
        let mut room = 5;
        let took = q.pump(|b| {
            let n = b.len().min(room);
            out.extend_from_slice(&b[..n]);
            room -= n;
            n
        });
        assert_eq!((took, &out[..], q.len()), (5, &b"cdefg"[..], 6));
        q.drop_front(3);
        assert_eq!(q.to_vec(), b"nop".to_vec());
        assert_eq!(q.pump(|b| b.len()), 3);
        assert!(q.is_empty());
        // Every pooled chunk went back: the next three come from the free lists.
        let fresh = pool.stats().fresh;
        let _held: Vec<Chunk> = (0..3).map(|_| pool.copy_from(b"1")).collect();
        assert_eq!(pool.stats().fresh, fresh);
    }
}
