//! A core's side of its port: receive bursts, build frames into pool buffers, transmit in bursts, and count
//! every frame that is dropped and why. Shared by both protocol cores.

use crate::buf::PacketBuf;
use crate::port::Port;
use crate::tcp::Transmit;
use crate::time::Instant;
use crate::wire::{build_tcp_frame_in_place, BuildError, FrameError, FrameHeader, MAX_TCP_FRAME_HEADER};
use std::collections::BTreeMap;

/// Frame counters of one core's port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames built but not taken by a full transmit ring (TCP retransmits them).
    pub tx_ring_full: u64,
    /// No buffer in the pool to build a frame in.
    pub alloc_failed: u64,
    /// A frame did not fit the buffer (a bug or a misconfigured MTU; never a crash).
    pub build_failed: u64,
    /// Received frames that did not parse, by the parser's reason.
    pub bad_frames: BTreeMap<&'static str, u64>,
}

impl IoStats {
    pub fn count_bad(&mut self, e: FrameError) {
        *self.bad_frames.entry(e.as_str()).or_insert(0) += 1;
    }

    pub fn bad_total(&self) -> u64 {
        self.bad_frames.values().sum()
    }
}

/// One core's port with its receive and transmit batches.
#[derive(Debug)]
pub struct NetIo<P> {
    pub port: P,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    burst: usize,
    /// A buffer taken for a segment that did not come (the engine had nothing to send), kept for the next.
    spare: Option<PacketBuf>,
    pub stats: IoStats,
    /// A packet capture of this port, both directions (see `proxy::control`).
    pub capture: super::control::CaptureSlot,
}

impl<P: Port> NetIo<P> {
    pub fn new(port: P, burst: usize) -> Self {
        let burst = burst.clamp(1, 1024);
        NetIo {
            port,
            rx: Vec::with_capacity(burst),
            tx: Vec::with_capacity(burst),
            burst,
            spare: None,
            stats: IoStats::default(),
            capture: Default::default(),
        }
    }

    /// Receives one burst; the caller hands the vector back with [`NetIo::recycle`] when done with it.
    pub fn recv_burst(&mut self, now: Instant) -> Vec<PacketBuf> {
        let mut rx = std::mem::take(&mut self.rx);
        let n = self.port.recv(now, &mut rx, self.burst);
        self.stats.rx_frames += n as u64;
        if self.capture.is_active() {
            for b in &rx {
                self.capture.tap(now, b.data());
            }
        }
        rx
    }

    /// Takes back a burst vector (its buffers go back to their pool as they drop).
    pub fn recycle(&mut self, mut rx: Vec<PacketBuf>) {
        rx.clear();
        self.rx = rx;
    }

    /// Builds a frame with `build` (which returns the frame's length) and queues it for transmission.
    pub fn emit(&mut self, now: Instant, build: impl FnOnce(&mut [u8]) -> Result<usize, BuildError>) -> bool {
        let Some(mut buf) = self.port.alloc() else {
            self.stats.alloc_failed += 1;
            return false;
        };
        let room = buf.tailroom();
        let built = match buf.append(room) {
            Ok(space) => build(space),
            Err(_) => Err(BuildError::BufferTooSmall),
        };
        let Ok(len) = built else {
            self.stats.build_failed += 1;
            return false;
        };
        buf.truncate(len);
        self.capture.tap(now, buf.data());
        self.tx.push(buf);
        if self.tx.len() >= self.burst {
            self.flush(now);
        }
        true
    }

    /// Builds one TCP segment straight into a pool buffer: `segment` (an engine's `poll_transmit`) gets
    /// the frame's payload area, behind room for the longest headers, and returns the segment it wrote
    /// there, or `None` when it has nothing to send; the headers then go in front of the payload. So the
    /// payload is copied once, from the send buffer into the frame, not through a scratch buffer. Without
    /// a pool buffer the segment is written into `scratch` and dropped (counted; TCP retransmits it), as a
    /// full ring would drop it. Returns whether a segment came.
    pub fn emit_segment(
        &mut self,
        now: Instant,
        header: &FrameHeader,
        scratch: &mut [u8],
        segment: impl FnOnce(&mut [u8]) -> Option<Transmit>,
    ) -> bool {
        let Some(mut buf) = self.spare.take().or_else(|| self.port.alloc()) else {
            let came = segment(scratch).is_some();
            self.stats.alloc_failed += u64::from(came);
            return came;
        };
        let room = buf.tailroom();
        let space = match buf.append(room) {
            Ok(space) if space.len() > MAX_TCP_FRAME_HEADER => space,
            // A pool whose buffers cannot hold the headers and a byte: a misconfiguration, counted.
            _ => {
                let came = segment(scratch).is_some();
                self.stats.build_failed += u64::from(came);
                return came;
            }
        };
        let Some(t) = segment(space.get_mut(MAX_TCP_FRAME_HEADER..).unwrap_or_default()) else {
            buf.reset();
            self.spare = Some(buf);
            return false;
        };
        match build_tcp_frame_in_place(space, header, &t.repr, t.payload_len) {
            Ok((start, len)) => {
                buf.truncate(start + len);
                match buf.adjust(start) {
                    Ok(()) => {
                        self.capture.tap(now, buf.data());
                        self.tx.push(buf);
                        if self.tx.len() >= self.burst {
                            self.flush(now);
                        }
                    }
                    Err(_) => self.stats.build_failed += 1,
                }
            }
            Err(_) => self.stats.build_failed += 1,
        }
        true
    }

    /// Transmits what is queued. Frames the ring does not take are dropped and counted: every frame this
    /// module sends is either retransmitted by TCP or answered again by the peer's own retry.
    pub fn flush(&mut self, now: Instant) -> usize {
        if self.tx.is_empty() {
            return 0;
        }
        let sent = self.port.send(now, &mut self.tx);
        self.stats.tx_frames += sent as u64;
        if !self.tx.is_empty() {
            self.stats.tx_ring_full += self.tx.len() as u64;
            self.tx.clear();
        }
        sent
    }

    /// When the port has something to deliver by itself (an in-memory link with delayed frames).
    pub fn poll_at(&mut self) -> Option<Instant> {
        self.port.poll_at()
    }
}
