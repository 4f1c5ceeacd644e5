//! ARP (RFC 826) for Ethernet and IPv4, the only combination holdfast resolves: requests for the VIP and the
//! SNAT address are answered, and gratuitous ARP announces them on takeover.
//!
//! ```text
//!  0      2      4    5    6      8            14       18           24       28
//! +------+------+----+----+------+------------+--------+------------+--------+
//! | htype| ptype|hlen|plen| oper | sender MAC | sender | target MAC | target |
//! |  1   | 0800 | 6  | 4  | 1/2  |            |  IPv4  |            |  IPv4  |
//! +------+------+----+----+------+------------+--------+------------+--------+
//! ```

use core::fmt;

use super::error::FrameError;
use super::ethernet::{EtherType, EthernetAddress};
use super::field::{read_u16, write_u16};
use super::ipv4::Ipv4Address;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Hardware type "Ethernet" in the ARP htype field.
pub const HARDWARE_ETHERNET: u16 = 1;

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = 28;

    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, FrameError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// After `Ok`, no accessor panics. Only the Ethernet/IPv4 layout is checked for; other address sizes
    /// are rejected by [`ArpRepr::parse`].
    pub fn check_len(&self) -> Result<(), FrameError> {
        if self.buffer.as_ref().len() < Self::LEN {
            Err(FrameError::ArpTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    fn mac_at(&self, at: usize) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
    }

    fn ip_at(&self, at: usize) -> Ipv4Address {
        let b = self.buffer.as_ref();
        Ipv4Address([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    pub fn source_hardware_addr(&self) -> EthernetAddress {
        self.mac_at(field::SHA)
    }

    pub fn source_protocol_addr(&self) -> Ipv4Address {
        self.ip_at(field::SPA)
    }

    pub fn target_hardware_addr(&self) -> EthernetAddress {
        self.mac_at(field::THA)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Address {
        self.ip_at(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes htype, ptype, hlen and plen for Ethernet/IPv4.
    pub fn set_ethernet_ipv4(&mut self) {
        let buf = self.buffer.as_mut();
        write_u16(buf, field::HTYPE, HARDWARE_ETHERNET);
        write_u16(buf, field::PTYPE, EtherType::IPV4);
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
    }

    pub fn set_operation(&mut self, operation: u16) {
        write_u16(self.buffer.as_mut(), field::OPER, operation);
    }

    pub fn set_source_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&addr.0);
    }

    pub fn set_source_protocol_addr(&mut self, addr: Ipv4Address) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&addr.0);
    }

    pub fn set_target_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&addr.0);
    }

    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Address) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&addr.0);
    }
}

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    Request,
    Reply,
}

impl ArpOperation {
    pub const fn to_u16(self) -> u16 {
        match self {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
        }
    }
}

/// A validated Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Address,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Address,
}

impl ArpRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr, FrameError> {
        packet.check_len()?;
        if packet.hardware_type() != HARDWARE_ETHERNET
            || packet.protocol_type() != EtherType::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(FrameError::ArpUnsupported);
        }
        let operation = match packet.operation() {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            _ => return Err(FrameError::ArpBadOperation),
        };
        Ok(ArpRepr {
            operation,
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// The reply this request asks for, when `our_ip` is the address asked about and `our_mac` owns it.
    pub fn reply_to(&self, our_mac: EthernetAddress, our_ip: Ipv4Address) -> Option<ArpRepr> {
        if self.operation != ArpOperation::Request || self.target_protocol_addr != our_ip {
            return None;
        }
        Some(ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: our_mac,
            source_protocol_addr: our_ip,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        })
    }

    /// A gratuitous ARP announcing that `ip` now lives at `mac` (sent as a request, which every Linux
    /// neighbour table accepts as an update).
    pub const fn gratuitous(mac: EthernetAddress, ip: Ipv4Address) -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: ip,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        28
    }

    /// # Panics
    /// When the buffer is shorter than `buffer_len()` (a bug of the caller, who sizes it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation.to_u16());
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

impl fmt::Display for ArpRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operation {
            ArpOperation::Request => {
                write!(f, "arp who-has {} tell {}", self.target_protocol_addr, self.source_protocol_addr)
            }
            ArpOperation::Reply => {
                write!(f, "arp reply {} is-at {}", self.source_protocol_addr, self.source_hardware_addr)
            }
        }
    }
}
