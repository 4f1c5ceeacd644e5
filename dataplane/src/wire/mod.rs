//! Wire formats: zero-copy views over byte buffers and validated representations that can be emitted.
//!
//! Contract (as in smoltcp): once a view's `check_len()` has returned `Ok`, no accessor panics, whatever the
//! bytes say. Every malformed input is an error value that callers count, never a panic.

pub mod arp;
pub mod checksum;
pub mod error;
pub mod ethernet;
mod field;
pub mod frame;
pub mod icmp;
pub mod ipv4;
pub mod tcp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use error::{BuildError, FrameError};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr, VlanTag};
pub use frame::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame, parse_frame_with, rewrite_tcp_ipv4,
    ChecksumMode, Frame, FrameHeader, FramePayload, Ipv4Payload, TcpRewrite,
};
pub use frame::{build_tcp_frame_in_place, MAX_TCP_FRAME_HEADER};
pub use icmp::{Icmpv4Packet, Icmpv4Repr};
pub use ipv4::{IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr};
pub use tcp::{OptionsIter, TcpOption, TcpPacket};
pub use tcp::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};
