//! IPv4 headers (RFC 791): addresses, the header view with checksum and incremental rewrites, and a repr.
//!
//! ```text
//!  0       4       8              16      19             31
//! +-------+-------+--------------+-------------------------+
//! |version|  IHL  |   DSCP/ECN   |      total length       |
//! +-------+-------+--------------+------+------------------+
//! |        identification        |flags | fragment offset  |
//! +---------------+--------------+------+------------------+
//! |      TTL      |   protocol   |     header checksum     |
//! +---------------+--------------+-------------------------+
//! |                    source address                      |
//! |                  destination address                   |
//! |                 options (IHL > 5), skipped             |
//! +--------------------------------------------------------+
//! ```
//! Options are skipped (IHL is honoured) and never emitted. Fragments are recognised and refused: holdfast
//! does not reassemble, and a TCP peer that respects the MSS it was given never fragments.
//! Bytes past the total length (Ethernet's minimum-size padding) are tolerated and ignored.

use core::fmt;

use super::checksum;
use super::error::FrameError;
use super::field::{read_u16, read_u32, write_u16, write_u32};

/// An IPv4 address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Address(pub [u8; 4]);

impl Ipv4Address {
    pub const UNSPECIFIED: Ipv4Address = Ipv4Address([0; 4]);
    pub const BROADCAST: Ipv4Address = Ipv4Address([255; 4]);

    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Ipv4Address {
        Ipv4Address([a, b, c, d])
    }

    /// Reads an address from the first four bytes of `bytes`, or `None` when there are fewer.
    pub fn from_bytes(bytes: &[u8]) -> Option<Ipv4Address> {
        match bytes {
            [a, b, c, d, ..] => Some(Ipv4Address([*a, *b, *c, *d])),
            _ => None,
        }
    }

    pub const fn octets(&self) -> [u8; 4] {
        self.0
    }

    pub const fn from_u32(value: u32) -> Ipv4Address {
        Ipv4Address(value.to_be_bytes())
    }

    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub const fn is_unspecified(&self) -> bool {
        self.to_u32() == 0
    }

    pub const fn is_broadcast(&self) -> bool {
        self.to_u32() == u32::MAX
    }

    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0xF0 == 0xE0
    }

    pub const fn is_loopback(&self) -> bool {
        self.0[0] == 127
    }

    /// Addresses a TCP segment may legitimately come from or go to (not 0/8, broadcast, multicast).
    pub const fn is_unicast(&self) -> bool {
        self.0[0] != 0 && !self.is_broadcast() && !self.is_multicast()
    }
}

impl fmt::Display for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

impl From<[u8; 4]> for Ipv4Address {
    fn from(bytes: [u8; 4]) -> Self {
        Ipv4Address(bytes)
    }
}

impl From<std::net::Ipv4Addr> for Ipv4Address {
    fn from(addr: std::net::Ipv4Addr) -> Self {
        Ipv4Address(addr.octets())
    }
}

impl From<Ipv4Address> for std::net::Ipv4Addr {
    fn from(addr: Ipv4Address) -> Self {
        std::net::Ipv4Addr::from(addr.0)
    }
}

/// IP protocol numbers holdfast distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const HEADER_LEN: usize = 20;

    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, FrameError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and that header length ≤ total length ≤ buffer length. After `Ok`, no accessor
    /// panics.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let buf = self.buffer.as_ref();
        // The version decides how the rest is read, so a non-IPv4 packet is reported as such even when short.
        match buf.first() {
            None => return Err(FrameError::Ipv4Truncated),
            Some(b) if b >> 4 != 4 => return Err(FrameError::Ipv4BadVersion),
            Some(_) => {}
        }
        if buf.len() < Self::HEADER_LEN {
            return Err(FrameError::Ipv4Truncated);
        }
        let header_len = self.header_len();
        if header_len < Self::HEADER_LEN {
            return Err(FrameError::Ipv4BadIhl);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(FrameError::Ipv4BadTotalLength);
        }
        if buf.len() < total_len {
            return Err(FrameError::Ipv4Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// A fragment of a larger datagram: more fragments follow, or this is not the first.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Address {
        Ipv4Address::from_u32(read_u32(self.buffer.as_ref(), field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Address {
        Ipv4Address::from_u32(read_u32(self.buffer.as_ref(), field::DST))
    }

    /// The options bytes (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..self.header_len()]
    }

    /// Whether the header checksum verifies (the header, options included, sums to 0xFFFF).
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xFFFF
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The bytes between the header and the total length (trailing link padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0F);
    }

    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Writes the flags and offset word: DF as given, MF clear, offset zero (holdfast never fragments).
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, if dont_frag { FLAG_DF } else { 0 });
    }

    /// Writes the raw flags-and-offset word (for tests that craft fragments).
    pub fn set_flags_and_offset(&mut self, raw: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, raw);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Address) {
        write_u32(self.buffer.as_mut(), field::SRC, addr.to_u32());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Address) {
        write_u32(self.buffer.as_mut(), field::DST, addr.to_u32());
    }

    /// Computes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::data(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum::finish(sum));
    }

    /// Rewrites the source address and patches the header checksum (RFC 1624); returns the old address,
    /// which the transport checksum (pseudo-header) needs to be patched too.
    pub fn set_src_addr_incremental(&mut self, addr: Ipv4Address) -> Ipv4Address {
        let old = self.src_addr();
        self.set_checksum(checksum::update32(self.checksum(), old.to_u32(), addr.to_u32()));
        self.set_src_addr(addr);
        old
    }

    /// As [`set_src_addr_incremental`](Self::set_src_addr_incremental), for the destination.
    pub fn set_dst_addr_incremental(&mut self, addr: Ipv4Address) -> Ipv4Address {
        let old = self.dst_addr();
        self.set_checksum(checksum::update32(self.checksum(), old.to_u32(), addr.to_u32()));
        self.set_dst_addr(addr);
        old
    }

    /// Rewrites the TTL and patches the header checksum.
    pub fn set_ttl_incremental(&mut self, ttl: u8) {
        let word = read_u16(self.buffer.as_ref(), field::TTL);
        let new_word = (u16::from(ttl) << 8) | (word & 0x00FF);
        self.set_checksum(checksum::update16(self.checksum(), word, new_word));
        self.set_ttl(ttl);
    }

    /// The payload between the header and the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// A validated IPv4 header (options dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Address,
    pub dst_addr: Ipv4Address,
    pub protocol: IpProtocol,
    /// Payload length (total length minus header length).
    pub payload_len: usize,
    pub ttl: u8,
    /// DSCP and ECN bits.
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Validates lengths, the checksum (when `verify_checksum`; skip it when the NIC already did) and
    /// refuses fragments.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Ipv4Packet<&T>,
        verify_checksum: bool,
    ) -> Result<Ipv4Repr, FrameError> {
        packet.check_len()?;
        if verify_checksum && !packet.verify_checksum() {
            return Err(FrameError::Ipv4BadChecksum);
        }
        if packet.is_fragment() {
            return Err(FrameError::Ipv4Fragment);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Emitted header length: always 20 (no options).
    pub const fn header_len(&self) -> usize {
        20
    }

    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header (checksum included) into the packet's first 20 bytes. `payload_len` must make a
    /// total length that fits 16 bits ([`crate::wire::build_tcp_frame`] checks this); larger values are
    /// truncated.
    ///
    /// # Panics
    /// When the buffer is shorter than 20 bytes (a bug of the caller, who sizes it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_version_and_header_len(self.header_len());
        packet.set_tos(self.tos);
        packet.set_total_len(self.buffer_len().min(usize::from(u16::MAX)) as u16);
        packet.set_ident(self.ident);
        packet.set_unfragmented(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

impl fmt::Display for Ipv4Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ipv4 {} > {} proto {} len {} ttl {}",
            self.src_addr,
            self.dst_addr,
            u8::from(self.protocol),
            self.payload_len,
            self.ttl
        )
    }
}
