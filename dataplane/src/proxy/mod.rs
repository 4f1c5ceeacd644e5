//! The primary's dataplane: two protocol cores that relay TCP flows byte for byte and withhold ACKs.
//!
//! Core A ([`ClientCore`]) owns the client-facing half of every flow: it answers ARP and ICMP for the VIP,
//! accepts clients on listeners, picks a backend, and runs the client half's TCP engine under the flow's ack
//! gate. Core B ([`ServerCore`]) owns the server-facing half: SNAT ports, ARP resolution of backends, the
//! active-open engine toward the backend, and health checks. They share nothing but two bounded channels
//! ([`msg`]); each core's loop body is [`ClientCore::step`] / [`ServerCore::step`], a plain function of
//! (ports, channels, now) that returns its next deadline, so the same code runs pinned on a NIC and stepped
//! by a simulator on a virtual clock.
//!
//! Connection setup binds late: the client's SYN is held until the backend has accepted the server-side
//! connection, so the client's SYN-ACK means a backend is there (and, with a standby attached, that the
//! standby knows the flow). Each byte a client sends is acknowledged only when the flow's policy says it is
//! safe: `backend` — the backend acknowledged it; `app` — the hosted application committed it; `none` — at
//! once (a plain proxy, the baseline).

pub mod chunk;
mod client;
pub mod control;
pub mod msg;
mod netio;
pub mod replicate;
mod server;
pub mod timers;

pub use client::{ClientCore, ClientStats, CoreError};
pub use netio::{IoStats, NetIo};
pub use server::{ServerCore, ServerStats};

use crate::balance::health::HealthParams;
use crate::balance::Algorithm;
use crate::gate::AckPolicy;
use crate::time::Duration;
use crate::wire::{ChecksumMode, EthernetAddress};
use chunk::{Backlog, Chunk};
use std::net::{Ipv4Addr, SocketAddrV4};

/// One listener: a port on the VIP and where its flows go.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub port: u16,
    pub policy: AckPolicy,
    /// Backends with weights; empty for a listener served by an application (policy `app`).
    pub backends: Vec<(SocketAddrV4, u32)>,
    pub balance: Algorithm,
    pub health: Option<HealthParams>,
}

/// Everything the two cores of one box need to know, fixed at start.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The virtual IP clients connect to, on the client port.
    pub vip: Ipv4Addr,
    pub client_mac: EthernetAddress,
    /// The proxy's source address toward backends, on the server port.
    pub snat: Ipv4Addr,
    pub server_mac: EthernetAddress,
    /// The server LAN (backends on it are reached directly; others through `gateway`).
    pub server_net: (Ipv4Addr, u8),
    pub gateway: Option<Ipv4Addr>,
    pub listeners: Vec<ListenerConfig>,
    /// TCP settings of the client halves and of the server halves.
    pub client_tcp: crate::tcp::Config,
    pub server_tcp: crate::tcp::Config,
    pub max_flows: u32,
    /// Flows without any activity for this long are dropped (a backstop under the engines' own timeouts).
    pub flow_idle_timeout: Duration,
    /// SNAT source ports toward backends (inclusive), and the range for health-check probes.
    pub snat_ports: (u16, u16),
    pub probe_ports: (u16, u16),
    /// How long a released SNAT port rests before reuse (the backend may still be in TIME-WAIT).
    pub snat_quarantine: Duration,
    pub burst: usize,
    pub checksum: ChecksumMode,
    /// Seeds the flow tables' hashing (not a secret; the ISN secret is in the TCP configs).
    pub seed: u64,
}

impl ProxyConfig {
    /// Whether `ip` is on the server LAN.
    pub fn on_server_net(&self, ip: Ipv4Addr) -> bool {
        let (net, len) = self.server_net;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
        u32::from(ip) & mask == u32::from(net) & mask
    }

    /// The next hop toward `ip` on the server LAN.
    pub fn next_hop(&self, ip: Ipv4Addr) -> Ipv4Addr {
        match self.gateway {
            Some(gw) if !self.on_server_net(ip) => gw,
            _ => ip,
        }
    }

    /// The listener on VIP port `port`.
    pub fn listener(&self, port: u16) -> Option<(u16, &ListenerConfig)> {
        self.listeners.iter().enumerate().find(|(_, l)| l.port == port).map(|(i, l)| (i as u16, l))
    }
}

/// A stable name for each reason an engine refuses a segment, for counters.
pub(crate) fn segment_error_name(e: crate::tcp::SegmentError) -> &'static str {
    use crate::tcp::SegmentError;
    match e {
        SegmentError::Closed => "closed",
        SegmentError::OutOfWindow => "out_of_window",
        SegmentError::Paws => "paws",
        SegmentError::Challenged => "challenged",
        SegmentError::BadAck => "bad_ack",
        SegmentError::NoAck => "no_ack",
        SegmentError::Handshake => "handshake",
        SegmentError::TimeWaitSyn => "time_wait_syn",
        SegmentError::TimeWaitRst => "time_wait_rst",
    }
}

/// What [`take_relayed`] did with a chunk from the other core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relayed {
    /// Bytes appended to the backlog.
    pub taken: usize,
    /// The chunk started beyond the expected offset (a bug if it ever happens; counted).
    pub gap: bool,
}

/// Appends a relayed chunk that starts at stream offset `offset` to a half's backlog, dropping the bytes
/// below `next` (ones its peer already has: a takeover's overlap), and moves `next` past it.
pub(crate) fn take_relayed(backlog: &mut Backlog, next: &mut u64, offset: u64, chunk: Chunk) -> Relayed {
    let gap = offset > *next;
    let skip = usize::try_from(next.saturating_sub(offset)).unwrap_or(usize::MAX);
    let Some(taken) = chunk.len().checked_sub(skip) else { return Relayed { taken: 0, gap } };
    *next = (*next).max(offset + chunk.len() as u64);
    backlog.push(chunk, skip);
    Relayed { taken, gap }
}

/// After a resynchronization moved a half's send edge to `to`, drops the waiting bytes below it (the
/// peer has them) and moves the expected offset past it.
pub(crate) fn resync_backlog(backlog: &mut Backlog, next: &mut u64, iss: u32, to: u32) {
    let to_off = offset_at(iss.wrapping_add(1), to, *next);
    let front = next.saturating_sub(backlog.len() as u64);
    if to_off > front {
        let n = usize::try_from(to_off - front).unwrap_or(usize::MAX).min(backlog.len());
        backlog.drop_front(n);
    }
    *next = (*next).max(to_off);
}

/// Stream offset → sequence number, for a side whose first data byte is `start` (ISN + 1).
#[inline]
pub(crate) fn seq_at(start: u32, offset: u64) -> u32 {
    start.wrapping_add(offset as u32)
}

/// Sequence number → stream offset, given the last known offset `near` (offsets are 64-bit, sequence
/// numbers wrap every 4 GiB; `seq` is always within 2 GiB of `near` in a correct flow).
#[inline]
pub(crate) fn offset_at(start: u32, seq: u32, near: u64) -> u64 {
    let near_seq = seq_at(start, near);
    let delta = seq.wrapping_sub(near_seq) as i32;
    near.wrapping_add(delta as i64 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_chunks_overlapping_what_the_peer_has_are_trimmed() {
        let c = |b: &[u8]| Chunk::from_vec(b.to_vec());
        let mut backlog = Backlog::new();
        let mut next = 10;
        // Entirely below: nothing taken.
        assert_eq!(take_relayed(&mut backlog, &mut next, 0, c(&[1; 5])), Relayed { taken: 0, gap: false });
        // Straddling: only the part from 10 on.
        assert_eq!(
            take_relayed(&mut backlog, &mut next, 8, c(&[2, 3, 4, 5])),
            Relayed { taken: 2, gap: false }
        );
        assert_eq!((next, backlog.to_vec()), (12, vec![4, 5]));
        // Beyond the expected offset: counted as a gap.
        assert!(take_relayed(&mut backlog, &mut next, 20, c(&[6])).gap);
        // A resync to offset 13 drops what waits below it.
        let mut backlog = Backlog::new();
        backlog.push(c(&[7, 8]), 0);
        backlog.push(c(&[9]), 0);
        let mut next = 15; // backlog holds offsets 12..15
        resync_backlog(&mut backlog, &mut next, 99, seq_at(100, 13));
        assert_eq!((next, backlog.to_vec()), (15, vec![8, 9]));
    }

    #[test]
    fn offsets_survive_wraparound() {
        let start = u32::MAX - 10;
        assert_eq!(seq_at(start, 20), 9);
        assert_eq!(offset_at(start, 9, 0), 20);
        assert_eq!(offset_at(start, seq_at(start, 5_000_000_000), 4_999_999_000), 5_000_000_000);
        assert_eq!(offset_at(start, seq_at(start, 100), 200), 100);
    }
}
