//! The standby's flow store: the in-memory copy of every flow the primary carries.
//!
//! Deltas are applied in channel order. For each flow the store keeps the latest saved state of both
//! halves (opaque engine bytes), the latest progress, and the relayed bytes (policy `replica`) that the
//! destination peer has not yet acknowledged; progress trims them. It is bounded in flows and in held
//! bytes: when full it refuses with a counted error and marks itself incomplete, which the standby
//! announces in its heartbeats so that the primary never counts on a copy that is not there.
//! For a takeover it hands every flow out ([`FlowStore::drain_for_takeover`]); for a rejoining standby it
//! writes itself out as a stream of records ([`FlowStore::snapshot_records`]).

use std::collections::{HashMap, VecDeque};

use crate::delta::{Direction, FlowId, FlowKey, HalfProgress, Policy, Record, RelayOffsets};

/// Bounds of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub max_flows: usize,
    /// Relayed bytes held for all flows together.
    pub max_data_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { max_flows: 1 << 20, max_data_bytes: 256 << 20 }
    }
}

/// Relayed bytes waiting for the destination peer's acknowledgment. `seq` is in the space of the half
/// that transmits them (see [`Record::Data`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    pub seq: u32,
    pub bytes: Vec<u8>,
}

impl DataChunk {
    fn end(&self) -> u32 {
        self.seq.wrapping_add(len32(self.bytes.len()))
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `a - b` in sequence space: positive when `a` is after `b`.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// Everything the standby knows about one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFlow {
    pub id: FlowId,
    pub key: FlowKey,
    pub policy: Policy,
    pub offsets: RelayOffsets,
    pub client_half: Vec<u8>,
    pub server_half: Vec<u8>,
    /// Latest progress of (client half, server half), once any arrived.
    pub progress: Option<(HalfProgress, HalfProgress)>,
    /// Held bytes per direction ([`Direction::index`]), in order.
    pub data: [VecDeque<DataChunk>; 2],
}

impl StoredFlow {
    /// Bytes held for this flow in both directions.
    pub fn held_bytes(&self) -> usize {
        self.data.iter().flat_map(|d| d.iter()).map(|c| c.bytes.len()).sum()
    }

    /// The held chunks of one direction.
    pub fn data(&self, dir: Direction) -> impl Iterator<Item = &DataChunk> {
        self.data.get(dir.index()).into_iter().flatten()
    }

    /// Where the destination peer's acknowledgment stands for bytes going `dir`, once known.
    fn acked_edge(&self, dir: Direction) -> Option<u32> {
        let (client, server) = self.progress?;
        Some(match dir {
            Direction::ClientToServer => server.peer_acked,
            Direction::ServerToClient => client.peer_acked,
        })
    }

    /// Drops held bytes of `dir` below `edge`; returns how many bytes went.
    fn trim(&mut self, dir: Direction, edge: u32) -> usize {
        let Some(q) = self.data.get_mut(dir.index()) else { return 0 };
        let mut freed = 0usize;
        while let Some(c) = q.front_mut() {
            if seq_diff(c.end(), edge) <= 0 {
                freed += c.bytes.len();
                q.pop_front();
            } else if seq_diff(edge, c.seq) > 0 {
                let cut = usize::try_from(seq_diff(edge, c.seq)).unwrap_or(0).min(c.bytes.len());
                c.bytes.drain(..cut);
                c.seq = edge;
                freed += cut;
                break;
            } else {
                break;
            }
        }
        freed
    }
}

/// What applying a record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Opened,
    /// A FlowOpened for a known flow replaced its saved state.
    Resynced,
    Progress {
        bytes_freed: usize,
    },
    Data {
        bytes_stored: usize,
    },
    Closed,
    /// A record that changes nothing in the store (a heartbeat).
    Ignored,
    SnapshotStarted,
    SnapshotComplete,
}

/// Why a record was not applied. Each is counted; `Full` and `DataFull` make the store incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ApplyError {
    #[error("flow table full")]
    Full,
    #[error("data byte budget exhausted")]
    DataFull,
    #[error("record for an unknown flow")]
    UnknownFlow,
    #[error("snapshot end without a matching begin")]
    SnapshotMismatch,
}

/// Where a bulk copy for rejoin stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotState {
    /// No snapshot was received (the store follows deltas from the first flow on).
    None,
    Loading {
        id: u32,
        expected_flows: u32,
    },
    Complete {
        id: u32,
    },
}

/// Counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub flows: usize,
    pub data_bytes: usize,
    pub opened: u64,
    pub closed: u64,
    pub refused_full: u64,
    pub refused_data: u64,
    pub unknown_flow: u64,
    pub snapshot_errors: u64,
}

/// The standby's flow store.
#[derive(Debug)]
pub struct FlowStore {
    cfg: StoreConfig,
    flows: HashMap<FlowId, StoredFlow>,
    data_bytes: usize,
    incomplete: bool,
    snapshot: SnapshotState,
    stats: StoreStats,
}

impl FlowStore {
    pub fn new(cfg: StoreConfig) -> Self {
        FlowStore {
            cfg,
            flows: HashMap::new(),
            data_bytes: 0,
            incomplete: false,
            snapshot: SnapshotState::None,
            stats: StoreStats::default(),
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats { flows: self.flows.len(), data_bytes: self.data_bytes, ..self.stats }
    }

    /// False once anything was refused: the copy is missing state and must not be counted on.
    pub fn is_complete(&self) -> bool {
        !self.incomplete
    }

    pub fn snapshot_state(&self) -> SnapshotState {
        self.snapshot
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, id: FlowId) -> Option<&StoredFlow> {
        self.flows.get(&id)
    }

    /// Every stored flow, in no particular order.
    pub fn flows(&self) -> impl Iterator<Item = &StoredFlow> + '_ {
        self.flows.values()
    }

    /// Applies one delta, in channel order.
    pub fn apply(&mut self, rec: &Record<'_>) -> Result<Applied, ApplyError> {
        match *rec {
            Record::FlowOpened { flow, key, policy, offsets, client_half, server_half } => {
                if let Some(f) = self.flows.get_mut(&flow) {
                    f.key = key;
                    f.policy = policy;
                    f.offsets = offsets;
                    f.client_half.clear();
                    f.client_half.extend_from_slice(client_half);
                    f.server_half.clear();
                    f.server_half.extend_from_slice(server_half);
                    return Ok(Applied::Resynced);
                }
                if self.flows.len() >= self.cfg.max_flows {
                    self.stats.refused_full += 1;
                    self.incomplete = true;
                    return Err(ApplyError::Full);
                }
                self.flows.insert(
                    flow,
                    StoredFlow {
                        id: flow,
                        key,
                        policy,
                        offsets,
                        client_half: client_half.to_vec(),
                        server_half: server_half.to_vec(),
                        progress: None,
                        data: [VecDeque::new(), VecDeque::new()],
                    },
                );
                self.stats.opened += 1;
                Ok(Applied::Opened)
            }
            Record::Progress { flow, client, server } => {
                let f = self.flow_mut(flow)?;
                f.progress = Some((client, server));
                let freed = f.trim(Direction::ClientToServer, server.peer_acked)
                    + f.trim(Direction::ServerToClient, client.peer_acked);
                self.data_bytes = self.data_bytes.saturating_sub(freed);
                Ok(Applied::Progress { bytes_freed: freed })
            }
            Record::Data { flow, dir, seq, bytes } => self.apply_data(flow, dir, seq, bytes),
            Record::Closed { flow } => {
                let f = self.flows.remove(&flow).ok_or_else(|| {
                    self.stats.unknown_flow += 1;
                    ApplyError::UnknownFlow
                })?;
                self.data_bytes = self.data_bytes.saturating_sub(f.held_bytes());
                self.stats.closed += 1;
                Ok(Applied::Closed)
            }
            Record::Heartbeat(_) => Ok(Applied::Ignored),
            Record::SnapshotBegin { id, flows } => {
                self.snapshot = SnapshotState::Loading { id, expected_flows: flows };
                Ok(Applied::SnapshotStarted)
            }
            Record::SnapshotEnd { id, .. } => match self.snapshot {
                SnapshotState::Loading { id: begun, .. } if begun == id => {
                    self.snapshot = SnapshotState::Complete { id };
                    Ok(Applied::SnapshotComplete)
                }
                _ => {
                    self.stats.snapshot_errors += 1;
                    Err(ApplyError::SnapshotMismatch)
                }
            },
        }
    }

    fn flow_mut(&mut self, flow: FlowId) -> Result<&mut StoredFlow, ApplyError> {
        match self.flows.get_mut(&flow) {
            Some(f) => Ok(f),
            None => {
                self.stats.unknown_flow += 1;
                Err(ApplyError::UnknownFlow)
            }
        }
    }

    fn apply_data(
        &mut self,
        flow: FlowId,
        dir: Direction,
        seq: u32,
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        let room = self.cfg.max_data_bytes.saturating_sub(self.data_bytes);
        let f = self.flow_mut(flow)?;
        // Keep only bytes past both the destination's acknowledgment and what is already held (a chunk
        // offered twice after a refused window overlaps the first copy).
        let mut start = seq;
        if let Some(edge) = f.acked_edge(dir) {
            if seq_diff(edge, start) > 0 {
                start = edge;
            }
        }
        let q = f.data.get_mut(dir.index()).ok_or(ApplyError::UnknownFlow)?;
        if let Some(last) = q.back() {
            if seq_diff(last.end(), start) > 0 {
                start = last.end();
            }
        }
        let skip = seq_diff(start, seq);
        let skip = usize::try_from(skip).unwrap_or(0);
        let Some(fresh) = bytes.get(skip..).filter(|b| !b.is_empty()) else {
            return Ok(Applied::Data { bytes_stored: 0 });
        };
        if fresh.len() > room {
            self.stats.refused_data += 1;
            self.incomplete = true;
            return Err(ApplyError::DataFull);
        }
        q.push_back(DataChunk { seq: start, bytes: fresh.to_vec() });
        self.data_bytes += fresh.len();
        Ok(Applied::Data { bytes_stored: fresh.len() })
    }

    /// Hands out every flow for a takeover, leaving the store empty.
    pub fn drain_for_takeover(&mut self) -> impl Iterator<Item = StoredFlow> + '_ {
        self.data_bytes = 0;
        // By flow id, not in the map's (per-process random) order: the restored flows then get the same
        // ids and the same timers on every run, and a simulated takeover replays from its seed.
        let mut flows: Vec<StoredFlow> = self.flows.drain().map(|(_, f)| f).collect();
        flows.sort_unstable_by_key(|f| f.id);
        flows.into_iter()
    }

    /// The store as a stream of records for a rejoining standby: SnapshotBegin, then per flow (by id)
    /// FlowOpened, its Progress and its held Data, then SnapshotEnd. Data chunks are no larger than
    /// they arrived, so they fit a channel of the same MTU.
    pub fn snapshot_records(&self, id: u32) -> SnapshotRecords<'_> {
        let mut flows: Vec<&StoredFlow> = self.flows.values().collect();
        flows.sort_unstable_by_key(|f| f.id);
        SnapshotRecords { id, flows, next_flow: 0, step: Step::Begin }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Begin,
    Opened,
    Progress,
    Data(usize, usize),
    End,
    Done,
}

/// The iterator of [`FlowStore::snapshot_records`].
#[derive(Debug)]
pub struct SnapshotRecords<'a> {
    id: u32,
    flows: Vec<&'a StoredFlow>,
    next_flow: usize,
    step: Step,
}

impl<'a> Iterator for SnapshotRecords<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        loop {
            let flows = len32(self.flows.len());
            match self.step {
                Step::Begin => {
                    self.step = Step::Opened;
                    return Some(Record::SnapshotBegin { id: self.id, flows });
                }
                Step::End => {
                    self.step = Step::Done;
                    return Some(Record::SnapshotEnd { id: self.id, flows });
                }
                Step::Done => return None,
                _ => {}
            }
            let Some(f) = self.flows.get(self.next_flow).copied() else {
                self.step = Step::End;
                continue;
            };
            match self.step {
                Step::Opened => {
                    self.step = Step::Progress;
                    return Some(Record::FlowOpened {
                        flow: f.id,
                        key: f.key,
                        policy: f.policy,
                        offsets: f.offsets,
                        client_half: &f.client_half,
                        server_half: &f.server_half,
                    });
                }
                Step::Progress => {
                    self.step = Step::Data(0, 0);
                    if let Some((client, server)) = f.progress {
                        return Some(Record::Progress { flow: f.id, client, server });
                    }
                }
                Step::Data(d, k) => {
                    let dir = if d == 0 { Direction::ClientToServer } else { Direction::ServerToClient };
                    match f.data.get(d).and_then(|q| q.get(k)) {
                        Some(c) => {
                            self.step = Step::Data(d, k + 1);
                            return Some(Record::Data { flow: f.id, dir, seq: c.seq, bytes: &c.bytes });
                        }
                        None if d == 0 => self.step = Step::Data(1, 0),
                        None => {
                            self.next_flow += 1;
                            self.step = Step::Opened;
                        }
                    }
                }
                Step::Begin | Step::End | Step::Done => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opened(flow: FlowId) -> Record<'static> {
        Record::FlowOpened {
            flow,
            key: FlowKey { client_port: flow as u16, ..FlowKey::default() },
            policy: Policy::Replica,
            offsets: RelayOffsets { client_to_server: 1000, server_to_client: 2000 },
            client_half: b"client",
            server_half: b"server",
        }
    }

    fn progress(flow: FlowId, client_acked: u32, server_acked: u32) -> Record<'static> {
        Record::Progress {
            flow,
            client: HalfProgress { peer_acked: client_acked, ..HalfProgress::default() },
            server: HalfProgress { peer_acked: server_acked, ..HalfProgress::default() },
        }
    }

    fn held(s: &FlowStore, flow: FlowId, dir: Direction) -> Vec<(u32, Vec<u8>)> {
        s.get(flow).map(|f| f.data(dir).map(|c| (c.seq, c.bytes.clone())).collect()).unwrap_or_default()
    }

    #[test]
    fn lifecycle_open_progress_data_trim_close() {
        let mut s = FlowStore::new(StoreConfig::default());
        assert_eq!(s.apply(&opened(1)), Ok(Applied::Opened));
        let c2s = Direction::ClientToServer;
        let bytes: Vec<u8> = (0..100).collect();
        assert_eq!(
            s.apply(&Record::Data { flow: 1, dir: c2s, seq: u32::MAX - 9, bytes: &bytes }),
            Ok(Applied::Data { bytes_stored: 100 })
        );
        assert_eq!(s.stats().data_bytes, 100);
        // The server acknowledged 30 of them (across the sequence wrap).
        assert_eq!(s.apply(&progress(1, 0, 20)), Ok(Applied::Progress { bytes_freed: 30 }));
        assert_eq!(held(&s, 1, c2s), vec![(20, bytes[30..].to_vec())]);
        // A repeated offer of bytes already held or acknowledged stores only what is new.
        let more: Vec<u8> = (0..120).collect();
        assert_eq!(
            s.apply(&Record::Data { flow: 1, dir: c2s, seq: u32::MAX - 9, bytes: &more }),
            Ok(Applied::Data { bytes_stored: 20 })
        );
        assert_eq!(s.stats().data_bytes, 90);
        assert_eq!(s.apply(&Record::Closed { flow: 1 }), Ok(Applied::Closed));
        assert_eq!(s.stats(), StoreStats { opened: 1, closed: 1, ..StoreStats::default() });
        assert!(s.is_complete());
    }

    #[test]
    fn bounds_refuse_count_and_mark_incomplete() {
        let mut s = FlowStore::new(StoreConfig { max_flows: 2, max_data_bytes: 10 });
        s.apply(&opened(1)).expect("room");
        s.apply(&opened(2)).expect("room");
        assert_eq!(s.apply(&opened(3)), Err(ApplyError::Full));
        assert_eq!(s.apply(&opened(2)), Ok(Applied::Resynced));
        assert!(!s.is_complete());
        let d = Record::Data { flow: 1, dir: Direction::ServerToClient, seq: 0, bytes: &[0; 11] };
        assert_eq!(s.apply(&d), Err(ApplyError::DataFull));
        assert_eq!(s.apply(&Record::Closed { flow: 3 }), Err(ApplyError::UnknownFlow));
        assert_eq!(s.apply(&progress(9, 0, 0)), Err(ApplyError::UnknownFlow));
        let st = s.stats();
        assert_eq!((st.flows, st.refused_full, st.refused_data, st.unknown_flow), (2, 1, 1, 2));
        // Existing flows are untouched by the refusals.
        assert_eq!(s.get(1).map(|f| f.client_half.as_slice()), Some(&b"client"[..]));
    }

    #[test]
    fn snapshot_rebuilds_an_equal_store() {
        let mut a = FlowStore::new(StoreConfig::default());
        for id in [5, 1, 3] {
            a.apply(&opened(id)).expect("room");
        }
        a.apply(&progress(3, 7, 0)).expect("known");
        a.apply(&Record::Data { flow: 3, dir: Direction::ServerToClient, seq: 10, bytes: b"abc" })
            .expect("room");
        a.apply(&Record::Data { flow: 5, dir: Direction::ClientToServer, seq: 0, bytes: b"xy" })
            .expect("room");
        a.apply(&Record::Data { flow: 5, dir: Direction::ServerToClient, seq: 4, bytes: b"z" })
            .expect("room");
        let recs: Vec<_> = a.snapshot_records(9).collect();
        assert_eq!(recs.first(), Some(&Record::SnapshotBegin { id: 9, flows: 3 }));
        assert_eq!(recs.last(), Some(&Record::SnapshotEnd { id: 9, flows: 3 }));
        assert_eq!(recs.len(), 2 + 3 + 1 + 3);
        let mut b = FlowStore::new(StoreConfig::default());
        for r in &recs {
            b.apply(r).expect("applies");
        }
        assert_eq!(b.snapshot_state(), SnapshotState::Complete { id: 9 });
        for id in [1, 3, 5] {
            assert_eq!(a.get(id), b.get(id));
        }
        assert_eq!(a.stats().data_bytes, b.stats().data_bytes);
        assert_eq!(b.apply(&Record::SnapshotEnd { id: 9, flows: 3 }), Err(ApplyError::SnapshotMismatch));
    }

    #[test]
    fn takeover_drains_everything() {
        let mut s = FlowStore::new(StoreConfig::default());
        for id in 0..10 {
            s.apply(&opened(id)).expect("room");
        }
        let mut ids: Vec<_> = s.drain_for_takeover().map(|f| f.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert!(s.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5707e),
            ..ProptestConfig::default()
        })]

        /// Relayed stream bytes arrive in pieces (some repeated) interleaved with progress: the store holds
        /// exactly the stream bytes past the last acknowledged edge, and its byte gauge is right.
        #[test]
        fn held_bytes_are_exactly_the_unacknowledged_stream(
            base in any::<u32>(),
            steps in proptest::collection::vec((0usize..300, 0usize..300, any::<bool>()), 1..60),
        ) {
            let stream: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
            let mut s = FlowStore::new(StoreConfig::default());
            s.apply(&opened(1)).expect("room");
            let (mut sent, mut acked) = (0usize, 0usize);
            for (len, ack, repeat) in steps {
                let from = if repeat { sent.saturating_sub(len / 2) } else { sent };
                let to = (sent + len).min(stream.len());
                let seq = base.wrapping_add(from as u32);
                s.apply(&Record::Data { flow: 1, dir: Direction::ClientToServer, seq, bytes: &stream[from..to] })
                    .expect("room");
                sent = to;
                acked = (acked + ack).min(sent);
                s.apply(&progress(1, 0, base.wrapping_add(acked as u32))).expect("known");
                let held: Vec<u8> = s.get(1).map(|f| f.data(Direction::ClientToServer)
                    .flat_map(|c| c.bytes.iter().copied()).collect()).unwrap_or_default();
                prop_assert_eq!(&held[..], &stream[acked..sent]);
                prop_assert_eq!(s.stats().data_bytes, sent - acked);
                if let Some(c) = s.get(1).and_then(|f| f.data(Direction::ClientToServer).next()) {
                    prop_assert_eq!(c.seq, base.wrapping_add(acked as u32));
                }
            }
        }
    }
}
