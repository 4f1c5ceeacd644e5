//! TCP header with options (RFC 9293, RFC 7323, RFC 2018).
//!
//! The type definitions in this file (`TcpFlags`, `SackBlocks`, `Timestamps`, `TcpOptions`, `TcpRepr`) are
//! the contract between the wire layer and the TCP engine: the engine consumes and produces `TcpRepr`.

/// TCP header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);
    pub const NONE: TcpFlags = TcpFlags(0);

    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    pub const fn without(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & !other.0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        *self = self.union(rhs);
    }
}

/// Up to four SACK blocks (left edge, right edge), in the order they appear on the wire.
/// Four is the most a 40-byte option space can hold (three when timestamps are present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [(u32, u32); 4],
    len: u8,
}

impl SackBlocks {
    pub const CAPACITY: usize = 4;

    /// Appends a block; returns `false` (and keeps the existing ones) when full.
    pub fn push(&mut self, left: u32, right: u32) -> bool {
        match self.blocks.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = (left, right);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..(self.len as usize).min(Self::CAPACITY)]
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps at most `n` blocks (the first ones).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n.min(Self::CAPACITY) as u8);
    }
}

/// The TCP timestamps option (RFC 7323).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// The TCP options holdfast understands. Unknown options are skipped when parsing and never emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: SackBlocks,
    pub timestamps: Option<Timestamps>,
}

/// A validated TCP segment: header fields, options and the payload it carries.
/// Ports are carried for the proxy; the engine ignores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The raw (unscaled) window field.
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
}

impl TcpRepr<'_> {
    /// Sequence space the segment occupies: payload plus one for each of SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags.contains(TcpFlags::SYN))
            + usize::from(self.flags.contains(TcpFlags::FIN))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Everything below implements the wire format around the contract types above.
//
//  0               2               4                               8
// +---------------+---------------+-------------------------------+
// |  source port  |  dest. port   |        sequence number        |
// +---------------+---------------+-------------------------------+
// |     acknowledgment number     |offset |rsv| flags |  window   |
// +-------------------------------+-------+---+-------+-----------+
// |   checksum    | urgent pointer|  options (offset > 5) | payload
// +---------------+---------------+-----------------------+--------
// ---------------------------------------------------------------------------------------------------------

use core::fmt;

use super::checksum;
use super::error::FrameError;
use super::field::{read_u16, read_u32, write_u16, write_u32};
use super::ipv4::{IpProtocol, Ipv4Address};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// The largest shift RFC 7323 allows; larger advertised values are used as 14.
pub const MAX_WINDOW_SCALE: u8 = 14;
/// Room for options in a TCP header (data offset 15 minus the fixed 20 bytes).
pub const MAX_OPTIONS_LEN: usize = 40;

/// A read/write view of a TCP segment (header, options and payload).
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const HEADER_LEN: usize = 20;

    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, FrameError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the fixed header and the options the data offset announces are all there. After `Ok`,
    /// no accessor panics.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(FrameError::TcpTruncated);
        }
        let header_len = self.header_len();
        if header_len < Self::HEADER_LEN {
            return Err(FrameError::TcpBadDataOffset);
        }
        if len < header_len {
            return Err(FrameError::TcpTruncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFFSET] >> 4) * 4
    }

    /// The eight flag bits of byte 13 (the experimental NS bit of byte 12 is ignored).
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The raw option bytes (empty when the data offset is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..self.header_len()]
    }

    /// An iterator over the options, for callers that want every option (unknown ones included).
    pub fn options_iter(&self) -> OptionsIter<'_> {
        OptionsIter::new(self.options())
    }

    /// Whether the checksum verifies over the IPv4 pseudo-header and the whole buffer, which must be
    /// exactly the IP payload.
    pub fn verify_checksum(&self, src_addr: Ipv4Address, dst_addr: Ipv4Address) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header_ipv4(src_addr, dst_addr, IpProtocol::Tcp.into(), len);
        checksum::combine(&[pseudo, checksum::data(data)]) == 0xFFFF
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        let header_len = self.header_len();
        &self.buffer.as_ref()[header_len..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ, seq);
    }

    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), field::ACK, ack);
    }

    /// Writes the data offset for a header of `header_len` bytes (a multiple of 4, at most 60) and clears
    /// the reserved bits.
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::OFFSET] = (((header_len / 4) as u8) & 0x0F) << 4;
    }

    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.bits();
    }

    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, window);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    pub fn set_urgent_at(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, urgent);
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[Self::HEADER_LEN..header_len]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }

    /// Computes and writes the checksum over the pseudo-header and the whole buffer (the IP payload).
    pub fn fill_checksum(&mut self, src_addr: Ipv4Address, dst_addr: Ipv4Address) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        let pseudo = checksum::pseudo_header_ipv4(src_addr, dst_addr, IpProtocol::Tcp.into(), len);
        let sum = checksum::combine(&[pseudo, checksum::data(data)]);
        self.set_checksum(checksum::finish(sum));
    }

    /// Rewrites the source port and patches the checksum (RFC 1624).
    pub fn set_src_port_incremental(&mut self, port: u16) {
        self.set_checksum(checksum::update16(self.checksum(), self.src_port(), port));
        self.set_src_port(port);
    }

    /// Rewrites the destination port and patches the checksum (RFC 1624).
    pub fn set_dst_port_incremental(&mut self, port: u16) {
        self.set_checksum(checksum::update16(self.checksum(), self.dst_port(), port));
        self.set_dst_port(port);
    }

    /// Rewrites the sequence number and patches the checksum (RFC 1624).
    pub fn set_seq_number_incremental(&mut self, seq: u32) {
        self.set_checksum(checksum::update32(self.checksum(), self.seq_number(), seq));
        self.set_seq_number(seq);
    }

    /// Rewrites the acknowledgment number and patches the checksum (RFC 1624).
    pub fn set_ack_number_incremental(&mut self, ack: u32) {
        self.set_checksum(checksum::update32(self.checksum(), self.ack_number(), ack));
        self.set_ack_number(ack);
    }

    /// Rewrites the window and patches the checksum (RFC 1624).
    pub fn set_window_len_incremental(&mut self, window: u16) {
        self.set_checksum(checksum::update16(self.checksum(), self.window_len(), window));
        self.set_window_len(window);
    }

    /// Patches the checksum after an address of the pseudo-header changed from `old` to `new` (the IP
    /// header was rewritten, e.g. by [`super::ipv4::Ipv4Packet::set_dst_addr_incremental`]).
    pub fn update_checksum_for_addr(&mut self, old: Ipv4Address, new: Ipv4Address) {
        self.set_checksum(checksum::update32(self.checksum(), old.to_u32(), new.to_u32()));
    }
}

/// One TCP option, as found on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOperation,
    MaxSegmentSize(u16),
    /// The shift as sent (not yet capped at [`MAX_WINDOW_SCALE`]).
    WindowScale(u8),
    SackPermitted,
    Sack(SackBlocks),
    Timestamps(Timestamps),
    /// An option holdfast does not use, or a known kind with a length it should not have (Linux ignores
    /// those too, rather than dropping the segment).
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterates over raw option bytes. Stops after [`TcpOption::EndOfList`] (what follows is padding) and after
/// the first error.
#[derive(Clone, Debug)]
pub struct OptionsIter<'a> {
    rest: &'a [u8],
}

impl<'a> OptionsIter<'a> {
    pub const fn new(options: &'a [u8]) -> OptionsIter<'a> {
        OptionsIter { rest: options }
    }
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = Result<TcpOption<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, after_kind) = self.rest.split_first()?;
        match kind {
            option_kind::END => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            option_kind::NOP => {
                self.rest = after_kind;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let len = match after_kind.first() {
            Some(&len) if len >= 2 => usize::from(len),
            // A length of 0 or 1 could never advance; a missing one is cut off.
            _ => {
                self.rest = &[];
                return Some(Err(FrameError::TcpBadOption));
            }
        };
        let (Some(body), Some(rest)) = (self.rest.get(2..len), self.rest.get(len..)) else {
            self.rest = &[];
            return Some(Err(FrameError::TcpBadOption));
        };
        self.rest = rest;
        let option = match (kind, body) {
            (option_kind::MSS, &[hi, lo]) => TcpOption::MaxSegmentSize(u16::from_be_bytes([hi, lo])),
            (option_kind::WINDOW_SCALE, &[shift]) => TcpOption::WindowScale(shift),
            (option_kind::SACK_PERMITTED, &[]) => TcpOption::SackPermitted,
            (option_kind::SACK, blocks) if !blocks.is_empty() && blocks.len() % 8 == 0 => {
                let mut sack = SackBlocks::default();
                for block in blocks.chunks_exact(8) {
                    if let (Some(left), Some(right)) = (block.get(..4), block.get(4..8)) {
                        sack.push(be32(left), be32(right));
                    }
                }
                TcpOption::Sack(sack)
            }
            (option_kind::TIMESTAMPS, body) if body.len() == 8 => {
                let (tsval, tsecr) = body.split_at(4);
                TcpOption::Timestamps(Timestamps { tsval: be32(tsval), tsecr: be32(tsecr) })
            }
            (kind, data) => TcpOption::Unknown { kind, data },
        };
        Some(Ok(option))
    }
}

/// Reads a big-endian u32 from a slice the caller knows holds at least four bytes (zero-extended if not).
fn be32(bytes: &[u8]) -> u32 {
    bytes.iter().take(4).fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

impl TcpOptions {
    /// Parses raw option bytes. Unknown options are skipped by their length; a window scale above 14 is
    /// taken as 14 (RFC 7323 §2.3); SACK blocks beyond four are dropped.
    pub fn parse(options: &[u8]) -> Result<TcpOptions, FrameError> {
        let mut parsed = TcpOptions::default();
        for option in OptionsIter::new(options) {
            match option? {
                TcpOption::EndOfList => break,
                TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => parsed.mss = Some(mss),
                TcpOption::WindowScale(shift) => parsed.window_scale = Some(shift.min(MAX_WINDOW_SCALE)),
                TcpOption::SackPermitted => parsed.sack_permitted = true,
                TcpOption::Sack(blocks) => {
                    for &(left, right) in blocks.as_slice() {
                        parsed.sack.push(left, right);
                    }
                }
                TcpOption::Timestamps(ts) => parsed.timestamps = Some(ts),
            }
        }
        Ok(parsed)
    }

    /// Bytes taken by everything but SACK blocks, in the layout [`emit`](Self::emit) writes.
    const fn fixed_len(&self) -> usize {
        let mut len = 0;
        if self.mss.is_some() {
            len += 4;
        }
        if self.timestamps.is_some() {
            // SACK-permitted rides in the two bytes that are otherwise NOPs before the timestamps.
            len += 12;
        } else if self.sack_permitted {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        len
    }

    /// How many of the SACK blocks fit in the 40 bytes next to the other options.
    pub fn sack_blocks_that_fit(&self) -> usize {
        let room = MAX_OPTIONS_LEN.saturating_sub(self.fixed_len());
        let fit = room.saturating_sub(4) / 8;
        self.sack.len().min(fit)
    }

    /// Length of the emitted options: a multiple of 4, at most 40.
    pub fn emit_len(&self) -> usize {
        let blocks = self.sack_blocks_that_fit();
        self.fixed_len() + if blocks > 0 { 4 + 8 * blocks } else { 0 }
    }

    /// Writes the options in Linux's layout (`tcp_options_write`), so a header Linux built comes back
    /// byte for byte: MSS; SACK-permitted + timestamps (or NOP NOP + timestamps); NOP NOP SACK-permitted
    /// without timestamps; NOP + window scale; NOP NOP + SACK blocks that fit. Every item is 4-byte
    /// aligned, so no trailing padding is needed. Returns the number of bytes written (`emit_len()`).
    ///
    /// # Panics
    /// When `buf` is shorter than `emit_len()` (a bug of the caller, who sizes it).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let [hi, lo] = mss.to_be_bytes();
            put(&[option_kind::MSS, 4, hi, lo]);
        }
        if let Some(ts) = self.timestamps {
            if self.sack_permitted {
                put(&[option_kind::SACK_PERMITTED, 2, option_kind::TIMESTAMPS, 10]);
            } else {
                put(&[option_kind::NOP, option_kind::NOP, option_kind::TIMESTAMPS, 10]);
            }
            put(&ts.tsval.to_be_bytes());
            put(&ts.tsecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[option_kind::NOP, option_kind::NOP, option_kind::SACK_PERMITTED, 2]);
        }
        if let Some(shift) = self.window_scale {
            put(&[option_kind::NOP, option_kind::WINDOW_SCALE, 3, shift.min(MAX_WINDOW_SCALE)]);
        }
        let blocks = self.sack_blocks_that_fit();
        if blocks > 0 {
            put(&[option_kind::NOP, option_kind::NOP, option_kind::SACK, (2 + 8 * blocks) as u8]);
            for &(left, right) in self.sack.as_slice().iter().take(blocks) {
                put(&left.to_be_bytes());
                put(&right.to_be_bytes());
            }
        }
        at
    }
}

impl<'a> TcpRepr<'a> {
    /// Validates a segment carried in IPv4 from `src_addr` to `dst_addr`. The packet's buffer must be
    /// exactly the IP payload. `verify_checksum` is false when the NIC has verified it already.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, FrameError> {
        packet.check_len()?;
        if verify_checksum && !packet.verify_checksum(src_addr, dst_addr) {
            return Err(FrameError::TcpBadChecksum);
        }
        let options = TcpOptions::parse(packet.options())?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window_len(),
            urgent: packet.urgent_at(),
            options,
            payload: packet.payload(),
        })
    }

    /// Header length of the emitted segment: 20 plus the options that fit.
    pub fn header_len(&self) -> usize {
        TcpPacket::<&[u8]>::HEADER_LEN + self.options.emit_len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment and its checksum. The packet's buffer must be exactly `buffer_len()` bytes
    /// (the checksum covers all of it).
    ///
    /// # Panics
    /// When the buffer is shorter than `buffer_len()` (a bug of the caller, who sizes it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TcpPacket<T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq);
        packet.set_ack_number(self.ack);
        packet.set_header_len(self.header_len());
        packet.set_flags(self.flags);
        packet.set_window_len(self.window);
        packet.set_urgent_at(self.urgent);
        self.options.emit(packet.options_mut());
        packet.payload_mut()[..self.payload.len()].copy_from_slice(self.payload);
        packet.fill_checksum(src_addr, dst_addr);
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, char); 8] = [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'W'),
        ];
        for (flag, name) in NAMES {
            if self.contains(flag) {
                write!(f, "{name}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for TcpRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp {} > {} [{}] seq {} ack {} win {} len {}",
            self.src_port,
            self.dst_port,
            self.flags,
            self.seq,
            self.ack,
            self.window,
            self.payload.len()
        )
    }
}
