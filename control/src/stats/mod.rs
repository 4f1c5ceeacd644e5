//! Statistics the protocol cores feed and the control thread reads: per-core counter blocks (one
//! writer each, no locks, no shared cache lines) summed on read; per-core latency histograms
//! (`hdrhistogram`) handed to the control thread off the fast path (see `histogram`); and the snapshot
//! that `stats` replies with and `prometheus` renders.

pub mod histogram;
pub mod prometheus;

pub use histogram::{Latency, LatencySummary};

use histogram::{CoreHistograms, Recorder, SharedSlots};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The ports of a box (DESIGN.md, Topology).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Client,
    Server,
    Replication,
}

impl Port {
    pub const ALL: [Port; 3] = [Port::Client, Port::Server, Port::Replication];
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Server => "server",
            Port::Replication => "replication",
        }
    }
}

/// Traffic counters of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortCounter {
    RxPackets,
    RxBytes,
    TxPackets,
    TxBytes,
}

impl PortCounter {
    pub const ALL: [PortCounter; 4] =
        [PortCounter::RxPackets, PortCounter::RxBytes, PortCounter::TxPackets, PortCounter::TxBytes];
    pub fn as_str(self) -> &'static str {
        match self {
            PortCounter::RxPackets => "rx_packets",
            PortCounter::RxBytes => "rx_bytes",
            PortCounter::TxPackets => "tx_packets",
            PortCounter::TxBytes => "tx_bytes",
        }
    }
}

/// Why a packet was dropped (invariant 5: every drop is counted by cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// A header failed to parse.
    Malformed,
    /// A checksum did not match.
    Checksum,
    /// Not addressed to anything this box serves.
    NotForUs,
    /// A segment for no known flow (and not a SYN).
    NoFlow,
    /// A new flow refused because the flow table is full.
    TableFull,
    /// The transmit ring had no room.
    TxRingFull,
    /// A segment the TCP engine rejected (RFC 5961 checks, out of window).
    Rejected,
}

impl DropCause {
    pub const ALL: [DropCause; 7] = [
        DropCause::Malformed,
        DropCause::Checksum,
        DropCause::NotForUs,
        DropCause::NoFlow,
        DropCause::TableFull,
        DropCause::TxRingFull,
        DropCause::Rejected,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::Malformed => "malformed",
            DropCause::Checksum => "checksum",
            DropCause::NotForUs => "not_for_us",
            DropCause::NoFlow => "no_flow",
            DropCause::TableFull => "table_full",
            DropCause::TxRingFull => "tx_ring_full",
            DropCause::Rejected => "rejected",
        }
    }
}

/// Per-listener counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerCounter {
    FlowsOpened,
    FlowsClosed,
    FlowsRefused,
    FlowsReset,
    /// Payload bytes from clients relayed to backends.
    BytesFromClients,
    /// Payload bytes from backends relayed to clients.
    BytesFromBackends,
}

impl ListenerCounter {
    pub const ALL: [ListenerCounter; 6] = [
        ListenerCounter::FlowsOpened,
        ListenerCounter::FlowsClosed,
        ListenerCounter::FlowsRefused,
        ListenerCounter::FlowsReset,
        ListenerCounter::BytesFromClients,
        ListenerCounter::BytesFromBackends,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerCounter::FlowsOpened => "flows_opened",
            ListenerCounter::FlowsClosed => "flows_closed",
            ListenerCounter::FlowsRefused => "flows_refused",
            ListenerCounter::FlowsReset => "flows_reset",
            ListenerCounter::BytesFromClients => "bytes_from_clients",
            ListenerCounter::BytesFromBackends => "bytes_from_backends",
        }
    }
}

const PORT_CELLS: usize = PortCounter::ALL.len() + DropCause::ALL.len();
/// Listener cells: the counters, then the withheld-bytes gauge.
const LISTENER_CELLS: usize = ListenerCounter::ALL.len() + 1;
const WITHHELD: usize = ListenerCounter::ALL.len();

/// Aligned to a cache line, so that two cores' cells never share one (no false sharing).
#[repr(align(64))]
#[derive(Debug)]
struct Line<T>(T);

fn cells<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

#[derive(Debug)]
struct CoreBlock {
    ports: [Line<[AtomicU64; PORT_CELLS]>; 3],
    listeners: Box<[Line<[AtomicU64; LISTENER_CELLS]>]>,
}

impl CoreBlock {
    fn new(listeners: usize) -> Self {
        CoreBlock {
            ports: std::array::from_fn(|_| Line(cells())),
            listeners: (0..listeners).map(|_| Line(cells())).collect(),
        }
    }
    fn port_cell(&self, port: Port, index: usize) -> Option<&AtomicU64> {
        self.ports.get(port as usize).and_then(|l| l.0.get(index))
    }
    fn listener_cell(&self, listener: usize, index: usize) -> Option<&AtomicU64> {
        self.listeners.get(listener).and_then(|l| l.0.get(index))
    }
}

/// Bump a cell that only one thread ever writes. A plain load and store (no locked read-modify-write)
/// is exact with one writer, and readers never see a torn value.
#[inline]
fn bump(cell: Option<&AtomicU64>, n: u64) {
    if let Some(c) = cell {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// One protocol core's writing end. Not `Clone`, and every method takes `&mut self`: the type system
/// keeps each block to one writer, which is what makes the lock-free plain stores exact.
#[derive(Debug)]
pub struct CoreStats {
    block: Arc<CoreBlock>,
    hist: CoreHistograms,
}

impl CoreStats {
    #[inline]
    pub fn port_add(&mut self, port: Port, counter: PortCounter, n: u64) {
        bump(self.block.port_cell(port, counter as usize), n);
    }

    /// Counts one dropped packet on `port`.
    #[inline]
    pub fn count_drop(&mut self, port: Port, cause: DropCause) {
        bump(self.block.port_cell(port, PortCounter::ALL.len() + cause as usize), 1);
    }

    /// `listener` is the index in the layout's listener list; an unknown index counts nothing.
    #[inline]
    pub fn listener_add(&mut self, listener: usize, counter: ListenerCounter, n: u64) {
        bump(self.block.listener_cell(listener, counter as usize), n);
    }

    /// This core's bytes received but not yet acknowledged on `listener` (a gauge; cores are summed).
    #[inline]
    pub fn set_withheld_bytes(&mut self, listener: usize, bytes: u64) {
        if let Some(c) = self.block.listener_cell(listener, WITHHELD) {
            c.store(bytes, Ordering::Relaxed);
        }
    }

    /// Records one latency sample into this core's own histogram (no sharing, no lock).
    #[inline]
    pub fn record(&mut self, kind: Latency, nanos: u64) {
        self.hist.record(kind, nanos);
    }

    /// Hands recorded samples to the control thread. Call from the core's loop now and then (e.g. every
    /// 100 ms of its clock); never blocks and costs O(1): see `histogram`.
    pub fn publish(&mut self) {
        self.hist.publish();
    }
}

/// Which cores and listeners the registry has cells for; fixed when the box starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsLayout {
    pub cores: usize,
    pub listeners: Vec<String>,
}

/// Why a registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("hdrhistogram refused the histogram bounds: {0}")]
    Histogram(String),
}

/// The control thread's side: hands out one `CoreStats` per core and reads them all.
#[derive(Debug)]
pub struct StatsRegistry {
    layout: StatsLayout,
    blocks: Vec<Arc<CoreBlock>>,
    slots: Vec<Arc<SharedSlots>>,
    writers: Mutex<Vec<Option<CoreStats>>>,
    /// Everything ever published, merged; touched by the control thread only.
    merged: Mutex<[Recorder; Latency::ALL.len()]>,
}

impl StatsRegistry {
    pub fn new(layout: StatsLayout) -> Result<Self, StatsError> {
        let empty = Recorder::new().map_err(|e| StatsError::Histogram(format!("{e:?}")))?;
        let blocks: Vec<Arc<CoreBlock>> =
            (0..layout.cores).map(|_| Arc::new(CoreBlock::new(layout.listeners.len()))).collect();
        let slots: Vec<Arc<SharedSlots>> =
            (0..layout.cores).map(|_| Arc::new(SharedSlots::new(&empty))).collect();
        let writers = blocks
            .iter()
            .zip(&slots)
            .map(|(b, s)| {
                Some(CoreStats { block: Arc::clone(b), hist: CoreHistograms::new(Arc::clone(s), &empty) })
            })
            .collect();
        Ok(StatsRegistry {
            layout,
            blocks,
            slots,
            writers: Mutex::new(writers),
            merged: Mutex::new(std::array::from_fn(|_| empty.clone())),
        })
    }

    pub fn layout(&self) -> &StatsLayout {
        &self.layout
    }

    /// The writing end of core `core`; each is handed out once (a second call gets `None`).
    pub fn core(&self, core: usize) -> Option<CoreStats> {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        writers.get_mut(core).and_then(Option::take)
    }

    /// Records a sample that does not come from a protocol core (a takeover is timed by the runtime).
    pub fn record_off_core(&self, kind: Latency, nanos: u64) {
        let mut merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = merged.get_mut(kind as usize) {
            r.record(nanos);
        }
    }

    /// Merges what the cores have published and reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in &self.slots {
            slot.drain_into(&mut merged);
        }
        let latency = Latency::ALL
            .iter()
            .filter_map(|&k| merged.get(k as usize).map(|r| (k.as_str().to_string(), r.summary())))
            .collect();
        drop(merged);

        let read_port = |b: &CoreBlock, port: Port| {
            let get = |i: usize| b.port_cell(port, i).map_or(0, |c| c.load(Ordering::Relaxed));
            PortStats {
                rx_packets: get(PortCounter::RxPackets as usize),
                rx_bytes: get(PortCounter::RxBytes as usize),
                tx_packets: get(PortCounter::TxPackets as usize),
                tx_bytes: get(PortCounter::TxBytes as usize),
                drops: DropCause::ALL
                    .iter()
                    .map(|&c| (c.as_str().to_string(), get(PortCounter::ALL.len() + c as usize)))
                    .collect(),
            }
        };
        let cores: Vec<CoreSnapshot> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| CoreSnapshot {
                core: i,
                ports: Port::ALL.iter().map(|&p| (p.as_str().to_string(), read_port(b, p))).collect(),
            })
            .collect();
        let mut ports: BTreeMap<String, PortStats> = BTreeMap::new();
        for core in &cores {
            for (name, s) in &core.ports {
                ports.entry(name.clone()).or_default().add(s);
            }
        }
        let listeners = self
            .layout
            .listeners
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sum = |cell: usize| {
                    self.blocks
                        .iter()
                        .filter_map(|b| b.listener_cell(i, cell))
                        .fold(0u64, |acc, c| acc.wrapping_add(c.load(Ordering::Relaxed)))
                };
                let opened = sum(ListenerCounter::FlowsOpened as usize);
                let closed = sum(ListenerCounter::FlowsClosed as usize);
                ListenerStats {
                    listener: name.clone(),
                    flows_opened: opened,
                    flows_closed: closed,
                    flows_refused: sum(ListenerCounter::FlowsRefused as usize),
                    flows_reset: sum(ListenerCounter::FlowsReset as usize),
                    active_flows: opened.saturating_sub(closed),
                    withheld_bytes: sum(WITHHELD),
                    bytes_from_clients: sum(ListenerCounter::BytesFromClients as usize),
                    bytes_from_backends: sum(ListenerCounter::BytesFromBackends as usize),
                }
            })
            .collect();
        StatsSnapshot { ports, cores, listeners, latency }
    }

    /// Prometheus text exposition (format 0.0.4) of a fresh snapshot.
    pub fn prometheus_text(&self) -> String {
        prometheus::render(&self.snapshot())
    }
}

/// Traffic and drops of one port (of one core, or summed over cores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped packets by cause; every cause is present, zero or not.
    pub drops: BTreeMap<String, u64>,
}

impl PortStats {
    fn add(&mut self, other: &PortStats) {
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
        for (k, v) in &other.drops {
            let e = self.drops.entry(k.clone()).or_insert(0);
            *e = e.wrapping_add(*v);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreSnapshot {
    pub core: usize,
    pub ports: BTreeMap<String, PortStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    pub listener: String,
    pub flows_opened: u64,
    pub flows_closed: u64,
    pub flows_refused: u64,
    pub flows_reset: u64,
    pub active_flows: u64,
    pub withheld_bytes: u64,
    pub bytes_from_clients: u64,
    pub bytes_from_backends: u64,
}

/// What `stats` replies with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Per port, summed over cores.
    pub ports: BTreeMap<String, PortStats>,
    pub cores: Vec<CoreSnapshot>,
    pub listeners: Vec<ListenerStats>,
    /// Per latency kind (`ack_hold`, `replication_rtt`, `takeover`), since the box started.
    pub latency: BTreeMap<String, LatencySummary>,
}
