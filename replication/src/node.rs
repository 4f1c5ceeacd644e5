//! The two ends of replication as a box runs them: the primary's [`PrimaryLink`] (core A's
//! [`Replicator`]) and the standby's [`StandbyNode`] (channel, flow store and failure detector on the
//! replication port).
//!
//! Both are sans-IO apart from the port they own: time comes in as an argument, so the simulator drives
//! them on its virtual clock exactly as the runtime does on the monotonic one.

use crate::channel::{Channel, ChannelConfig, ConfigError, OfferError};
use crate::delta::{Direction, FlowKey, HalfProgress, Policy, Record, RelayOffsets, Role};
use crate::detector::{Detector, DetectorConfig, DetectorConfigError, Event};
use crate::store::{FlowStore, StoreConfig, StoredFlow};
use dataplane::buf::PacketBuf;
use dataplane::gate::AckPolicy;
use dataplane::port::Port;
use dataplane::proxy::replicate::{FlowOpened, HalfState, RelayDir, ReplicateError, Replicator, Stored};
use dataplane::time::Instant;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

fn ip_u32(a: &SocketAddrV4) -> u32 {
    u32::from(*a.ip())
}

/// The wire policy of a dataplane policy.
pub fn policy_of(p: AckPolicy) -> Policy {
    match p {
        AckPolicy::None => Policy::None,
        AckPolicy::Backend => Policy::Backend,
        AckPolicy::Replica => Policy::Replica,
        AckPolicy::App => Policy::App,
    }
}

/// The dataplane policy of a wire policy.
pub fn ack_policy_of(p: Policy) -> AckPolicy {
    match p {
        Policy::None => AckPolicy::None,
        Policy::Backend => AckPolicy::Backend,
        Policy::Replica => AckPolicy::Replica,
        Policy::App => AckPolicy::App,
    }
}

/// The wire form of a half's progress.
pub fn half_progress(h: &HalfState) -> HalfProgress {
    HalfProgress {
        peer_acked: h.peer_acked,
        snd_nxt: h.snd_nxt,
        rcv_nxt: h.rcv_nxt,
        snd_wnd: h.snd_wnd,
        rcv_wnd: h.rcv_wnd,
        ts_recent: h.ts_recent,
        ts_val: h.ts_val,
    }
}

/// What a confirmation of the primary's channel stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A flow-opened record: the flow's SYN-ACK may go.
    Flow(u64),
    /// Bytes stored (policy replica).
    Stored(Stored),
    /// Nobody waits for it (closed, progress).
    Nothing,
}

/// Moves a channel's frames between it and a port; returns frames moved.
fn pump<P: Port, T: Copy>(
    ch: &mut Channel<T>,
    port: &mut P,
    rx: &mut Vec<PacketBuf>,
    tx: &mut Vec<PacketBuf>,
    now: Instant,
) -> usize {
    let mut work = port.recv(now, rx, 64);
    for buf in rx.drain(..) {
        // Malformed, stale-epoch and duplicate frames are counted by the channel and dropped.
        let _ = ch.handle_frame(now, buf.data());
    }
    while let Some(frame) = ch.poll_transmit(now) {
        let Some(mut buf) = port.alloc() else { break };
        if buf.extend_from_slice(frame).is_ok() {
            tx.push(buf);
        }
        work += 1;
    }
    if !tx.is_empty() {
        port.send(now, tx);
        // A full ring drops the frame; the channel retransmits it.
        tx.clear();
    }
    work
}

/// The primary's end of replication: what core A calls to replicate flows.
pub struct PrimaryLink<P> {
    ch: Channel<Token>,
    confirmed: VecDeque<u64>,
    stored: VecDeque<Stored>,
    port: P,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    last_peer_heartbeat: Option<Instant>,
    heartbeat_timeout: dataplane::time::Duration,
    attached: bool,
    /// The highest epoch heard from a peer that took over from this box (0: none).
    superseded: Arc<AtomicU32>,
    /// Set by the box for a planned switchover, once the standby has everything: the heartbeats then ask
    /// the standby to take over now ([`crate::delta::hb_flags::HAND_OVER`]).
    hand_over: Arc<AtomicBool>,
}

impl<P> std::fmt::Debug for PrimaryLink<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryLink").field("last_peer_heartbeat", &self.last_peer_heartbeat).finish()
    }
}

impl<P: Port> PrimaryLink<P> {
    pub fn new(cfg: ChannelConfig, epoch: u32, port: P, now: Instant) -> Result<Self, ConfigError> {
        let heartbeat_timeout = cfg.heartbeat_interval * 5;
        let mut ch = Channel::new(cfg, epoch, now)?;
        ch.set_status(Role::Primary, 0, 0);
        Ok(PrimaryLink {
            ch,
            confirmed: VecDeque::new(),
            stored: VecDeque::new(),
            port,
            rx: Vec::new(),
            tx: Vec::new(),
            last_peer_heartbeat: None,
            heartbeat_timeout,
            attached: false,
            superseded: Arc::new(AtomicU32::new(0)),
            hand_over: Arc::new(AtomicBool::new(false)),
        })
    }

    fn offer(&mut self, now: Instant, rec: &Record<'_>, token: Token) -> Result<(), ReplicateError> {
        match self.ch.offer(now, rec, token) {
            Ok(()) => Ok(()),
            Err(OfferError::WindowFull) => Err(ReplicateError::Busy),
            Err(OfferError::TooLarge) => Err(ReplicateError::Unprotectable),
        }
    }
}

impl<P: Port> Replicator for PrimaryLink<P> {
    fn flow_opened(&mut self, now: Instant, f: &FlowOpened<'_>) -> Result<(), ReplicateError> {
        let key = FlowKey {
            client_ip: ip_u32(&f.client),
            client_port: f.client.port(),
            vip: ip_u32(&f.vip),
            vip_port: f.vip.port(),
            snat_ip: ip_u32(&f.snat),
            snat_port: f.snat.port(),
            backend_ip: ip_u32(&f.backend),
            backend_port: f.backend.port(),
        };
        let rec = Record::FlowOpened {
            flow: f.flow,
            key,
            policy: policy_of(f.policy),
            offsets: RelayOffsets::default(),
            client_half: f.client_half,
            server_half: f.server_half,
        };
        self.offer(now, &rec, Token::Flow(f.flow))
    }

    fn flow_closed(&mut self, now: Instant, flow: u64) -> Result<(), ReplicateError> {
        self.offer(now, &Record::Closed { flow }, Token::Nothing)
    }

    fn progress(
        &mut self,
        now: Instant,
        flow: u64,
        client: &HalfState,
        server: &HalfState,
    ) -> Result<(), ReplicateError> {
        let rec = Record::Progress { flow, client: half_progress(client), server: half_progress(server) };
        self.offer(now, &rec, Token::Nothing)
    }

    fn data(
        &mut self,
        now: Instant,
        flow: u64,
        dir: RelayDir,
        seq: u32,
        end: u64,
        bytes: &[u8],
    ) -> Result<(), ReplicateError> {
        let wire_dir = match dir {
            RelayDir::ClientToServer => Direction::ClientToServer,
            RelayDir::ServerToClient => Direction::ServerToClient,
        };
        let token = Token::Stored(Stored { flow, dir, up_to: end });
        match self.ch.offer_data(now, flow, wire_dir, seq, bytes, token) {
            Ok(()) => Ok(()),
            Err(OfferError::WindowFull) => Err(ReplicateError::Busy),
            Err(OfferError::TooLarge) => Err(ReplicateError::Unprotectable),
        }
    }

    fn poll_stored(&mut self) -> Option<Stored> {
        self.stored.pop_front()
    }

    fn snapshot_mark(
        &mut self,
        now: Instant,
        begin: bool,
        id: u32,
        flows: u32,
    ) -> Result<(), ReplicateError> {
        let rec = if begin { Record::SnapshotBegin { id, flows } } else { Record::SnapshotEnd { id, flows } };
        self.offer(now, &rec, Token::Nothing)
    }

    fn is_synced(&self) -> bool {
        self.ch.is_idle() && self.confirmed.is_empty() && self.stored.is_empty()
    }

    fn progress_delay(&self) -> dataplane::time::Duration {
        self.ch.config().flush_delay
    }

    fn poll_confirmed(&mut self) -> Option<u64> {
        self.confirmed.pop_front()
    }

    fn poll(&mut self, now: Instant) -> usize {
        let mut work = 0;
        let flags =
            if self.hand_over.load(Ordering::Acquire) { crate::delta::hb_flags::HAND_OVER } else { 0 };
        self.ch.set_status(Role::Primary, flags, 0);
        // Drain what queued up (bounded): a primary woken from a stop must hear the later epoch among the
        // hundreds of heartbeats in its ring on its first step, not after a burst of 64 per step.
        for _ in 0..16 {
            let w = pump(&mut self.ch, &mut self.port, &mut self.rx, &mut self.tx, now);
            work += w;
            if w < 64 {
                break;
            }
        }
        while let Some(token) = self.ch.poll_confirmed() {
            match token {
                Token::Flow(flow) => self.confirmed.push_back(flow),
                Token::Stored(s) => self.stored.push_back(s),
                Token::Nothing => {}
            }
        }
        while let Some((at, hb)) = self.ch.poll_heartbeat() {
            if hb.epoch > self.ch.epoch() {
                // A box in a later epoch took over while this one was stopped or cut off: this box is
                // stale, and whoever holds the flag must stop it transmitting.
                self.superseded.fetch_max(hb.epoch, Ordering::AcqRel);
                continue;
            }
            self.last_peer_heartbeat = Some(at);
        }
        self.attached = self
            .last_peer_heartbeat
            .is_some_and(|t| now.saturating_duration_since(t) <= self.heartbeat_timeout);
        // The primary's channel carries no records from the standby; drain anything delivered.
        while self.ch.poll_deliver(now).is_some() {}
        work
    }

    fn poll_at(&self) -> Instant {
        self.ch.poll_timeout()
    }

    fn standby_attached(&self) -> bool {
        // Heard within five heartbeat intervals, as of the last poll.
        self.attached
    }
}

impl<P> PrimaryLink<P> {
    /// Fencing: becomes the later epoch of a peer that took over from this box (0 until then). Shared,
    /// so the runtime can watch it after the link has moved into core A.
    pub fn superseded(&self) -> Arc<AtomicU32> {
        self.superseded.clone()
    }

    /// A planned switchover: set it once [`Replicator::is_synced`] holds with intake stopped, and the
    /// next heartbeats tell the standby to take over now; clear it to call the switchover off. Shared,
    /// so the box can set it after the link has moved into core A.
    pub fn hand_over_flag(&self) -> Arc<AtomicBool> {
        self.hand_over.clone()
    }

    /// The epoch this link speaks in.
    pub fn epoch(&self) -> u32 {
        self.ch.epoch()
    }

    /// How long without the standby's heartbeats before it counts as gone.
    pub fn heartbeat_timeout(&self) -> dataplane::time::Duration {
        self.heartbeat_timeout
    }
}

/// Errors building a standby.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("replication channel: {0}")]
    Channel(#[from] ConfigError),
    #[error("failure detector: {0}")]
    Detector(#[from] DetectorConfigError),
}

/// The standby's end: receives deltas into its store, watches the primary, and says when to take over.
pub struct StandbyNode<P> {
    ch: Channel<u64>,
    port: P,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    store: FlowStore,
    detector: Detector,
    peer_box: u32,
    apply_errors: u64,
    heard_primary: bool,
    handed_over: bool,
    store_cfg: StoreConfig,
}

impl<P> std::fmt::Debug for StandbyNode<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandbyNode").field("flows", &self.store.stats()).finish()
    }
}

impl<P: Port> StandbyNode<P> {
    pub fn new(
        ch_cfg: ChannelConfig,
        det_cfg: DetectorConfig,
        store_cfg: StoreConfig,
        epoch: u32,
        peer_box: u32,
        port: P,
        now: Instant,
    ) -> Result<Self, NodeError> {
        let box_id = ch_cfg.box_id;
        let mut ch = Channel::new(ch_cfg, epoch, now)?;
        ch.set_status(Role::Standby, 0, 0);
        let detector = Detector::new(det_cfg, box_id, Role::Standby, epoch, now)?;
        Ok(StandbyNode {
            ch,
            port,
            rx: Vec::new(),
            tx: Vec::new(),
            store: FlowStore::new(store_cfg),
            store_cfg,
            detector,
            peer_box,
            apply_errors: 0,
            heard_primary: false,
            handed_over: false,
        })
    }

    /// Runs the channel and the detector. Returns `Some(epoch)` when the primary is dead by both paths:
    /// the caller then takes over with [`StandbyNode::take_flows`].
    pub fn step(&mut self, now: Instant) -> (usize, Option<u32>) {
        let mut work = 0;
        // Drain what queued up (bounded), as the primary does: after a long pause (a box's first step
        // builds its cores) a burst of 64 frames may hold only record frames, and the heartbeats behind
        // them must count now, or the detector sees a silent primary that is alive.
        for _ in 0..16 {
            let w = pump(&mut self.ch, &mut self.port, &mut self.rx, &mut self.tx, now);
            work += w;
            while let Some(records) = self.ch.poll_deliver(now) {
                for rec in records {
                    work += 1;
                    match rec {
                        Ok(rec) => {
                            if self.store.apply(&rec).is_err() {
                                self.apply_errors += 1;
                            }
                        }
                        Err(_) => self.apply_errors += 1,
                    }
                }
            }
            if w < 64 {
                break;
            }
        }
        let mut takeover = None;
        while let Some((at, hb)) = self.ch.poll_heartbeat() {
            if hb.epoch > self.ch.epoch() && hb.role == Role::Primary && self.detector.role() == Role::Standby
            {
                // A primary serves in a later epoch: a restarted old primary that starts as standby, or
                // a standby whose primary was superseded. What it stored belongs to an older epoch;
                // join the later one on a fresh channel with an empty store (the primary then sends the
                // bulk copy).
                if self.adopt_epoch(now, hb.epoch).is_err() {
                    continue;
                }
            }
            self.heard_primary = true;
            if let Some(Event::TakeOver { epoch }) = self.detector.on_heartbeat(at, self.peer_box, &hb) {
                takeover = Some(epoch);
            }
            if hb.epoch == self.ch.epoch()
                && hb.role == Role::Primary
                && hb.flags & crate::delta::hb_flags::HAND_OVER != 0
                && takeover.is_none()
            {
                // The primary stopped intake and saw everything it offered confirmed: take over now.
                if let Some(Event::TakeOver { epoch }) = self.detector.take_over_now() {
                    self.handed_over = true;
                    takeover = Some(epoch);
                }
            }
        }
        self.ch.set_status(Role::Standby, 0, self.store.stats().flows as u32);
        // Until a primary has been heard there is nothing to watch (and nothing to take over with).
        if self.heard_primary {
            if let Some(Event::TakeOver { epoch }) = self.detector.handle_timeout(now) {
                takeover = Some(epoch);
            }
        }
        (work, takeover)
    }

    /// Joins a primary's later epoch: a fresh channel, detector and store in it.
    fn adopt_epoch(&mut self, now: Instant, epoch: u32) -> Result<(), NodeError> {
        let ch_cfg = *self.ch.config();
        let mut ch = Channel::new(ch_cfg, epoch, now)?;
        ch.set_status(Role::Standby, 0, 0);
        let detector = Detector::new(*self.detector.config(), ch_cfg.box_id, Role::Standby, epoch, now)?;
        self.ch = ch;
        self.detector = detector;
        self.store = FlowStore::new(self.store_cfg);
        self.rx.clear();
        Ok(())
    }

    /// The epoch this standby follows (a later one than it started in once it adopted a primary's).
    pub fn epoch(&self) -> u32 {
        self.ch.epoch()
    }

    /// Whether the last takeover was a planned switchover the primary asked for (not a failure).
    pub fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// Whether a primary's heartbeat ever arrived. A standby that never heard one holds no state worth
    /// taking over with, and must not claim addresses a primary may be about to use.
    pub fn has_heard_primary(&self) -> bool {
        self.heard_primary
    }

    /// Reports the second path: whether the VIP's holder answered on the client LAN.
    pub fn on_lan_probe(&mut self, now: Instant, answered: bool) -> Option<u32> {
        if !self.heard_primary {
            return None;
        }
        match self.detector.on_lan_probe(now, answered) {
            Some(Event::TakeOver { epoch }) => Some(epoch),
            _ => None,
        }
    }

    /// When `step` must run again at the latest.
    pub fn poll_at(&self) -> Instant {
        self.ch.poll_timeout().min(self.detector.poll_timeout())
    }

    /// Every stored flow, for the takeover; the store is empty afterwards.
    pub fn take_flows(&mut self) -> Vec<StoredFlow> {
        self.store.drain_for_takeover().collect()
    }

    /// A planned switchover, standby side: take over now, without waiting for the primary to fail.
    /// Returns the new epoch, or `None` when this node is not a standby that heard a primary.
    pub fn take_over_now(&mut self) -> Option<u32> {
        if !self.heard_primary {
            return None;
        }
        match self.detector.take_over_now() {
            Some(Event::TakeOver { epoch }) => Some(epoch),
            _ => None,
        }
    }

    /// The node's replication port and channel settings, for the primary this box becomes after a
    /// takeover (a standby that joins later talks to it on the same link).
    pub fn into_link(self) -> (ChannelConfig, P) {
        (*self.ch.config(), self.port)
    }

    /// Marks the takeover done (the detector's role becomes primary).
    pub fn takeover_complete(&mut self, now: Instant) {
        self.detector.takeover_complete(now);
    }

    pub fn flows(&self) -> usize {
        self.store.stats().flows
    }

    /// The replication port's counters (what the primary's deltas cost on the link).
    pub fn port_stats(&self) -> dataplane::port::PortStats {
        self.port.stats()
    }

    /// The flow store, for inspection (statistics, a simulator's invariant checks).
    pub fn store(&self) -> &FlowStore {
        &self.store
    }

    pub fn apply_errors(&self) -> u64 {
        self.apply_errors
    }

    pub fn role(&self) -> Role {
        self.detector.role()
    }
}
