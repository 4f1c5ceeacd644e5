//! ICMPv4 echo request and reply (RFC 792): the proxy answers pings to its VIP, and nothing else of ICMP.
//!
//! ```text
//!  0      1      2             4             6             8
//! +------+------+-------------+-------------+-------------+------
//! | type | code |  checksum   | identifier  |  sequence   | data
//! +------+------+-------------+-------------+-------------+------
//! ```
//! The checksum covers the whole message (no pseudo-header).

use core::fmt;

use super::checksum;
use super::error::FrameError;
use super::field::{read_u16, write_u16};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// ICMP type of an echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// ICMP type of an echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;

/// A read/write view of an ICMPv4 echo message.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Length of the echo header.
    pub const HEADER_LEN: usize = 8;

    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, FrameError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<(), FrameError> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(FrameError::IcmpTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SEQ)
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xFFFF
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// The echo data after the 8-byte header.
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[Icmpv4Packet::<&T>::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SEQ, value);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }

    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(checksum::finish(sum));
    }
}

/// A validated ICMPv4 echo message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest { ident: u16, seq_no: u16, data: &'a [u8] },
    EchoReply { ident: u16, seq_no: u16, data: &'a [u8] },
}

impl<'a> Icmpv4Repr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv4Packet<&'a T>,
        verify_checksum: bool,
    ) -> Result<Icmpv4Repr<'a>, FrameError> {
        packet.check_len()?;
        if verify_checksum && !packet.verify_checksum() {
            return Err(FrameError::IcmpBadChecksum);
        }
        let (ident, seq_no, data) = (packet.echo_ident(), packet.echo_seq_no(), packet.data());
        match (packet.msg_type(), packet.msg_code()) {
            (TYPE_ECHO_REQUEST, 0) => Ok(Icmpv4Repr::EchoRequest { ident, seq_no, data }),
            (TYPE_ECHO_REPLY, 0) => Ok(Icmpv4Repr::EchoReply { ident, seq_no, data }),
            _ => Err(FrameError::IcmpUnsupported),
        }
    }

    /// The reply to an echo request (`None` for anything else).
    pub fn reply(&self) -> Option<Icmpv4Repr<'a>> {
        match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => {
                Some(Icmpv4Repr::EchoReply { ident, seq_no, data })
            }
            Icmpv4Repr::EchoReply { .. } => None,
        }
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => 8 + data.len(),
        }
    }

    /// Writes the message and its checksum.
    ///
    /// # Panics
    /// When the buffer is shorter than `buffer_len()`. The checksum covers the whole buffer, so callers
    /// pass exactly `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (msg_type, ident, seq_no, data) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => (TYPE_ECHO_REQUEST, ident, seq_no, data),
            Icmpv4Repr::EchoReply { ident, seq_no, data } => (TYPE_ECHO_REPLY, ident, seq_no, data),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(0);
        packet.set_echo_ident(ident);
        packet.set_echo_seq_no(seq_no);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

impl fmt::Display for Icmpv4Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => {
                write!(f, "icmp echo request id {ident} seq {seq_no} len {}", data.len())
            }
            Icmpv4Repr::EchoReply { ident, seq_no, data } => {
                write!(f, "icmp echo reply id {ident} seq {seq_no} len {}", data.len())
            }
        }
    }
}
