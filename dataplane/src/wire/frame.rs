//! Whole frames: one call walks Ethernet (+VLAN) → IPv4 → TCP / ICMP, or → ARP, or → the replication
//! EtherType, and one call builds an Ethernet/IPv4/TCP (or ICMP, or ARP) frame into a buffer.
//!
//! This is the receive path's entry point: every frame a port hands up goes through [`parse_frame`], and
//! every rejection comes back as one [`FrameError`] that the core counts by its `as_str()` name.

use super::arp::{ArpPacket, ArpRepr};
use super::error::{BuildError, FrameError};
use super::ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr, VlanTag};
use super::icmp::{Icmpv4Packet, Icmpv4Repr};
use super::ipv4::{IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr};
use super::tcp::{TcpPacket, TcpRepr};

/// Which checksums [`parse_frame_with`] verifies. Skip them only when the NIC has verified them already
/// (hardware receive checksum offload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumMode {
    /// Verify IPv4, TCP and ICMP checksums.
    Verify,
    /// Trust them.
    Skip,
}

/// A parsed frame: the Ethernet header and what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ethernet: EthernetRepr,
    /// Offset of the Ethernet payload (14, or 18 with a VLAN tag).
    pub l3_offset: usize,
    pub payload: FramePayload<'a>,
}

/// What an Ethernet frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePayload<'a> {
    Arp(ArpRepr),
    Ipv4 {
        ip: Ipv4Repr,
        /// Offset of the IP payload from the start of the frame (IP options skipped).
        l4_offset: usize,
        l4: Ipv4Payload<'a>,
    },
    /// A frame of holdfast's replication channel (EtherType 0x88B5): the Ethernet payload, padding included;
    /// the replication protocol knows its own lengths.
    Replication(&'a [u8]),
}

/// What an IPv4 packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Payload<'a> {
    Tcp(TcpRepr<'a>),
    Icmp(Icmpv4Repr<'a>),
}

impl<'a> Frame<'a> {
    /// The TCP segment, with its IPv4 header, when the frame carries one.
    pub fn tcp(&self) -> Option<(&Ipv4Repr, &TcpRepr<'a>)> {
        match &self.payload {
            FramePayload::Ipv4 { ip, l4: Ipv4Payload::Tcp(tcp), .. } => Some((ip, tcp)),
            _ => None,
        }
    }
}

/// Parses a frame, verifying every checksum.
pub fn parse_frame(frame: &[u8]) -> Result<Frame<'_>, FrameError> {
    parse_frame_with(frame, ChecksumMode::Verify)
}

/// Parses a frame, verifying checksums as `mode` says.
pub fn parse_frame_with(frame: &[u8], mode: ChecksumMode) -> Result<Frame<'_>, FrameError> {
    let verify = mode == ChecksumMode::Verify;
    let eth = EthernetFrame::new_checked(frame)?;
    let ethernet = EthernetRepr::parse(&eth)?;
    let l3_offset = eth.header_len();
    let l3 = eth.payload();
    let payload = match ethernet.ethertype {
        EtherType::Arp => FramePayload::Arp(ArpRepr::parse(&ArpPacket::new_checked(l3)?)?),
        EtherType::Replication => FramePayload::Replication(l3),
        EtherType::Ipv4 => {
            let packet = Ipv4Packet::new_checked(l3)?;
            let ip = Ipv4Repr::parse(&packet, verify)?;
            let l4_offset = l3_offset + packet.header_len();
            let l4_bytes = packet.payload();
            let l4 = match ip.protocol {
                IpProtocol::Tcp => {
                    let tcp = TcpPacket::new_checked(l4_bytes)?;
                    Ipv4Payload::Tcp(TcpRepr::parse(&tcp, ip.src_addr, ip.dst_addr, verify)?)
                }
                IpProtocol::Icmp => {
                    let icmp = Icmpv4Packet::new_checked(l4_bytes)?;
                    Ipv4Payload::Icmp(Icmpv4Repr::parse(&icmp, verify)?)
                }
                IpProtocol::Udp | IpProtocol::Unknown(_) => return Err(FrameError::UnsupportedProtocol),
            };
            FramePayload::Ipv4 { ip, l4_offset, l4 }
        }
        EtherType::Vlan | EtherType::Unknown(_) => return Err(FrameError::UnsupportedEthertype),
    };
    Ok(Frame { ethernet, l3_offset, payload })
}

/// The link and IPv4 fields of a frame to build; protocol and lengths are filled in by the builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub vlan: Option<VlanTag>,
    pub src_ip: Ipv4Address,
    pub dst_ip: Ipv4Address,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl FrameHeader {
    /// A header with TTL 64, DF set and identification 0, as Linux sends TCP.
    pub const fn new(
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        src_ip: Ipv4Address,
        dst_ip: Ipv4Address,
    ) -> FrameHeader {
        FrameHeader {
            src_mac,
            dst_mac,
            vlan: None,
            src_ip,
            dst_ip,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
    }

    fn ethernet(&self, ethertype: EtherType) -> EthernetRepr {
        EthernetRepr { src_addr: self.src_mac, dst_addr: self.dst_mac, vlan: self.vlan, ethertype }
    }

    fn ipv4(&self, protocol: IpProtocol, payload_len: usize) -> Ipv4Repr {
        Ipv4Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
            protocol,
            payload_len,
            ttl: self.ttl,
            tos: self.tos,
            ident: self.ident,
            dont_frag: self.dont_frag,
        }
    }
}

/// Splits off the Ethernet and IPv4 headers of an IPv4 frame of `l4_len` transport bytes, writing them, and
/// returns the transport part and the frame length.
fn emit_ipv4_headers<'b>(
    buf: &'b mut [u8],
    header: &FrameHeader,
    protocol: IpProtocol,
    l4_len: usize,
) -> Result<(&'b mut [u8], usize), BuildError> {
    let eth = header.ethernet(EtherType::Ipv4);
    let ip = header.ipv4(protocol, l4_len);
    if ip.buffer_len() > usize::from(u16::MAX) {
        return Err(BuildError::PayloadTooLarge);
    }
    let frame_len = eth.buffer_len(ip.buffer_len());
    let frame = buf.get_mut(..frame_len).ok_or(BuildError::BufferTooSmall)?;
    let (eth_bytes, ip_bytes) = frame.split_at_mut(eth.header_len());
    eth.emit(&mut EthernetFrame::new_unchecked(&mut *eth_bytes));
    let (ip_header, l4) = ip_bytes.split_at_mut(ip.header_len());
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut *ip_header));
    Ok((l4, frame_len))
}

/// Writes an Ethernet/IPv4/TCP frame (payload included) at the start of `buf`; returns its length.
pub fn build_tcp_frame(buf: &mut [u8], header: &FrameHeader, tcp: &TcpRepr<'_>) -> Result<usize, BuildError> {
    let (l4, frame_len) = emit_ipv4_headers(buf, header, IpProtocol::Tcp, tcp.buffer_len())?;
    tcp.emit(&mut TcpPacket::new_unchecked(l4), header.src_ip, header.dst_ip);
    Ok(frame_len)
}

/// Header bytes that [`build_tcp_frame_in_place`] reserves before a payload: Ethernet with a VLAN tag,
/// IPv4 without options, TCP with the longest options.
pub const MAX_TCP_FRAME_HEADER: usize = 18 + 20 + 60;

/// Writes the headers of an Ethernet/IPv4/TCP frame whose `payload_len` payload bytes are already in
/// `buf` at [`MAX_TCP_FRAME_HEADER`] (`tcp.payload` is ignored), so that the headers end where the payload
/// starts, and fills in the checksum. Returns where the frame starts in `buf` and its length. This is how a
/// sender copies a segment's bytes once, from its send buffer straight into the frame, when it learns the
/// header's length (its options) only together with the payload.
pub fn build_tcp_frame_in_place(
    buf: &mut [u8],
    header: &FrameHeader,
    tcp: &TcpRepr<'_>,
    payload_len: usize,
) -> Result<(usize, usize), BuildError> {
    let tcp = TcpRepr { payload: &[], ..*tcp };
    let l4_len = tcp.header_len() + payload_len;
    let headers =
        header.ethernet(EtherType::Ipv4).header_len() + header.ipv4(IpProtocol::Tcp, l4_len).header_len();
    let start =
        MAX_TCP_FRAME_HEADER.checked_sub(headers + tcp.header_len()).ok_or(BuildError::BufferTooSmall)?;
    let frame = buf.get_mut(start..).ok_or(BuildError::BufferTooSmall)?;
    let (l4, frame_len) = emit_ipv4_headers(frame, header, IpProtocol::Tcp, l4_len)?;
    // The payload is in place behind the header: emitting copies none, and the checksum covers it all.
    tcp.emit(&mut TcpPacket::new_unchecked(l4), header.src_ip, header.dst_ip);
    Ok((start, frame_len))
}

/// Writes an Ethernet/IPv4/ICMP echo frame at the start of `buf`; returns its length.
pub fn build_icmp_frame(
    buf: &mut [u8],
    header: &FrameHeader,
    icmp: &Icmpv4Repr<'_>,
) -> Result<usize, BuildError> {
    let (l4, frame_len) = emit_ipv4_headers(buf, header, IpProtocol::Icmp, icmp.buffer_len())?;
    icmp.emit(&mut Icmpv4Packet::new_unchecked(l4));
    Ok(frame_len)
}

/// Writes an Ethernet/ARP frame at the start of `buf`; returns its length (42, or 46 tagged; a NIC pads
/// it to the 60-byte minimum).
pub fn build_arp_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    vlan: Option<VlanTag>,
    arp: &ArpRepr,
) -> Result<usize, BuildError> {
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, vlan, ethertype: EtherType::Arp };
    let frame_len = eth.buffer_len(arp.buffer_len());
    let frame = buf.get_mut(..frame_len).ok_or(BuildError::BufferTooSmall)?;
    let (eth_bytes, arp_bytes) = frame.split_at_mut(eth.header_len());
    eth.emit(&mut EthernetFrame::new_unchecked(eth_bytes));
    arp.emit(&mut ArpPacket::new_unchecked(arp_bytes));
    Ok(frame_len)
}

/// Fields to rewrite in a TCP/IPv4 packet (NAT toward a backend, sequence offsets of a takeover).
/// `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpRewrite {
    pub src_addr: Option<Ipv4Address>,
    pub dst_addr: Option<Ipv4Address>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub seq: Option<u32>,
    pub ack: Option<u32>,
}

/// Applies `rewrite` to the IPv4 packet (header + TCP segment) at the start of `ip_packet`, patching both
/// checksums incrementally (RFC 1624) instead of recomputing them over the payload.
///
/// Checks only lengths and the protocol: a packet that verified before comes out verifying.
pub fn rewrite_tcp_ipv4(ip_packet: &mut [u8], rewrite: &TcpRewrite) -> Result<(), FrameError> {
    let mut ip = Ipv4Packet::new_checked(&mut *ip_packet)?;
    if ip.protocol() != IpProtocol::Tcp {
        return Err(FrameError::UnsupportedProtocol);
    }
    TcpPacket::new_checked(ip.payload_mut())?;
    let old_src = rewrite.src_addr.map(|addr| (ip.set_src_addr_incremental(addr), addr));
    let old_dst = rewrite.dst_addr.map(|addr| (ip.set_dst_addr_incremental(addr), addr));
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    if let Some((old, new)) = old_src {
        tcp.update_checksum_for_addr(old, new);
    }
    if let Some((old, new)) = old_dst {
        tcp.update_checksum_for_addr(old, new);
    }
    if let Some(port) = rewrite.src_port {
        tcp.set_src_port_incremental(port);
    }
    if let Some(port) = rewrite.dst_port {
        tcp.set_dst_port_incremental(port);
    }
    if let Some(seq) = rewrite.seq {
        tcp.set_seq_number_incremental(seq);
    }
    if let Some(ack) = rewrite.ack {
        tcp.set_ack_number_incremental(ack);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::{SackBlocks, TcpFlags, TcpOptions, Timestamps};

    #[test]
    fn a_frame_built_around_its_payload_is_the_frame_built_from_a_copy() {
        let payload: Vec<u8> = (0..1461u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut sack = SackBlocks::default();
        sack.push(100, 200);
        sack.push(300, 400);
        let option_sets = [
            TcpOptions::default(),
            TcpOptions { timestamps: Some(Timestamps { tsval: 1, tsecr: 2 }), ..TcpOptions::default() },
            TcpOptions { timestamps: Some(Timestamps { tsval: 3, tsecr: 4 }), sack, ..TcpOptions::default() },
        ];
        for vlan in [None, Some(VlanTag::new(7))] {
            for options in option_sets {
                for len in [0, 1, 64, 1461] {
                    let mut header = FrameHeader::new(
                        EthernetAddress([2, 0, 0, 0, 0, 1]),
                        EthernetAddress([2, 0, 0, 0, 0, 2]),
                        Ipv4Address([198, 18, 0, 1]),
                        Ipv4Address([198, 18, 0, 2]),
                    );
                    header.vlan = vlan;
                    let repr = TcpRepr {
                        src_port: 1,
                        dst_port: 2,
                        seq: 3,
                        ack: 4,
                        flags: TcpFlags::ACK | TcpFlags::PSH,
                        window: 5,
                        urgent: 0,
                        options,
                        payload: &payload[..len],
                    };
                    let mut copied = [0u8; 2048];
                    let n = build_tcp_frame(&mut copied, &header, &repr).unwrap();
                    let mut in_place = [0xEEu8; 2048];
                    in_place[MAX_TCP_FRAME_HEADER..MAX_TCP_FRAME_HEADER + len]
                        .copy_from_slice(&payload[..len]);
                    let (start, m) = build_tcp_frame_in_place(&mut in_place, &header, &repr, len).unwrap();
                    assert_eq!(
                        &in_place[start..start + m],
                        &copied[..n],
                        "vlan {vlan:?} len {len} {options:?}"
                    );
                }
            }
        }
        // A buffer that ends before the payload does is refused, not overrun.
        let header = FrameHeader::new(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            Ipv4Address([198, 18, 0, 1]),
            Ipv4Address([198, 18, 0, 2]),
        );
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags::ACK,
            window: 5,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        let mut short = [0u8; MAX_TCP_FRAME_HEADER + 10];
        assert_eq!(build_tcp_frame_in_place(&mut short, &header, &repr, 11), Err(BuildError::BufferTooSmall));
    }
}
