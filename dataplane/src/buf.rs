//! Packet buffers: a pool of fixed-size buffers with headroom (mbuf-like).
//!
//! A [`Pool`] owns `count` buffers of `buf_size` bytes, allocated once when it is made. [`Pool::alloc`]
//! hands one out as a [`PacketBuf`], whose data starts `headroom` bytes into the buffer so that lower-layer
//! headers can be prepended without copying. Dropping a `PacketBuf`, on whichever thread, returns its bytes
//! to the pool's free queue (a bounded lock-free MPMC queue). No heap allocation happens per packet: the
//! buffers themselves move between the free queue and their handles.
//!
//! Keeping a frame for retransmission: [`PacketBuf::freeze`] turns a buffer into a read-only [`SharedBuf`]
//! whose clones are reference-count bumps; the bytes return to the pool when the last clone is dropped.
//! Freezing costs one small heap allocation (the shared header), because recycling a reference-counted
//! header without one would need `unsafe`, which this crate allows only in port backends. Where that
//! matters, [`PacketBuf::try_clone`] copies the frame into another pool buffer instead (no heap), and a
//! retransmission has to rewrite the headers (ACK, window, timestamps, checksums) in a fresh buffer anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Why a headroom or length operation on a [`PacketBuf`] was refused. The buffer is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BufError {
    /// Prepending more bytes than the headroom holds.
    #[error("not enough headroom")]
    NoHeadroom,
    /// Growing the data past the end of the buffer.
    #[error("not enough tailroom")]
    NoTailroom,
    /// Removing more bytes than the data holds.
    #[error("data shorter than requested")]
    TooShort,
}

/// Why a [`Pool`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs at least one buffer")]
    Empty,
    #[error("headroom must be smaller than the buffer size")]
    HeadroomTooLarge,
    #[error("buffer size exceeds u32::MAX")]
    BufferTooLarge,
}

/// Counters of a pool, shared by all its handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers the pool was made with.
    pub capacity: usize,
    /// Buffers currently free.
    pub available: usize,
    /// Allocations refused because the pool was empty.
    pub exhausted: u64,
}

#[derive(Debug)]
struct Shared {
    free_tx: Sender<Box<[u8]>>,
    free_rx: Receiver<Box<[u8]>>,
    buf_size: usize,
    headroom: usize,
    count: usize,
    exhausted: AtomicU64,
}

impl Shared {
    fn give_back(&self, bytes: Box<[u8]>) {
        // Only buffers of this pool come back, so the queue (sized for all of them) never fills; an empty
        // box (already given back) is not a buffer.
        if bytes.len() == self.buf_size {
            if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) = self.free_tx.try_send(bytes) {
                drop(b);
            }
        }
    }
}

/// A pool of fixed-size packet buffers. Cheap to clone; all clones share the same buffers.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Default buffer size: an MTU-sized Ethernet frame plus headroom, rounded to 2 KiB.
    pub const DEFAULT_BUF_SIZE: usize = 2048;
    /// Default headroom in front of the data.
    pub const DEFAULT_HEADROOM: usize = 128;

    /// Makes a pool of `count` buffers of `buf_size` bytes, data starting `headroom` bytes in.
    pub fn new(count: usize, buf_size: usize, headroom: usize) -> Result<Pool, PoolError> {
        if count == 0 {
            return Err(PoolError::Empty);
        }
        if headroom >= buf_size {
            return Err(PoolError::HeadroomTooLarge);
        }
        if u32::try_from(buf_size).is_err() {
            return Err(PoolError::BufferTooLarge);
        }
        let (free_tx, free_rx) = crossbeam_channel::bounded(count);
        for _ in 0..count {
            // The queue was made for exactly `count` buffers.
            let _ = free_tx.try_send(vec![0u8; buf_size].into_boxed_slice());
        }
        Ok(Pool {
            shared: Arc::new(Shared {
                free_tx,
                free_rx,
                buf_size,
                headroom,
                count,
                exhausted: AtomicU64::new(0),
            }),
        })
    }

    /// A pool of `count` buffers with the default size and headroom.
    pub fn with_count(count: usize) -> Result<Pool, PoolError> {
        Pool::new(count, Self::DEFAULT_BUF_SIZE, Self::DEFAULT_HEADROOM)
    }

    /// Takes an empty buffer (data at the headroom, length 0), or `None` (counted) when all are in use.
    pub fn alloc(&self) -> Option<PacketBuf> {
        match self.shared.free_rx.try_recv() {
            Ok(bytes) => {
                Some(PacketBuf { bytes, off: self.shared.headroom, len: 0, shared: Arc::clone(&self.shared) })
            }
            Err(_) => {
                self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Takes a buffer holding a copy of `data`, or `None` when the pool is empty or `data` does not fit
    /// after the headroom.
    pub fn alloc_copy(&self, data: &[u8]) -> Option<PacketBuf> {
        if data.len() > self.shared.buf_size - self.shared.headroom {
            return None;
        }
        let mut b = self.alloc()?;
        b.extend_from_slice(data).ok()?;
        Some(b)
    }

    /// Size of each buffer, headroom included.
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// Headroom of a freshly allocated buffer.
    pub fn headroom(&self) -> usize {
        self.shared.headroom
    }

    /// Largest frame a fresh buffer holds without touching its headroom.
    pub fn max_data(&self) -> usize {
        self.shared.buf_size - self.shared.headroom
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.shared.free_rx.len()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            capacity: self.shared.count,
            available: self.available(),
            exhausted: self.shared.exhausted.load(Ordering::Relaxed),
        }
    }

    /// Whether `buf` came from this pool (or a clone of it).
    pub fn owns(&self, buf: &PacketBuf) -> bool {
        Arc::ptr_eq(&self.shared, &buf.shared)
    }
}

/// One packet buffer, exclusively owned; returns to its pool when dropped.
///
/// The data is the window `off .. off + len` of the buffer; bytes in front of it are headroom, bytes after
/// it tailroom. Growing the data (`set_len`, `append`, `prepend`) exposes whatever the buffer held before:
/// callers write what they expose.
#[derive(Debug)]
pub struct PacketBuf {
    bytes: Box<[u8]>,
    off: usize,
    len: usize,
    shared: Arc<Shared>,
}

impl PacketBuf {
    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        self.bytes.get(self.off..self.off + self.len).unwrap_or(&[])
    }

    /// The frame's bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.off, self.len);
        self.bytes.get_mut(off..off + len).unwrap_or(&mut [])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Largest length the data can have from its current start.
    pub fn capacity(&self) -> usize {
        self.bytes.len() - self.off
    }

    /// Bytes free in front of the data.
    pub fn headroom(&self) -> usize {
        self.off
    }

    /// Bytes free after the data.
    pub fn tailroom(&self) -> usize {
        self.bytes.len() - self.off - self.len
    }

    /// Sets the data length (growing exposes old buffer contents).
    pub fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        if len > self.capacity() {
            return Err(BufError::NoTailroom);
        }
        self.len = len;
        Ok(())
    }

    /// Shortens the data to `len` bytes; does nothing when it is already shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Moves the start of the data `n` bytes back into the headroom and returns the new front bytes.
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.off {
            return Err(BufError::NoHeadroom);
        }
        self.off -= n;
        self.len += n;
        let off = self.off;
        Ok(self.bytes.get_mut(off..off + n).unwrap_or(&mut []))
    }

    /// Removes `n` bytes from the front of the data (they become headroom), e.g. to strip a header.
    pub fn adjust(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.len {
            return Err(BufError::TooShort);
        }
        self.off += n;
        self.len -= n;
        Ok(())
    }

    /// Grows the data by `n` bytes at the end and returns them.
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.tailroom() {
            return Err(BufError::NoTailroom);
        }
        let end = self.off + self.len;
        self.len += n;
        Ok(self.bytes.get_mut(end..end + n).unwrap_or(&mut []))
    }

    /// Appends a copy of `src`.
    pub fn extend_from_slice(&mut self, src: &[u8]) -> Result<(), BufError> {
        self.append(src.len())?.copy_from_slice(src);
        Ok(())
    }

    /// Empties the data and puts its start back at the pool's headroom.
    pub fn reset(&mut self) {
        self.off = self.shared.headroom;
        self.len = 0;
    }

    /// Copies this frame (data and offset) into another buffer of the same pool; `None` when it is empty.
    pub fn try_clone(&self) -> Option<PacketBuf> {
        let bytes = match self.shared.free_rx.try_recv() {
            Ok(b) => b,
            Err(_) => {
                self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let mut copy = PacketBuf { bytes, off: self.off, len: self.len, shared: Arc::clone(&self.shared) };
        copy.data_mut().copy_from_slice(self.data());
        Some(copy)
    }

    /// Turns this buffer into a read-only, cheaply clonable handle (see the module docs).
    pub fn freeze(mut self) -> SharedBuf {
        let bytes = std::mem::take(&mut self.bytes);
        SharedBuf {
            inner: Arc::new(Frozen { bytes, shared: Arc::clone(&self.shared) }),
            off: self.off,
            len: self.len,
        }
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        self.shared.give_back(std::mem::take(&mut self.bytes));
    }
}

#[derive(Debug)]
struct Frozen {
    bytes: Box<[u8]>,
    shared: Arc<Shared>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.shared.give_back(std::mem::take(&mut self.bytes));
    }
}

/// A read-only frame shared by reference count (e.g. kept for retransmission while also queued). Its bytes
/// return to the pool when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SharedBuf {
    inner: Arc<Frozen>,
    off: usize,
    len: usize,
}

impl SharedBuf {
    pub fn data(&self) -> &[u8] {
        self.inner.bytes.get(self.off..self.off + self.len).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Handles (this one included) sharing the bytes.
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Gets the writable buffer back without copying when this is the last handle, else returns `self`.
    pub fn try_into_packet(self) -> Result<PacketBuf, SharedBuf> {
        let SharedBuf { inner, off, len } = self;
        match Arc::try_unwrap(inner) {
            Ok(mut frozen) => {
                let bytes = std::mem::take(&mut frozen.bytes);
                Ok(PacketBuf { bytes, off, len, shared: Arc::clone(&frozen.shared) })
            }
            Err(inner) => Err(SharedBuf { inner, off, len }),
        }
    }

    /// Copies the frame into a fresh writable buffer of the same pool (`None` when the pool is empty).
    pub fn to_packet(&self) -> Option<PacketBuf> {
        let pool = Pool { shared: Arc::clone(&self.inner.shared) };
        let mut b = pool.alloc()?;
        b.off = self.off;
        b.len = self.len;
        b.data_mut().copy_from_slice(self.data());
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pool_shapes_are_errors() {
        assert_eq!(Pool::new(0, 2048, 128).err(), Some(PoolError::Empty));
        assert_eq!(Pool::new(4, 128, 128).err(), Some(PoolError::HeadroomTooLarge));
    }

    #[test]
    fn exhaustion_is_counted_and_drop_refills() {
        let pool = Pool::new(3, 256, 32).unwrap();
        let held: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        assert!(pool.alloc().is_none());
        assert_eq!(pool.stats(), PoolStats { capacity: 3, available: 0, exhausted: 2 });
        drop(held);
        assert_eq!(pool.available(), 3);
        assert!(pool.alloc().is_some());
    }

    #[test]
    fn headroom_ops_are_bounds_checked() {
        let pool = Pool::new(1, 64, 16).unwrap();
        let mut b = pool.alloc().unwrap();
        assert_eq!((b.headroom(), b.len(), b.tailroom(), b.capacity()), (16, 0, 48, 48));
        b.extend_from_slice(b"payload").unwrap();
        b.prepend(4).unwrap().copy_from_slice(b"hdr:");
        assert_eq!(b.data(), b"hdr:payload");
        assert_eq!(b.prepend(13), Err(BufError::NoHeadroom));
        assert_eq!(b.data(), b"hdr:payload");
        b.adjust(4).unwrap();
        assert_eq!(b.data(), b"payload");
        assert_eq!(b.adjust(8), Err(BufError::TooShort));
        assert_eq!(b.append(42), Err(BufError::NoTailroom));
        assert_eq!(b.append(41).map(|s| s.len()), Ok(41));
        assert_eq!(b.tailroom(), 0);
        assert_eq!(b.set_len(b.capacity() + 1), Err(BufError::NoTailroom));
        b.truncate(3);
        assert_eq!(b.data(), b"pay");
        b.truncate(10);
        assert_eq!(b.len(), 3);
        b.reset();
        assert_eq!((b.headroom(), b.len()), (16, 0));
        assert!(pool.alloc_copy(&[0u8; 49]).is_none());
    }

    #[test]
    fn buffers_return_when_dropped_on_other_threads() {
        let pool = Pool::new(64, 256, 32).unwrap();
        for round in 0..20u8 {
            let (tx, rx) = crossbeam_channel::bounded::<PacketBuf>(64);
            let consumer = std::thread::spawn(move || {
                let mut sum = 0u64;
                while let Ok(b) = rx.recv() {
                    sum += u64::from(b.data()[0]);
                }
                sum
            });
            let mut expect = 0u64;
            for i in 0..64u8 {
                let b = pool.alloc_copy(&[i.wrapping_add(round)]).unwrap();
                expect += u64::from(i.wrapping_add(round));
                tx.send(b).unwrap();
            }
            drop(tx);
            assert_eq!(consumer.join().unwrap(), expect);
            assert_eq!(pool.available(), 64);
        }
        assert_eq!(pool.stats().exhausted, 0);
    }

    #[test]
    fn frozen_buffers_live_until_the_last_clone() {
        let pool = Pool::new(2, 128, 16).unwrap();
        let mut b = pool.alloc_copy(b"keep me").unwrap();
        b.adjust(5).unwrap();
        let s = b.freeze();
        let s2 = s.clone();
        assert_eq!(s.ref_count(), 2);
        assert_eq!(pool.available(), 1);
        let s = s.try_into_packet().unwrap_err();
        let copy = s.to_packet().unwrap();
        assert_eq!(copy.data(), b"me");
        assert_eq!(copy.headroom(), 21);
        assert!(s.to_packet().is_none());
        drop(copy);
        let other = std::thread::spawn(move || s2.data().to_vec());
        assert_eq!(other.join().unwrap(), b"me");
        let mut back = s.try_into_packet().unwrap();
        assert_eq!(pool.available(), 1);
        back.data_mut()[0] = b'w';
        assert_eq!(back.data(), b"we");
        drop(back);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn try_clone_copies_within_the_pool() {
        let pool = Pool::new(2, 128, 16).unwrap();
        let a = pool.alloc_copy(b"abc").unwrap();
        let mut c = a.try_clone().unwrap();
        c.data_mut()[0] = b'x';
        assert_eq!((a.data(), c.data()), (&b"abc"[..], &b"xbc"[..]));
        assert!(a.try_clone().is_none());
        assert_eq!(pool.stats().exhausted, 1);
    }
}
