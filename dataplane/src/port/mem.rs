//! In-memory ports: point-to-point links and learning switches, with a seeded fault injector per sender.
//!
//! A *segment* joins N [`MemPort`]s. [`link`] makes a segment of two that always delivers to the other end;
//! [`switch`] makes a segment of N that learns which port each source MAC lives behind and floods
//! broadcast, multicast and unknown destinations. Learning follows the latest source address, so an address
//! that moves to another box (takeover by gratuitous ARP) is relearned from its first frame.
//!
//! Each port has a bounded inbox (a lock-free queue) and applies its own [`FaultConfig`] to what it sends:
//! loss, duplication, reordering, corruption, delay with jitter and an optional bandwidth cap, all drawn from
//! a ChaCha RNG seeded by the test, and all measured against the `now` passed in. So the same segment works
//! on one thread with a virtual clock (the simulator; a run replays exactly from its seed) and across
//! threads with a real clock (the runtime's cores). [`SegmentControl`] takes a port's link down and up at
//! runtime from anywhere.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{max_frame_len, Port, PortInfo, PortStats};
use crate::buf::{PacketBuf, Pool};
use crate::time::{Duration, Instant};

/// Faults applied to the frames one port sends. Probabilities are per frame, in `0.0..=1.0` (values outside
/// are clamped).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a frame is held back by `reorder_delay` so that frames sent after it overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Probability that one byte of the frame is flipped.
    pub corrupt: f64,
    /// Propagation delay of every frame.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`; frames stay in order (only `reorder` reorders).
    pub jitter: Duration,
    /// Bandwidth cap in bits per second: frames are serialized one after the other at this rate.
    pub rate_bps: Option<u64>,
}

impl FaultConfig {
    /// A perfect wire: no loss, no delay.
    pub const NONE: FaultConfig = FaultConfig {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_delay: Duration::ZERO,
        corrupt: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        rate_bps: None,
    };
}

/// Shape of a segment's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemConfig {
    /// Name of the segment; port `i` is called `{name}.{i}`.
    pub name: String,
    /// Frames each port's inbox holds, in flight or delayed; a full inbox pushes back on the sender.
    pub queue_len: usize,
    pub mtu: usize,
    /// Seed of the fault injectors (each port draws from its own stream of it).
    pub seed: u64,
}

impl MemConfig {
    pub fn new(name: &str, seed: u64) -> MemConfig {
        MemConfig { name: name.to_owned(), queue_len: 1024, mtu: 1500, seed }
    }
}

/// Makes a point-to-point link: what one end sends, the other receives.
pub fn link(pool: &Pool, cfg: &MemConfig) -> (MemPort, MemPort, SegmentControl) {
    let (tx_a, rx_a) = crossbeam_channel::bounded(cfg.queue_len.max(1));
    let (tx_b, rx_b) = crossbeam_channel::bounded(cfg.queue_len.max(1));
    let seg = new_segment(vec![tx_a, tx_b], Forwarding::PointToPoint);
    let a = new_port(&seg, 0, rx_a, pool, cfg);
    let b = new_port(&seg, 1, rx_b, pool, cfg);
    (a, b, SegmentControl { seg })
}

/// Makes a learning switch with `n` ports.
pub fn switch(pool: &Pool, cfg: &MemConfig, n: usize) -> (Vec<MemPort>, SegmentControl) {
    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| crossbeam_channel::bounded(cfg.queue_len.max(1))).unzip();
    let seg = new_segment(inboxes, Forwarding::Learning);
    let ports = receivers.into_iter().enumerate().map(|(i, rx)| new_port(&seg, i, rx, pool, cfg)).collect();
    (ports, SegmentControl { seg })
}

fn new_segment(inboxes: Vec<Sender<InFlight>>, fwd: Forwarding) -> Arc<Segment> {
    let n = inboxes.len();
    Arc::new(Segment {
        fwd,
        inboxes,
        up: (0..n).map(|_| AtomicBool::new(true)).collect(),
        macs: MacTable::new(),
    })
}

fn new_port(
    seg: &Arc<Segment>,
    i: usize,
    inbox: Receiver<InFlight>,
    pool: &Pool,
    cfg: &MemConfig,
) -> MemPort {
    let queue_len = cfg.queue_len.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(i as u64);
    MemPort {
        seg: Arc::clone(seg),
        index: i,
        inbox,
        pending: BinaryHeap::with_capacity(queue_len),
        pending_cap: queue_len,
        pool: pool.clone(),
        faults: FaultConfig::NONE,
        rng,
        fifo_floor: Instant::ZERO,
        wire_free_at: Instant::ZERO,
        seq: 0,
        stats: PortStats::default(),
        name: format!("{}.{}", cfg.name, i),
        mac: None,
        mtu: cfg.mtu,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    PointToPoint,
    Learning,
}

#[derive(Debug)]
struct Segment {
    fwd: Forwarding,
    inboxes: Vec<Sender<InFlight>>,
    up: Vec<AtomicBool>,
    macs: MacTable,
}

impl Segment {
    fn is_up(&self, port: usize) -> bool {
        self.up.get(port).is_some_and(|u| u.load(Ordering::Acquire))
    }
}

/// Runtime control of a segment, usable from any thread.
#[derive(Debug, Clone)]
pub struct SegmentControl {
    seg: Arc<Segment>,
}

impl SegmentControl {
    /// Takes port `port`'s link down or up. While down, the port's frames and frames to it (including those
    /// already in flight when they come due) are dropped and counted.
    pub fn set_up(&self, port: usize, up: bool) {
        if let Some(u) = self.seg.up.get(port) {
            u.store(up, Ordering::Release);
        }
    }

    pub fn is_up(&self, port: usize) -> bool {
        self.seg.is_up(port)
    }

    /// The port a switch last saw `mac` come from.
    pub fn learned(&self, mac: [u8; 6]) -> Option<usize> {
        self.seg.macs.lookup(mac)
    }

    pub fn ports(&self) -> usize {
        self.seg.inboxes.len()
    }
}

/// A frame on its way, with the time it is due at the receiver.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    src: usize,
    seq: u64,
    buf: PacketBuf,
}

impl InFlight {
    fn key(&self) -> (Instant, usize, u64) {
        (self.at, self.src, self.seq)
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    // Reversed, so that the max-heap pops the earliest frame first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.key().cmp(&self.key())
    }
}

/// A learning table that needs no lock: open addressing over atomic words, each holding a MAC (high 48 bits)
/// and port + 1 (low 16 bits; 0 is an empty slot). When it is full, unknown addresses are flooded.
#[derive(Debug)]
struct MacTable {
    slots: Box<[AtomicU64]>,
}

/// Destinations whose inbox room `send` tracks within one burst.
const CLAIM_TRACKED: usize = 64;

const MAC_SLOTS: usize = 1024;
const MAC_PROBES: usize = 32;

impl MacTable {
    fn new() -> MacTable {
        MacTable { slots: (0..MAC_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn key(mac: [u8; 6]) -> u64 {
        let [a, b, c, d, e, f] = mac;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    }

    fn home(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % MAC_SLOTS
    }

    fn lookup(&self, mac: [u8; 6]) -> Option<usize> {
        let key = Self::key(mac);
        let home = Self::home(key);
        for i in 0..MAC_PROBES {
            let v = self.slots.get((home + i) % MAC_SLOTS)?.load(Ordering::Acquire);
            if v == 0 {
                return None;
            }
            if v >> 16 == key {
                return ((v & 0xffff) as usize).checked_sub(1);
            }
        }
        None
    }

    fn learn(&self, mac: [u8; 6], port: usize) {
        let Ok(port1) = u16::try_from(port + 1) else { return };
        let key = Self::key(mac);
        let entry = (key << 16) | u64::from(port1);
        let home = Self::home(key);
        for i in 0..MAC_PROBES {
            let Some(slot) = self.slots.get((home + i) % MAC_SLOTS) else { return };
            let mut v = slot.load(Ordering::Acquire);
            if v == 0 {
                match slot.compare_exchange(0, entry, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
            if v >> 16 == key {
                if v != entry {
                    slot.store(entry, Ordering::Release);
                }
                return;
            }
        }
    }
}

fn is_group(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 == 1)
}

fn mac_at(frame: &[u8], at: usize) -> Option<[u8; 6]> {
    frame.get(at..at + 6).and_then(|s| <[u8; 6]>::try_from(s).ok())
}

/// One end of an in-memory segment.
#[derive(Debug)]
pub struct MemPort {
    seg: Arc<Segment>,
    index: usize,
    inbox: Receiver<InFlight>,
    /// Frames that arrived and wait for their due time, earliest first.
    pending: BinaryHeap<InFlight>,
    pending_cap: usize,
    pool: Pool,
    faults: FaultConfig,
    rng: ChaCha8Rng,
    /// Due time of the last frame sent in order: later frames are never due before it.
    fifo_floor: Instant,
    /// When the bandwidth-capped wire is free again.
    wire_free_at: Instant,
    seq: u64,
    stats: PortStats,
    name: String,
    mac: Option<[u8; 6]>,
    mtu: usize,
}

impl MemPort {
    /// Sets the faults applied to what this port sends from now on.
    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.faults = faults;
    }

    pub fn faults(&self) -> FaultConfig {
        self.faults
    }

    /// Sets the hardware address [`Port::info`] reports.
    pub fn set_mac(&mut self, mac: Option<[u8; 6]>) {
        self.mac = mac;
    }

    /// This port's number in its segment.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Moves arrived frames from the inbox to the pending heap, as far as the heap has room.
    fn drain_inbox(&mut self) {
        while self.pending.len() < self.pending_cap {
            match self.inbox.try_recv() {
                Ok(f) => self.pending.push(f),
                Err(_) => break,
            }
        }
    }

    fn roll(&mut self, p: f64) -> bool {
        // Always draw (once faults are on at all), so that the random stream does not depend on which
        // faults are enabled.
        let x: f64 = self.rng.random();
        x < p
    }

    fn uniform(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let x = self.rng.random_range(0..=nanos);
        Duration::from_nanos(x)
    }

    /// Where a frame from this port goes, or `None` to flood.
    fn destination(&self, frame: &[u8]) -> Option<usize> {
        match self.seg.fwd {
            Forwarding::PointToPoint => Some(1 - self.index.min(1)),
            Forwarding::Learning => {
                let dst = mac_at(frame, 0)?;
                if is_group(&dst) {
                    return None;
                }
                self.seg.macs.lookup(dst)
            }
        }
    }

    /// Queues `buf` to `dst`, counting a drop when it is down or full.
    fn deliver(&mut self, dst: usize, at: Instant, buf: PacketBuf) {
        if !self.seg.is_up(dst) {
            self.stats.tx_dropped_link_down += 1;
            return;
        }
        let Some(inbox) = self.seg.inboxes.get(dst) else { return };
        self.seq = self.seq.wrapping_add(1);
        let f = InFlight { at, src: self.index, seq: self.seq, buf };
        match inbox.try_send(f) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.tx_dropped_queue_full += 1
            }
        }
    }

    /// Sends one taken frame through the injector.
    fn transmit(&mut self, now: Instant, mut buf: PacketBuf, dst: Option<usize>) {
        let f = self.faults;
        if f == FaultConfig::NONE {
            if self.seg.is_up(self.index) {
                let at = now.max(self.fifo_floor);
                self.fifo_floor = at;
                self.forward(at, buf, dst);
            } else {
                self.stats.tx_dropped_link_down += 1;
            }
            return;
        }
        let lost = self.roll(f.loss);
        let corrupt = self.roll(f.corrupt);
        let reorder = self.roll(f.reorder);
        let dup = self.roll(f.duplicate);
        let jitter = self.uniform(f.jitter);
        let flip_at: usize = self.rng.random_range(0..buf.len().max(1));
        let flip_with: u8 = self.rng.random_range(1..=255);

        if !self.seg.is_up(self.index) {
            self.stats.tx_dropped_link_down += 1;
            return;
        }
        if lost {
            self.stats.fault_lost += 1;
            return;
        }
        if corrupt {
            if let Some(b) = buf.data_mut().get_mut(flip_at) {
                *b ^= flip_with;
                self.stats.fault_corrupted += 1;
            }
        }
        let mut start = now;
        if let Some(rate) = f.rate_bps.filter(|r| *r > 0) {
            let bits = (buf.len() as u128).saturating_mul(8_000_000_000);
            let ser = Duration::from_nanos(u64::try_from(bits / u128::from(rate)).unwrap_or(u64::MAX));
            self.wire_free_at = self.wire_free_at.max(now) + ser;
            start = self.wire_free_at;
        }
        let mut at = (start + f.delay + jitter).max(self.fifo_floor);
        if reorder {
            at += f.reorder_delay;
            self.stats.fault_reordered += 1;
        } else {
            self.fifo_floor = at;
        }
        if dup {
            match buf.try_clone() {
                Some(copy) => {
                    self.stats.fault_duplicated += 1;
                    self.forward(at, copy, dst);
                }
                None => self.stats.tx_dropped_no_buffer += 1,
            }
        }
        self.forward(at, buf, dst);
    }

    fn forward(&mut self, at: Instant, buf: PacketBuf, dst: Option<usize>) {
        if let Some(d) = dst {
            self.deliver(d, at, buf);
            return;
        }
        self.stats.flooded += 1;
        let n = self.seg.inboxes.len();
        let last = (0..n).rev().find(|&i| i != self.index);
        for i in 0..n {
            if i == self.index {
                continue;
            }
            if Some(i) == last {
                self.deliver(i, at, buf);
                return;
            }
            match buf.try_clone() {
                Some(copy) => self.deliver(i, at, copy),
                None => self.stats.tx_dropped_no_buffer += 1,
            }
        }
    }
}

impl Port for MemPort {
    fn recv(&mut self, now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        self.drain_inbox();
        let mut n = 0;
        while n < max && self.pending.peek().is_some_and(|f| f.at <= now) {
            let Some(f) = self.pending.pop() else { break };
            if !self.seg.is_up(self.index) {
                self.stats.rx_dropped_link_down += 1;
                continue;
            }
            if f.buf.len() > max_frame_len(self.mtu) {
                self.stats.rx_dropped_oversize += 1;
                continue;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += f.buf.len() as u64;
            out.push(f.buf);
            n += 1;
        }
        // Refill from the inbox so that senders see room as soon as frames leave.
        self.drain_inbox();
        n
    }

    fn send(&mut self, now: Instant, pkts: &mut Vec<PacketBuf>) -> usize {
        // Count how many frames from the front fit in their destinations' inboxes, so that a full ring
        // pushes back instead of dropping. Exact on a link (one producer per inbox); on a switch other
        // ports may fill an inbox meanwhile, and those losses are counted as `tx_dropped_queue_full`.
        let mut claimed = [0usize; CLAIM_TRACKED];
        let mut taken = 0;
        for (i, frame) in pkts.iter().enumerate() {
            if let Some(d) = self.destination(frame.data()) {
                let Some(inbox) = self.seg.inboxes.get(d) else { break };
                let used = inbox.len() + claimed.get(d).copied().unwrap_or(0);
                if used >= inbox.capacity().unwrap_or(usize::MAX) {
                    self.stats.tx_ring_full += (pkts.len() - i) as u64;
                    break;
                }
                if let Some(c) = claimed.get_mut(d) {
                    *c += 1;
                }
            }
            taken += 1;
        }
        for buf in pkts.drain(..taken) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += buf.len() as u64;
            if buf.len() > max_frame_len(self.mtu) {
                self.stats.tx_dropped_oversize += 1;
                continue;
            }
            if self.seg.fwd == Forwarding::Learning {
                if let Some(src) = mac_at(buf.data(), 6).filter(|m| !is_group(m)) {
                    self.seg.macs.learn(src, self.index);
                }
            }
            let dst = self.destination(buf.data());
            self.transmit(now, buf, dst);
        }
        taken
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    fn info(&self) -> PortInfo {
        PortInfo { name: self.name.clone(), mac: self.mac, mtu: self.mtu }
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn poll_at(&mut self) -> Option<Instant> {
        self.drain_inbox();
        self.pending.peek().map(|f| f.at)
    }
}
