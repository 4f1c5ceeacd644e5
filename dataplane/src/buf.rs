//! Packet buffers: a pool of fixed-size buffers with headroom (mbuf-like).
//!
//! PROVISIONAL copy on the `nic` branch: the `ports` branch owns this file and its version wins at merge.
//! This one carries only what the NIC backends use (`Pool::new`, `Pool::alloc`, `data`, `data_mut`,
//! `append`, `set_len`, `capacity`), with the same shape the `ports` brief asks for.

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a buffer operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BufError {
    #[error("not enough room in the buffer")]
    NoRoom,
}

#[derive(Debug)]
struct Shared {
    free_tx: Sender<Box<[u8]>>,
    free_rx: Receiver<Box<[u8]>>,
    buf_size: usize,
    headroom: usize,
    exhausted: AtomicU64,
}

/// A fixed set of equally sized buffers, allocated once; cheap to clone and share between threads.
#[derive(Clone, Debug)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Allocates `count` buffers of `buf_size` bytes, of which the first `headroom` are kept free in front.
    pub fn new(count: usize, buf_size: usize, headroom: usize) -> Pool {
        let (free_tx, free_rx) = crossbeam_channel::bounded(count.max(1));
        for _ in 0..count {
            // Cannot fail: the channel was sized for exactly `count` buffers.
            let _ = free_tx.try_send(vec![0u8; buf_size].into_boxed_slice());
        }
        Pool {
            shared: Arc::new(Shared {
                free_tx,
                free_rx,
                buf_size,
                headroom: headroom.min(buf_size),
                exhausted: AtomicU64::new(0),
            }),
        }
    }

    /// An empty buffer with the pool's headroom in front, or None (counted) when all are in use.
    pub fn alloc(&self) -> Option<PacketBuf> {
        match self.shared.free_rx.try_recv() {
            Ok(storage) => Some(PacketBuf {
                storage: Some(storage),
                start: self.shared.headroom,
                len: 0,
                pool: Arc::clone(&self.shared),
            }),
            Err(_) => {
                self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Size of every buffer, headroom included.
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// How many allocations failed because the pool was empty.
    pub fn exhausted(&self) -> u64 {
        self.shared.exhausted.load(Ordering::Relaxed)
    }
}

/// One packet's bytes inside a pool buffer; goes back to its pool when dropped, on whichever thread.
#[derive(Debug)]
pub struct PacketBuf {
    storage: Option<Box<[u8]>>,
    start: usize,
    len: usize,
    pool: Arc<Shared>,
}

impl PacketBuf {
    fn bytes(&self) -> &[u8] {
        self.storage.as_deref().unwrap_or(&[])
    }

    pub fn data(&self) -> &[u8] {
        self.bytes().get(self.start..self.start + self.len).unwrap_or(&[])
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        match self.storage.as_deref_mut() {
            Some(b) => b.get_mut(start..start + len).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available from the start of the data to the end of the buffer.
    pub fn capacity(&self) -> usize {
        self.bytes().len().saturating_sub(self.start)
    }

    /// Sets the data length (new bytes keep whatever the buffer held).
    pub fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        if len > self.capacity() {
            return Err(BufError::NoRoom);
        }
        self.len = len;
        Ok(())
    }

    /// Copies `bytes` after the current data.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), BufError> {
        let old = self.len;
        let new = old.checked_add(bytes.len()).ok_or(BufError::NoRoom)?;
        self.set_len(new)?;
        self.data_mut().get_mut(old..new).ok_or(BufError::NoRoom)?.copy_from_slice(bytes);
        Ok(())
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        if let Some(storage) = self.storage.take() {
            // Never full: only this pool's buffers come back, and there are at most `count` of them.
            let _ = self.pool.free_tx.try_send(storage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_and_return_on_drop() {
        let pool = Pool::new(2, 64, 16);
        let a = pool.alloc();
        let b = pool.alloc();
        assert!(a.is_some() && b.is_some());
        assert!(pool.alloc().is_none());
        assert_eq!(pool.exhausted(), 1);
        drop(a);
        let c = pool.alloc();
        assert!(c.is_some());
        std::thread::spawn(move || drop(b)).join().ok();
        assert!(pool.alloc().is_some());
    }

    #[test]
    fn append_is_bounded() {
        let pool = Pool::new(1, 64, 16);
        let mut p = pool.alloc().unwrap();
        assert_eq!(p.capacity(), 48);
        p.append(&[7; 40]).unwrap();
        assert_eq!(p.append(&[1; 9]), Err(BufError::NoRoom));
        assert_eq!(p.data(), &[7; 40][..]);
        assert_eq!(p.set_len(49), Err(BufError::NoRoom));
    }
}
