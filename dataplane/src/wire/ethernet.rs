//! Ethernet II frames (IEEE 802.3 with an EtherType), with at most one 802.1Q VLAN tag.
//!
//! ```text
//!  0                   6                  12      14 (untagged payload)
//! +-------------------+-------------------+-------+-----
//! | destination MAC   | source MAC        | type  | payload
//! +-------------------+-------------------+-------+-----
//!                                         | 8100  | TCI | type | payload  (tagged: payload at 18)
//! ```
//! The frame check sequence is never seen: NICs and the kernel strip it.

use core::fmt;

use super::error::FrameError;
use super::field::{read_u16, write_u16};

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xFF; 6]);
    pub const UNSPECIFIED: EthernetAddress = EthernetAddress([0; 6]);

    /// Reads an address from the first six bytes of `bytes`, or `None` when there are fewer.
    pub fn from_bytes(bytes: &[u8]) -> Option<EthernetAddress> {
        let six = bytes.get(..6)?;
        let mut addr = [0u8; 6];
        addr.copy_from_slice(six);
        Some(EthernetAddress(addr))
    }

    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    pub const fn is_broadcast(&self) -> bool {
        matches!(self.0, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    }

    /// Group addresses (the I/G bit set), broadcast included.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered addresses (the U/L bit set), as used for a shared virtual MAC.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(bytes: [u8; 6]) -> Self {
        EthernetAddress(bytes)
    }
}

/// The EtherTypes holdfast knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// An IEEE 802.1Q tag follows.
    Vlan,
    /// IEEE 802 "local experimental" 0x88B5: holdfast's replication channel between primary and standby.
    Replication,
    Unknown(u16),
}

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const REPLICATION: u16 = 0x88B5;
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            EtherType::IPV4 => EtherType::Ipv4,
            EtherType::ARP => EtherType::Arp,
            EtherType::VLAN => EtherType::Vlan,
            EtherType::REPLICATION => EtherType::Replication,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => EtherType::IPV4,
            EtherType::Arp => EtherType::ARP,
            EtherType::Vlan => EtherType::VLAN,
            EtherType::Replication => EtherType::REPLICATION,
            EtherType::Unknown(other) => other,
        }
    }
}

/// The tag control information of an 802.1Q tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095.
    pub vid: u16,
}

impl VlanTag {
    /// A tag with priority 0 on VLAN `vid` (masked to 12 bits).
    pub const fn new(vid: u16) -> VlanTag {
        VlanTag { pcp: 0, dei: false, vid: vid & 0x0FFF }
    }

    pub const fn from_tci(tci: u16) -> VlanTag {
        VlanTag { pcp: (tci >> 13) as u8, dei: tci & 0x1000 != 0, vid: tci & 0x0FFF }
    }

    /// The 16-bit TCI; out-of-range `pcp`/`vid` bits are masked off.
    pub const fn to_tci(self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0FFF)
    }
}

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of an untagged header.
    pub const HEADER_LEN: usize = 14;
    /// Length of a header with one 802.1Q tag.
    pub const TAGGED_HEADER_LEN: usize = 18;

    /// Wraps a buffer without checking it; call [`check_len`](Self::check_len) before any accessor.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer, checking that its header (and VLAN tag, if any) is all there.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, FrameError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(FrameError::EthernetTruncated);
        }
        if self.outer_ethertype() == EtherType::VLAN && len < Self::TAGGED_HEADER_LEN {
            return Err(FrameError::EthernetTruncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    pub fn src_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// The EtherType at offset 12 (0x8100 on a tagged frame).
    pub fn outer_ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// The 802.1Q tag, when the frame carries one.
    pub fn vlan_tag(&self) -> Option<VlanTag> {
        if self.outer_ethertype() == EtherType::VLAN {
            Some(VlanTag::from_tci(read_u16(self.buffer.as_ref(), field::TCI)))
        } else {
            None
        }
    }

    /// The EtherType of the payload (after the VLAN tag, if any). A second tag reads as
    /// [`EtherType::Vlan`]: stacked tags are not recognised.
    pub fn ethertype(&self) -> EtherType {
        let outer = self.outer_ethertype();
        if outer == EtherType::VLAN {
            EtherType::from(read_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE))
        } else {
            EtherType::from(outer)
        }
    }

    /// 14, or 18 on a tagged frame.
    pub fn header_len(&self) -> usize {
        if self.outer_ethertype() == EtherType::VLAN {
            Self::TAGGED_HEADER_LEN
        } else {
            Self::HEADER_LEN
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header, trailing padding included.
    pub fn payload(&self) -> &'a [u8] {
        let hl = self.header_len();
        &self.buffer.as_ref()[hl..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DST..field::DST + 6].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&addr.0);
    }

    /// Writes the header's type fields: `ethertype` at 12 when untagged, or 0x8100, the TCI and
    /// `ethertype` when tagged.
    pub fn set_type(&mut self, vlan: Option<VlanTag>, ethertype: EtherType) {
        let buf = self.buffer.as_mut();
        match vlan {
            None => write_u16(buf, field::ETHERTYPE, ethertype.into()),
            Some(tag) => {
                write_u16(buf, field::ETHERTYPE, EtherType::VLAN);
                write_u16(buf, field::TCI, tag.to_tci());
                write_u16(buf, field::INNER_ETHERTYPE, ethertype.into());
            }
        }
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// A parsed Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    pub vlan: Option<VlanTag>,
    /// The payload's EtherType (never [`EtherType::Vlan`] for a frame holdfast accepts).
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<EthernetRepr, FrameError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            vlan: frame.vlan_tag(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header length: 14, or 18 with a VLAN tag.
    pub const fn header_len(&self) -> usize {
        match self.vlan {
            None => 14,
            Some(_) => 18,
        }
    }

    /// Header length plus `payload_len`.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        self.header_len() + payload_len
    }

    /// Writes the header into the first [`header_len`](Self::header_len) bytes of the frame's buffer.
    ///
    /// # Panics
    /// When the buffer is shorter than `header_len()` (a bug of the caller, who sizes it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_type(self.vlan, self.ethertype);
    }
}

impl fmt::Display for EthernetRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eth {} > {}", self.src_addr, self.dst_addr)?;
        if let Some(tag) = self.vlan {
            write!(f, " vlan {}", tag.vid)?;
        }
        write!(f, " type {:#06x}", u16::from(self.ethertype))
    }
}
