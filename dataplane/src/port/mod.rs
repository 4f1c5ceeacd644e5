//! Ports: a NIC queue behind a small burst interface.
//!
//! One [`Port`] object is one queue of one port. Protocol code receives and transmits bursts of
//! [`PacketBuf`]s through it and never learns which backend carries them:
//! - [`mem`]: in-memory links and learning switches with a seeded fault injector (tests, simulation,
//!   benches);
//! - [`afpacket`]: Linux AF_PACKET with memory-mapped rings (veths in namespaces, CI).
//! - `afxdp` (cargo feature `afxdp`): AF_XDP sockets through xsk-rs (kernel bypass; docs/nic-backends.md).
//! - `dpdk` (cargo feature `dpdk`): DPDK 22.11 through our binding crate holdfast-dpdk-sys.
//!
//! Every call takes the current time as an argument, so the same code runs on a virtual clock.

pub mod afpacket;
#[cfg(feature = "afxdp")]
pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod mem;

use crate::buf::PacketBuf;
use crate::time::Instant;

/// One queue of one port.
pub trait Port: Send {
    /// Receives up to `max` frames, appending them to `out`; returns how many.
    ///
    /// Pushing onto `out` never allocates when the caller reserved room for `max` more frames.
    fn recv(&mut self, now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize;

    /// Transmits frames from the front of `pkts`, removing those it took; returns how many.
    ///
    /// Frames not taken (ring full) stay in `pkts`, in order, for the caller to retry or drop; each refusal
    /// is counted in [`PortStats::tx_ring_full`]. A taken frame may still be dropped by the port (too
    /// large, link down, injected loss), which is counted too.
    fn send(&mut self, now: Instant, pkts: &mut Vec<PacketBuf>) -> usize;

    /// Allocates a buffer suitable for `send` on this port.
    fn alloc(&mut self) -> Option<PacketBuf>;

    fn info(&self) -> PortInfo;

    fn stats(&self) -> PortStats;

    /// Next time this port has something to deliver by itself (a mem port holding delayed frames), if any;
    /// a loop that sleeps until its next deadline must not sleep past it. `&mut` because a port may have to
    /// look at frames that arrived since it last ran.
    fn poll_at(&mut self) -> Option<Instant> {
        None
    }
}

/// What a port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    /// The port's own hardware address, when it has one (the box may use another, e.g. a virtual MAC).
    pub mac: Option<[u8; 6]>,
    /// Largest IP packet the port carries; frames are at most `mtu + 14` bytes (no VLAN tags, no FCS).
    pub mtu: usize,
}

/// Counters of one port. Every frame a port takes or delivers is counted once in the packet counters, and
/// every frame it loses is counted once under its cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Received frames larger than a buffer or the MTU, dropped whole (never truncated).
    pub rx_dropped_oversize: u64,
    /// Received frames dropped because the buffer pool was empty.
    pub rx_dropped_no_buffer: u64,
    /// Frames the kernel or NIC dropped before we saw them (ring overrun).
    pub rx_dropped_ring: u64,
    /// Frames arriving while this port's link was down.
    pub rx_dropped_link_down: u64,
    /// Frames `send` refused because the ring was full (they stayed with the caller).
    pub tx_ring_full: u64,
    /// Frames taken by `send` but too large for the port, dropped.
    pub tx_dropped_oversize: u64,
    /// Frames taken while the link was down, dropped.
    pub tx_dropped_link_down: u64,
    /// Frames the kernel or NIC refused as malformed after taking them.
    pub tx_dropped_malformed: u64,
    /// Copies a switch could not queue to a full destination, dropped.
    pub tx_dropped_queue_full: u64,
    /// Frames (or copies for duplication and flooding) not made because the pool was empty.
    pub tx_dropped_no_buffer: u64,
    /// Fault injector: frames lost on purpose.
    pub fault_lost: u64,
    /// Fault injector: extra copies delivered.
    pub fault_duplicated: u64,
    /// Fault injector: frames held back so that later frames overtake them.
    pub fault_reordered: u64,
    /// Fault injector: frames with one byte flipped.
    pub fault_corrupted: u64,
    /// Switch: frames sent to every other port (broadcast, multicast or unknown destination).
    pub flooded: u64,
}

/// The largest Ethernet frame for an MTU: header without VLAN tag, no FCS.
pub const fn max_frame_len(mtu: usize) -> usize {
    mtu + 14
}
