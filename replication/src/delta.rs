//! Delta records: what the primary tells the standby about its flows, and the batch format that carries
//! them in a frame's payload.
//!
//! A batch is one version byte ([`DELTA_VERSION`]) then records, each `kind: u8, len: u16 (big endian),
//! body[len]`. A reader skips a record whose kind it does not know by its length (so a newer primary can
//! add kinds without breaking an older standby), and rejects a known kind whose body is malformed.
//! Everything is big endian. A saved engine half travels as opaque bytes: the TCP engine's
//! `SavedConnection::encode`/`decode` own that format.

use core::fmt;

/// The batch format version this code writes and reads.
pub const DELTA_VERSION: u8 = 1;
/// Bytes in front of every record body.
pub const RECORD_HEADER_LEN: usize = 3;
/// Encoded size of a whole Progress record (header included): fixed, so batches can be planned.
pub const PROGRESS_RECORD_LEN: usize = RECORD_HEADER_LEN + 8 + 2 * HalfProgress::LEN;
/// Fixed bytes of a Data record in front of its payload bytes (header included).
pub const DATA_RECORD_OVERHEAD: usize = RECORD_HEADER_LEN + 8 + 1 + 4;

/// Identifies a flow on the channel: assigned by the primary, unique while the flow lives.
pub type FlowId = u64;

mod kind {
    pub const FLOW_OPENED: u8 = 1;
    pub const PROGRESS: u8 = 2;
    pub const DATA: u8 = 3;
    pub const CLOSED: u8 = 4;
    pub const HEARTBEAT: u8 = 5;
    pub const SNAPSHOT_BEGIN: u8 = 6;
    pub const SNAPSHOT_END: u8 = 7;
}

/// A flow's addresses: the client's 4-tuple toward the VIP, and the server-side tuple (SNAT address and
/// port toward the chosen backend). IPv4 addresses as host-order `u32`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub client_ip: u32,
    pub client_port: u16,
    pub vip: u32,
    pub vip_port: u16,
    pub snat_ip: u32,
    pub snat_port: u16,
    pub backend_ip: u32,
    pub backend_port: u16,
}

impl FlowKey {
    pub const LEN: usize = 24;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.client_ip.to_be_bytes());
        out.extend_from_slice(&self.client_port.to_be_bytes());
        out.extend_from_slice(&self.vip.to_be_bytes());
        out.extend_from_slice(&self.vip_port.to_be_bytes());
        out.extend_from_slice(&self.snat_ip.to_be_bytes());
        out.extend_from_slice(&self.snat_port.to_be_bytes());
        out.extend_from_slice(&self.backend_ip.to_be_bytes());
        out.extend_from_slice(&self.backend_port.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Option<FlowKey> {
        Some(FlowKey {
            client_ip: r.u32()?,
            client_port: r.u16()?,
            vip: r.u32()?,
            vip_port: r.u16()?,
            snat_ip: r.u32()?,
            snat_port: r.u16()?,
            backend_ip: r.u32()?,
            backend_port: r.u16()?,
        })
    }
}

/// The flow's ack policy, as the primary runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    None,
    Backend,
    Replica,
    App,
}

impl Policy {
    pub const fn to_u8(self) -> u8 {
        match self {
            Policy::None => 0,
            Policy::Backend => 1,
            Policy::Replica => 2,
            Policy::App => 3,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Policy> {
        match v {
            0 => Some(Policy::None),
            1 => Some(Policy::Backend),
            2 => Some(Policy::Replica),
            3 => Some(Policy::App),
            _ => None,
        }
    }
}

/// The fixed sequence offsets of the byte-aligned relay: a byte with client-side sequence number `s`
/// has server-side number `s + client_to_server` (wrapping), and the other way for `server_to_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RelayOffsets {
    pub client_to_server: u32,
    pub server_to_client: u32,
}

/// One connection half's progress: small and fixed-size, so many fit in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HalfProgress {
    /// The highest sequence number the peer acknowledged (our snd_una).
    pub peer_acked: u32,
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    /// The peer's advertised window, scaled to bytes.
    pub snd_wnd: u32,
    /// Our advertised window, scaled to bytes.
    pub rcv_wnd: u32,
    /// The peer's most recent TSval (TS.Recent).
    pub ts_recent: u32,
    /// Our timestamp clock's latest TSval, so a takeover never sends one that goes backwards (PAWS).
    pub ts_val: u32,
}

impl HalfProgress {
    pub const LEN: usize = 28;

    fn write(&self, out: &mut Vec<u8>) {
        for v in [
            self.peer_acked,
            self.snd_nxt,
            self.rcv_nxt,
            self.snd_wnd,
            self.rcv_wnd,
            self.ts_recent,
            self.ts_val,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn read(r: &mut Reader<'_>) -> Option<HalfProgress> {
        Some(HalfProgress {
            peer_acked: r.u32()?,
            snd_nxt: r.u32()?,
            rcv_nxt: r.u32()?,
            snd_wnd: r.u32()?,
            rcv_wnd: r.u32()?,
            ts_recent: r.u32()?,
            ts_val: r.u32()?,
        })
    }
}

/// Which way a relayed byte travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub const fn to_u8(self) -> u8 {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Direction> {
        match v {
            0 => Some(Direction::ClientToServer),
            1 => Some(Direction::ServerToClient),
            _ => None,
        }
    }

    pub const fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// A box's role as announced in its heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Standby,
    TakingOver,
    Fenced,
}

impl Role {
    pub const fn to_u8(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Standby => 2,
            Role::TakingOver => 3,
            Role::Fenced => 4,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Primary),
            2 => Some(Role::Standby),
            3 => Some(Role::TakingOver),
            4 => Some(Role::Fenced),
            _ => None,
        }
    }
}

/// Heartbeat flags.
pub mod hb_flags {
    /// The standby refused some state (a full store): its copy is not complete, so the primary must not
    /// count on it.
    pub const STORE_INCOMPLETE: u8 = 0x01;
    /// A planned switchover: the primary has stopped taking frames in, the standby has confirmed all it
    /// offered, and the standby is to take over now. Older standbys ignore the bit (and take over only
    /// when the primary then falls silent).
    pub const HAND_OVER: u8 = 0x02;
}

/// A heartbeat's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    pub epoch: u32,
    pub role: Role,
    pub flags: u8,
    /// The sender's clock, in nanoseconds.
    pub time_ns: u64,
    /// Flows the sender holds.
    pub flows: u32,
}

/// A state delta, borrowing its byte fields from the frame it was parsed from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A new flow (or, for a known id, a full resynchronization of its state).
    FlowOpened {
        flow: FlowId,
        key: FlowKey,
        policy: Policy,
        offsets: RelayOffsets,
        /// The client-side half's saved engine state (opaque).
        client_half: &'a [u8],
        /// The server-side half's saved engine state (opaque).
        server_half: &'a [u8],
    },
    Progress {
        flow: FlowId,
        client: HalfProgress,
        server: HalfProgress,
    },
    /// Bytes acknowledged to one peer before the other peer has them (policy `replica`). `seq` is the
    /// sequence number of the first byte in the space of the half that will transmit it to its
    /// destination (the server half for client-to-server bytes), so that half's `peer_acked` trims it.
    Data {
        flow: FlowId,
        dir: Direction,
        seq: u32,
        bytes: &'a [u8],
    },
    Closed {
        flow: FlowId,
    },
    Heartbeat(Heartbeat),
    /// A bulk copy for a rejoining standby starts: `flows` FlowOpened records follow.
    SnapshotBegin {
        id: u32,
        flows: u32,
    },
    SnapshotEnd {
        id: u32,
        flows: u32,
    },
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::FlowOpened { flow, key, policy, offsets, client_half, server_half } => f
                .debug_struct("FlowOpened")
                .field("flow", flow)
                .field("key", key)
                .field("policy", policy)
                .field("offsets", offsets)
                .field("client_half_len", &client_half.len())
                .field("server_half_len", &server_half.len())
                .finish(),
            Record::Progress { flow, client, server } => f
                .debug_struct("Progress")
                .field("flow", flow)
                .field("client", client)
                .field("server", server)
                .finish(),
            Record::Data { flow, dir, seq, bytes } => f
                .debug_struct("Data")
                .field("flow", flow)
                .field("dir", dir)
                .field("seq", seq)
                .field("len", &bytes.len())
                .finish(),
            Record::Closed { flow } => f.debug_struct("Closed").field("flow", flow).finish(),
            Record::Heartbeat(h) => h.fmt(f),
            Record::SnapshotBegin { id, flows } => {
                f.debug_struct("SnapshotBegin").field("id", id).field("flows", flows).finish()
            }
            Record::SnapshotEnd { id, flows } => {
                f.debug_struct("SnapshotEnd").field("id", id).field("flows", flows).finish()
            }
        }
    }
}

/// Why a record could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EncodeError {
    #[error("record body longer than 65535 bytes")]
    TooLarge,
}

/// Why a batch could not be decoded. Each has its own value so it can be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DeltaError {
    #[error("empty batch")]
    Empty,
    #[error("unsupported delta version")]
    UnsupportedVersion,
    #[error("record header cut short")]
    TruncatedHeader,
    #[error("record length runs past the batch")]
    LengthPastEnd,
    #[error("record body has the wrong length for its kind")]
    BadLength,
    #[error("unknown ack policy")]
    BadPolicy,
    #[error("unknown direction")]
    BadDirection,
    #[error("unknown role")]
    BadRole,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
    }

    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Some(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }
}

impl<'a> Record<'a> {
    /// Size of the record once encoded, header included.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Record::FlowOpened { client_half, server_half, .. } => {
                8 + FlowKey::LEN + 1 + 8 + 2 + client_half.len() + 2 + server_half.len()
            }
            Record::Progress { .. } => 8 + 2 * HalfProgress::LEN,
            Record::Data { bytes, .. } => 8 + 1 + 4 + bytes.len(),
            Record::Closed { .. } => 8,
            Record::Heartbeat(_) => 4 + 1 + 1 + 8 + 4,
            Record::SnapshotBegin { .. } | Record::SnapshotEnd { .. } => 8,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::FlowOpened { .. } => kind::FLOW_OPENED,
            Record::Progress { .. } => kind::PROGRESS,
            Record::Data { .. } => kind::DATA,
            Record::Closed { .. } => kind::CLOSED,
            Record::Heartbeat(_) => kind::HEARTBEAT,
            Record::SnapshotBegin { .. } => kind::SNAPSHOT_BEGIN,
            Record::SnapshotEnd { .. } => kind::SNAPSHOT_END,
        }
    }

    /// Appends the encoded record to `out`. On error, `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = u16::try_from(self.body_len()).map_err(|_| EncodeError::TooLarge)?;
        if let Record::FlowOpened { client_half, server_half, .. } = self {
            u16::try_from(client_half.len()).map_err(|_| EncodeError::TooLarge)?;
            u16::try_from(server_half.len()).map_err(|_| EncodeError::TooLarge)?;
        }
        out.push(self.kind());
        out.extend_from_slice(&len.to_be_bytes());
        match self {
            Record::FlowOpened { flow, key, policy, offsets, client_half, server_half } => {
                out.extend_from_slice(&flow.to_be_bytes());
                key.write(out);
                out.push(policy.to_u8());
                out.extend_from_slice(&offsets.client_to_server.to_be_bytes());
                out.extend_from_slice(&offsets.server_to_client.to_be_bytes());
                for half in [client_half, server_half] {
                    let l = u16::try_from(half.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(half);
                }
            }
            Record::Progress { flow, client, server } => {
                out.extend_from_slice(&flow.to_be_bytes());
                client.write(out);
                server.write(out);
            }
            Record::Data { flow, dir, seq, bytes } => {
                out.extend_from_slice(&flow.to_be_bytes());
                out.push(dir.to_u8());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Record::Closed { flow } => out.extend_from_slice(&flow.to_be_bytes()),
            Record::Heartbeat(h) => {
                out.extend_from_slice(&h.epoch.to_be_bytes());
                out.push(h.role.to_u8());
                out.push(h.flags);
                out.extend_from_slice(&h.time_ns.to_be_bytes());
                out.extend_from_slice(&h.flows.to_be_bytes());
            }
            Record::SnapshotBegin { id, flows } | Record::SnapshotEnd { id, flows } => {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&flows.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Decodes one known record body. `None` for an unknown kind (to be skipped).
    fn decode_body(k: u8, body: &'a [u8]) -> Option<Result<Record<'a>, DeltaError>> {
        let mut r = Reader { b: body };
        let rec = match k {
            kind::FLOW_OPENED => (|| {
                let flow = r.u64().ok_or(DeltaError::BadLength)?;
                let key = FlowKey::read(&mut r).ok_or(DeltaError::BadLength)?;
                let policy =
                    Policy::from_u8(r.u8().ok_or(DeltaError::BadLength)?).ok_or(DeltaError::BadPolicy)?;
                let offsets = RelayOffsets {
                    client_to_server: r.u32().ok_or(DeltaError::BadLength)?,
                    server_to_client: r.u32().ok_or(DeltaError::BadLength)?,
                };
                let cl = usize::from(r.u16().ok_or(DeltaError::BadLength)?);
                let client_half = r.take(cl).ok_or(DeltaError::BadLength)?;
                let sl = usize::from(r.u16().ok_or(DeltaError::BadLength)?);
                let server_half = r.take(sl).ok_or(DeltaError::BadLength)?;
                Ok(Record::FlowOpened { flow, key, policy, offsets, client_half, server_half })
            })(),
            kind::PROGRESS => (|| {
                let flow = r.u64().ok_or(DeltaError::BadLength)?;
                let client = HalfProgress::read(&mut r).ok_or(DeltaError::BadLength)?;
                let server = HalfProgress::read(&mut r).ok_or(DeltaError::BadLength)?;
                Ok(Record::Progress { flow, client, server })
            })(),
            kind::DATA => (|| {
                let flow = r.u64().ok_or(DeltaError::BadLength)?;
                let dir = Direction::from_u8(r.u8().ok_or(DeltaError::BadLength)?)
                    .ok_or(DeltaError::BadDirection)?;
                let seq = r.u32().ok_or(DeltaError::BadLength)?;
                let bytes = r.take(r.b.len()).unwrap_or(&[]);
                Ok(Record::Data { flow, dir, seq, bytes })
            })(),
            kind::CLOSED => r.u64().map(|flow| Record::Closed { flow }).ok_or(DeltaError::BadLength),
            kind::HEARTBEAT => (|| {
                let epoch = r.u32().ok_or(DeltaError::BadLength)?;
                let role = Role::from_u8(r.u8().ok_or(DeltaError::BadLength)?).ok_or(DeltaError::BadRole)?;
                let flags = r.u8().ok_or(DeltaError::BadLength)?;
                let time_ns = r.u64().ok_or(DeltaError::BadLength)?;
                let flows = r.u32().ok_or(DeltaError::BadLength)?;
                Ok(Record::Heartbeat(Heartbeat { epoch, role, flags, time_ns, flows }))
            })(),
            kind::SNAPSHOT_BEGIN | kind::SNAPSHOT_END => (|| {
                let id = r.u32().ok_or(DeltaError::BadLength)?;
                let flows = r.u32().ok_or(DeltaError::BadLength)?;
                Ok(if k == kind::SNAPSHOT_BEGIN {
                    Record::SnapshotBegin { id, flows }
                } else {
                    Record::SnapshotEnd { id, flows }
                })
            })(),
            _ => return None,
        };
        // A known kind must use its body exactly: trailing bytes mean a malformed (or misparsed) record.
        Some(rec.and_then(|rec| if r.b.is_empty() { Ok(rec) } else { Err(DeltaError::BadLength) }))
    }
}

/// Starts a batch in `out` (cleared first).
pub fn begin_batch(out: &mut Vec<u8>) {
    out.clear();
    out.push(DELTA_VERSION);
}

/// Iterates the records of a batch. Unknown kinds are skipped; after the first error the iterator ends.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
    failed: bool,
    /// Unknown records skipped so far.
    pub skipped: u32,
}

/// Reads a batch. The version byte is checked here; records are checked as they are read.
pub fn records(batch: &[u8]) -> Result<Records<'_>, DeltaError> {
    match batch.split_first() {
        None => Err(DeltaError::Empty),
        Some((&DELTA_VERSION, rest)) => Ok(Records { rest, failed: false, skipped: 0 }),
        Some(_) => Err(DeltaError::UnsupportedVersion),
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DeltaError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.rest.is_empty() {
                return None;
            }
            let mut r = Reader { b: self.rest };
            let (Some(k), Some(len)) = (r.u8(), r.u16()) else {
                self.failed = true;
                return Some(Err(DeltaError::TruncatedHeader));
            };
            let Some(body) = r.take(usize::from(len)) else {
                self.failed = true;
                return Some(Err(DeltaError::LengthPastEnd));
            };
            self.rest = r.b;
            match Record::decode_body(k, body) {
                None => self.skipped = self.skipped.saturating_add(1),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Some(Ok(rec)) => return Some(Ok(rec)),
            }
        }
    }
}

/// Checks a whole batch without keeping the records: `Ok(number of known records)`.
pub fn validate(batch: &[u8]) -> Result<usize, DeltaError> {
    let mut n = 0usize;
    for r in records(batch)? {
        r?;
        n = n.saturating_add(1);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> FlowKey {
        FlowKey {
            client_ip: 0xC612_0001,
            client_port: 40000,
            vip: 0xC612_0101,
            vip_port: 80,
            snat_ip: 0xC613_0001,
            snat_port: 50000,
            backend_ip: 0xC613_0102,
            backend_port: 8080,
        }
    }

    fn samples() -> Vec<Record<'static>> {
        let hp = HalfProgress {
            peer_acked: 1,
            snd_nxt: 2,
            rcv_nxt: 3,
            snd_wnd: 4,
            rcv_wnd: 5,
            ts_recent: 6,
            ts_val: 7,
        };
        vec![
            Record::FlowOpened {
                flow: 9,
                key: key(),
                policy: Policy::Replica,
                offsets: RelayOffsets { client_to_server: 11, server_to_client: u32::MAX },
                client_half: b"client-state",
                server_half: b"",
            },
            Record::Progress { flow: 9, client: hp, server: HalfProgress { ts_val: 99, ..hp } },
            Record::Data { flow: 9, dir: Direction::ServerToClient, seq: 0xFFFF_FFF0, bytes: b"hello" },
            Record::Closed { flow: 9 },
            Record::Heartbeat(Heartbeat {
                epoch: 3,
                role: Role::Standby,
                flags: 1,
                time_ns: 123_456,
                flows: 77,
            }),
            Record::SnapshotBegin { id: 1, flows: 2 },
            Record::SnapshotEnd { id: 1, flows: 2 },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        let mut b = Vec::new();
        begin_batch(&mut b);
        for r in samples() {
            let before = b.len();
            r.encode(&mut b).expect("fits");
            assert_eq!(b.len() - before, r.encoded_len());
        }
        let got: Vec<_> = records(&b).expect("version").collect::<Result<_, _>>().expect("valid");
        assert_eq!(got, samples());
    }

    #[test]
    fn progress_is_small_and_fixed() {
        let mut b = Vec::new();
        let r = Record::Progress {
            flow: u64::MAX,
            client: HalfProgress::default(),
            server: HalfProgress::default(),
        };
        r.encode(&mut b).expect("fits");
        assert_eq!(b.len(), PROGRESS_RECORD_LEN);
        assert_eq!(PROGRESS_RECORD_LEN, 67);
    }

    #[test]
    fn unknown_kinds_are_skipped_by_length() {
        let mut b = Vec::new();
        begin_batch(&mut b);
        b.extend_from_slice(&[200, 0, 3, 1, 2, 3]);
        Record::Closed { flow: 5 }.encode(&mut b).expect("fits");
        b.extend_from_slice(&[201, 0, 0]);
        let mut it = records(&b).expect("version");
        assert_eq!(it.next(), Some(Ok(Record::Closed { flow: 5 })));
        assert_eq!(it.next(), None);
        assert_eq!(it.skipped, 2);
    }

    #[test]
    fn malformed_records_are_distinct_errors() {
        let first_err = |body: &[u8]| {
            let mut b = vec![DELTA_VERSION];
            b.extend_from_slice(body);
            records(&b).expect("version").find_map(Result::err)
        };
        assert_eq!(records(&[]).map(|_| ()), Err(DeltaError::Empty));
        assert_eq!(records(&[2, 4, 0, 8]).map(|_| ()), Err(DeltaError::UnsupportedVersion));
        assert_eq!(first_err(&[4, 0]), Some(DeltaError::TruncatedHeader));
        assert_eq!(first_err(&[4, 0, 9, 0]), Some(DeltaError::LengthPastEnd));
        assert_eq!(first_err(&[4, 0, 7, 0, 0, 0, 0, 0, 0, 0]), Some(DeltaError::BadLength));
        assert_eq!(first_err(&[4, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(DeltaError::BadLength));
        assert_eq!(
            first_err(&[3, 0, 13, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 0]),
            Some(DeltaError::BadDirection)
        );
        let mut hb = vec![5, 0, 18, 0, 0, 0, 1, 9];
        hb.extend_from_slice(&[0; 13]);
        assert_eq!(first_err(&hb), Some(DeltaError::BadRole));
        let mut fo = Vec::new();
        Record::FlowOpened {
            flow: 1,
            key: key(),
            policy: Policy::App,
            offsets: RelayOffsets::default(),
            client_half: b"a",
            server_half: b"b",
        }
        .encode(&mut fo)
        .expect("fits");
        fo[3 + 8 + FlowKey::LEN] = 9;
        assert_eq!(first_err(&fo), Some(DeltaError::BadPolicy));
    }

    #[test]
    fn oversized_record_is_refused_without_writing() {
        let big = vec![0u8; 70_000];
        let mut b = vec![1, 2, 3];
        let r = Record::Data { flow: 1, dir: Direction::ClientToServer, seq: 0, bytes: &big };
        assert_eq!(r.encode(&mut b), Err(EncodeError::TooLarge));
        assert_eq!(b, vec![1, 2, 3]);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2048,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xde17a),
            ..ProptestConfig::default()
        })]

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(it) = records(&bytes) {
                for _ in it {}
            }
        }

        #[test]
        fn data_round_trips(flow in any::<u64>(), seq in any::<u32>(), s2c in any::<bool>(),
                            bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let dir = if s2c { Direction::ServerToClient } else { Direction::ClientToServer };
            let r = Record::Data { flow, dir, seq, bytes: &bytes };
            let mut b = Vec::new();
            begin_batch(&mut b);
            r.encode(&mut b).expect("fits");
            let got: Vec<_> = records(&b).expect("version").collect::<Result<_, _>>().expect("valid");
            prop_assert_eq!(got, vec![r]);
        }
    }
}
