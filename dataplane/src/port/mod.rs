//! Ports: a NIC queue behind a small burst interface.
//!
//! PROVISIONAL copy on the `nic` branch: the `ports` branch owns this file and its version wins at merge;
//! only the `afxdp` and `dpdk` module lines below belong to `nic`.

use crate::buf::PacketBuf;
use crate::time::Instant;

#[cfg(feature = "afxdp")]
pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;

/// What a port is, for logs and for addressing (its MAC is the box's address on that LAN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u16,
}

/// Counters of one port queue since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received but dropped because no buffer was free.
    pub rx_no_buf: u64,
    /// Frames dropped because they were larger than a buffer (received) or than the ring's frame (sent).
    pub too_big: u64,
    /// Frames the NIC or kernel reported dropping (ring overflow, missed) on receive.
    pub rx_missed: u64,
    /// Times `send` returned with frames left in the caller's vector because the ring was full.
    pub tx_ring_full: u64,
}

/// One queue of one port: receive a burst, transmit a burst.
pub trait Port: Send {
    /// Receives up to `max` frames, appending them to `out`; returns how many.
    fn recv(&mut self, now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize;
    /// Transmits frames from the front of `pkts`, removing those it took; returns how many.
    /// Frames not taken (ring full) stay in `pkts` for the caller to retry or drop (counted).
    fn send(&mut self, now: Instant, pkts: &mut Vec<PacketBuf>) -> usize;
    /// Allocates a buffer suitable for `send` on this port.
    fn alloc(&mut self) -> Option<PacketBuf>;
    fn info(&self) -> PortInfo;
    fn stats(&self) -> PortStats;
    /// Next time this port has something to deliver by itself (mem port with delayed frames), if any.
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}
