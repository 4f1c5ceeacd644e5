//! The replication frame: an Ethernet frame with the local experimental EtherType 0x88B5, a fixed
//! versioned header, then a batch of delta records (see [`crate::delta`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+---------------+---------------+
//! |        magic 0x4846 "HF"      |    version    |     kind      |
//! +---------------+---------------+-------------------------------+
//! |     flags     |   reserved    |            queue id           |
//! +---------------+---------------+-------------------------------+
//! |                         sender box id                         |
//! +---------------------------------------------------------------+
//! |                             epoch                             |
//! +---------------------------------------------------------------+
//! |               channel sequence number (64 bits)               |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |            cumulative acknowledgment (64 bits)                |
//! |                                                               |
//! +-------------------------------+-------------------------------+
//! |        payload length         |             reserved          |
//! +-------------------------------+-------------------------------+
//! |                       checksum (CRC32C)                       |
//! +---------------------------------------------------------------+
//! ```
//!
//! The checksum is CRC32C (Castagnoli) over the header (checksum field as zero) and the payload. Why
//! CRC32C and not a 32-bit FNV or Adler: the link already has an Ethernet FCS, so this check is there for
//! what the FCS does not see (bugs and memory corruption in NICs, drivers, bridges and our own buffers), and
//! CRC32C detects every burst up to 32 bits and all odd bit counts, where Adler-32 is weak on short
//! messages and FNV has no burst guarantee; it also runs in hardware (SSE4.2 `crc32`, ARMv8 CRC) through the
//! `crc32c` crate, so it costs well under a nanosecond per byte.
//!
//! Sequence numbers are 64 bits so they never wrap in the life of a channel (no modular comparisons).
//! Parsing never panics: every malformed frame is a distinct [`FrameError`].

/// The local experimental EtherType (IEEE 802 "Local Experimental Ethertype 1").
pub const ETHERTYPE: u16 = 0x88B5;
/// "HF".
pub const MAGIC: u16 = 0x4846;
/// The header version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the Ethernet header written in front of every frame.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of the replication header after the Ethernet header.
pub const HEADER_LEN: usize = 40;
/// The smallest MTU a channel accepts: room for a header and a useful batch.
pub const MIN_MTU: usize = 256;
/// The largest MTU (jumbo frames).
pub const MAX_MTU: usize = 9216;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A sequenced batch of records: delivered once, in order, retransmitted until acknowledged.
    Records,
    /// A standalone cumulative acknowledgment, no payload, not sequenced.
    Ack,
    /// An unsequenced heartbeat (payload: one Heartbeat record); never retransmitted, since a late
    /// heartbeat says nothing.
    Heartbeat,
}

impl FrameKind {
    pub const fn to_u8(self) -> u8 {
        match self {
            FrameKind::Records => 1,
            FrameKind::Ack => 2,
            FrameKind::Heartbeat => 3,
        }
    }

    pub const fn from_u8(v: u8) -> Option<FrameKind> {
        match v {
            1 => Some(FrameKind::Records),
            2 => Some(FrameKind::Ack),
            3 => Some(FrameKind::Heartbeat),
            _ => None,
        }
    }
}

/// Header flags.
pub mod flags {
    /// The `ack` field is meaningful.
    pub const ACK: u8 = 0x01;
    /// All defined flags; any other bit set is an error (a newer sender must bump the version).
    pub const ALL: u8 = ACK;
}

/// The decoded fixed header of a replication frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub flags: u8,
    pub queue: u16,
    pub sender: u32,
    pub epoch: u32,
    /// The frame's channel sequence number (for `Records`); for the other kinds, the sender's next
    /// sequence number, informational only.
    pub seq: u64,
    /// Every `Records` frame with a sequence number below this one has been delivered to the receiving
    /// application (valid when `flags & ACK`).
    pub ack: u64,
}

impl FrameHeader {
    /// The acknowledgment, when the frame carries one.
    pub fn ack(&self) -> Option<u64> {
        (self.flags & flags::ACK != 0).then_some(self.ack)
    }
}

/// Why a received frame was rejected. Each malformation has its own value so that it can be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than the Ethernet and replication headers")]
    Truncated,
    #[error("EtherType is not 0x88B5")]
    WrongEtherType,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version")]
    UnsupportedVersion,
    #[error("unknown frame kind")]
    UnknownKind,
    #[error("unknown flag bits set")]
    UnknownFlags,
    #[error("reserved field not zero")]
    ReservedNotZero,
    #[error("payload length exceeds the frame")]
    PayloadTooLong,
    #[error("bytes after the payload")]
    TrailingBytes,
    #[error("frame larger than the configured MTU")]
    OverMtu,
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("ack frame with a payload, or a records/heartbeat frame without one")]
    BadPayloadForKind,
}

/// A checked, zero-copy view of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub src_mac: [u8; 6],
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_be_bytes(a)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Offsets inside the replication header.
mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: usize = 4;
    pub const RESERVED1: usize = 5;
    pub const QUEUE: usize = 6;
    pub const SENDER: usize = 8;
    pub const EPOCH: usize = 12;
    pub const SEQ: usize = 16;
    pub const ACK: usize = 24;
    pub const LEN: usize = 32;
    pub const RESERVED2: usize = 34;
    pub const CHECKSUM: usize = 36;
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    // The checksum field itself counts as zero.
    let pre = header.get(..off::CHECKSUM).unwrap_or(&[]);
    let c = crc32c::crc32c(pre);
    let c = crc32c::crc32c_append(c, &[0, 0, 0, 0]);
    crc32c::crc32c_append(c, payload)
}

/// Parses and verifies a whole Ethernet frame. `mtu` bounds the Ethernet payload (header + records).
pub fn parse(frame: &[u8], mtu: usize) -> Result<Frame<'_>, FrameError> {
    let eth = frame.get(..ETHERNET_HEADER_LEN).ok_or(FrameError::Truncated)?;
    if be16(eth, 12) != ETHERTYPE {
        return Err(FrameError::WrongEtherType);
    }
    let rest = frame.get(ETHERNET_HEADER_LEN..).unwrap_or(&[]);
    let h = rest.get(..HEADER_LEN).ok_or(FrameError::Truncated)?;
    if rest.len() > mtu {
        return Err(FrameError::OverMtu);
    }
    if be16(h, off::MAGIC) != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if h.get(off::VERSION) != Some(&VERSION) {
        return Err(FrameError::UnsupportedVersion);
    }
    let kind = h.get(off::KIND).and_then(|k| FrameKind::from_u8(*k)).ok_or(FrameError::UnknownKind)?;
    let fl = h.get(off::FLAGS).copied().unwrap_or(0);
    if fl & !flags::ALL != 0 {
        return Err(FrameError::UnknownFlags);
    }
    if h.get(off::RESERVED1) != Some(&0) || be16(h, off::RESERVED2) != 0 {
        return Err(FrameError::ReservedNotZero);
    }
    let len = usize::from(be16(h, off::LEN));
    let body = rest.get(HEADER_LEN..).unwrap_or(&[]);
    if len > body.len() {
        return Err(FrameError::PayloadTooLong);
    }
    // Short Ethernet frames are padded to 60 bytes by NICs: padding is allowed only up to that minimum.
    if body.len() > len && ETHERNET_HEADER_LEN + HEADER_LEN + len >= 60 {
        return Err(FrameError::TrailingBytes);
    }
    let payload = body.get(..len).unwrap_or(&[]);
    if checksum(h, payload) != be32(h, off::CHECKSUM) {
        return Err(FrameError::BadChecksum);
    }
    match (kind, len) {
        (FrameKind::Ack, 0) => {}
        (FrameKind::Ack, _) | (FrameKind::Records | FrameKind::Heartbeat, 0) => {
            return Err(FrameError::BadPayloadForKind)
        }
        _ => {}
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(eth.get(6..12).unwrap_or(&[0; 6]));
    Ok(Frame {
        header: FrameHeader {
            kind,
            flags: fl,
            queue: be16(h, off::QUEUE),
            sender: be32(h, off::SENDER),
            epoch: be32(h, off::EPOCH),
            seq: be64(h, off::SEQ),
            ack: be64(h, off::ACK),
        },
        src_mac,
        payload,
    })
}

/// Link-layer addresses of the back-to-back replication link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LinkAddrs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// Bytes in front of the payload in a frame buffer: the Ethernet and replication headers.
pub const PREFIX_LEN: usize = ETHERNET_HEADER_LEN + HEADER_LEN;

/// Writes a complete frame into `out` (cleared first): Ethernet header, replication header, `payload`,
/// checksum. Payloads longer than `u16::MAX` are cut there (the channel bounds them by the MTU).
pub fn emit(out: &mut Vec<u8>, link: LinkAddrs, header: &FrameHeader, payload: &[u8]) {
    out.clear();
    out.resize(PREFIX_LEN, 0);
    out.extend_from_slice(payload.get(..usize::from(u16::MAX)).unwrap_or(payload));
    finish(out, link, header);
}

/// Fills the headers of a frame buffer laid out as `PREFIX_LEN` reserved bytes then the payload, and
/// computes the checksum: how the channel builds its frames without copying the batch. Buffers shorter
/// than `PREFIX_LEN` are left alone.
pub fn finish(buf: &mut [u8], link: LinkAddrs, header: &FrameHeader) {
    if buf.len() < PREFIX_LEN {
        return;
    }
    let (head, payload) = buf.split_at_mut(PREFIX_LEN);
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let (eth, h) = head.split_at_mut(ETHERNET_HEADER_LEN);
    put(eth, 0, &link.dst);
    put(eth, 6, &link.src);
    put(eth, 12, &ETHERTYPE.to_be_bytes());
    put(h, off::MAGIC, &MAGIC.to_be_bytes());
    put(h, off::VERSION, &[VERSION, header.kind.to_u8(), header.flags & flags::ALL, 0]);
    put(h, off::QUEUE, &header.queue.to_be_bytes());
    put(h, off::SENDER, &header.sender.to_be_bytes());
    put(h, off::EPOCH, &header.epoch.to_be_bytes());
    put(h, off::SEQ, &header.seq.to_be_bytes());
    put(h, off::ACK, &header.ack.to_be_bytes());
    put(h, off::LEN, &len.to_be_bytes());
    put(h, off::RESERVED2, &[0, 0, 0, 0, 0, 0]);
    let c = checksum(h, payload.get(..usize::from(len)).unwrap_or(&[]));
    put(h, off::CHECKSUM, &c.to_be_bytes());
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(s) = buf.get_mut(at..at.saturating_add(bytes.len())) {
        s.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: LinkAddrs = LinkAddrs { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };

    fn header(kind: FrameKind) -> FrameHeader {
        FrameHeader { kind, flags: flags::ACK, queue: 3, sender: 7, epoch: 9, seq: 42, ack: 17 }
    }

    #[test]
    fn byte_layout_is_stable() {
        let mut out = Vec::new();
        emit(&mut out, LINK, &header(FrameKind::Records), &[0xAA, 0xBB]);
        let expected_head: [u8; 14 + 36] = [
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xB5, // ethernet
            0x48, 0x46, 1, 1, 1, 0, 0, 3, // magic, version, kind, flags, reserved, queue
            0, 0, 0, 7, 0, 0, 0, 9, // sender, epoch
            0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 17, // seq, ack
            0, 2, 0, 0, // len, reserved
        ];
        assert_eq!(out.get(..50), Some(&expected_head[..]));
        assert_eq!(out.len(), 14 + 40 + 2);
        let f = parse(&out, 1500).expect("valid frame");
        assert_eq!(f.header, header(FrameKind::Records));
        assert_eq!(f.payload, &[0xAA, 0xBB]);
        assert_eq!(f.src_mac, LINK.src);
    }

    #[test]
    fn each_malformation_has_its_error() {
        let mut good = Vec::new();
        emit(&mut good, LINK, &header(FrameKind::Records), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(parse(&good, 1500).is_ok());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            parse(&b, 1500).map(|_| ())
        };
        assert_eq!(with(&|b| b.truncate(30)), Err(FrameError::Truncated));
        assert_eq!(with(&|b| b[12] = 0x08), Err(FrameError::WrongEtherType));
        assert_eq!(with(&|b| b[14] = 0), Err(FrameError::BadMagic));
        assert_eq!(with(&|b| b[16] = 2), Err(FrameError::UnsupportedVersion));
        assert_eq!(with(&|b| b[17] = 9), Err(FrameError::UnknownKind));
        assert_eq!(with(&|b| b[18] = 0x80), Err(FrameError::UnknownFlags));
        assert_eq!(with(&|b| b[19] = 1), Err(FrameError::ReservedNotZero));
        assert_eq!(with(&|b| b[14 + 33] = 200), Err(FrameError::PayloadTooLong));
        assert_eq!(with(&|b| b.push(0)), Err(FrameError::TrailingBytes));
        assert_eq!(with(&|b| b[60] ^= 1), Err(FrameError::BadChecksum));
        assert_eq!(parse(&good, 40), Err(FrameError::OverMtu));
        let mut ack = Vec::new();
        emit(&mut ack, LINK, &header(FrameKind::Ack), &[1]);
        assert_eq!(parse(&ack, 1500).map(|_| ()), Err(FrameError::BadPayloadForKind));
        emit(&mut ack, LINK, &header(FrameKind::Records), &[]);
        assert_eq!(parse(&ack, 1500).map(|_| ()), Err(FrameError::BadPayloadForKind));
    }

    #[test]
    fn short_frames_may_carry_ethernet_padding() {
        let mut ack = Vec::new();
        emit(&mut ack, LINK, &header(FrameKind::Ack), &[]);
        assert_eq!(ack.len(), 54);
        ack.resize(60, 0);
        let f = parse(&ack, 1500).expect("padded ack parses");
        assert_eq!(f.header.kind, FrameKind::Ack);
        assert!(f.payload.is_empty());
    }

    #[test]
    fn refinished_frame_stays_valid() {
        let mut out = Vec::new();
        emit(&mut out, LINK, &header(FrameKind::Records), &[5; 100]);
        let h = FrameHeader { ack: 1000, ..header(FrameKind::Records) };
        finish(&mut out, LINK, &h);
        let f = parse(&out, 1500).expect("valid after finish");
        assert_eq!(f.header.ack(), Some(1000));
        assert_eq!(f.payload, &[5; 100]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x88b5),
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), mtu in 0usize..300) {
            let _ = parse(&bytes, mtu);
        }

        #[test]
        fn any_bit_flip_is_caught(pos in 14usize..(14 + 40 + 32), bit in 0u8..8) {
            let mut out = Vec::new();
            emit(&mut out, LINK, &header(FrameKind::Records), &[0x5A; 32]);
            out[pos] ^= 1 << bit;
            proptest::prop_assert!(parse(&out, 1500).is_err());
        }
    }
}
