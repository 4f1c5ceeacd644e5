//! Core A: the client-facing protocol core.
//!
//! Owns the client port and the client half of every flow. Per step: receive a burst of frames (ARP and
//! ICMP for the VIP answered here, TCP fed to the flows' engines), take core B's messages, run due timers,
//! then service every flow that was touched: pump bytes between the engine and core B (or the hosted
//! application), move the ack gate, and transmit what the engine has to say.

use super::chunk::{Backlog, Chunk, ChunkPool};
use super::msg::{ToClient, ToServer, MAX_CHUNK};
use super::netio::NetIo;
use super::replicate::{FlowOpened, HalfState, RelayDir, ReplicateError, Replicator, Stored};
use super::timers::TimerQueue;
use super::{offset_at, resync_backlog, segment_error_name, seq_at, take_relayed, ProxyConfig};
use crate::app::{Accepted, AppEvent, Application};
use crate::balance::{BackendId, Pool, DEFAULT_TABLE_SIZE};
use crate::flow::{ClientKey, FlowId, FlowTable, InsertError};
use crate::gate::{AckGate, AckPolicy};
use crate::port::Port;
use crate::step::{StepOutcome, Steppable};
use crate::tcp::{self, Connection, Event, SegmentError, State};
use crate::time::Instant;
use crate::wire::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame_with, ArpOperation, ArpRepr,
    EthernetAddress, FrameHeader, FramePayload, Ipv4Address, Ipv4Payload, TcpFlags, TcpOptions, TcpRepr,
};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

mod control;

/// Counters of core A.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub flows_opened: u64,
    pub flows_established: u64,
    pub flows_closed: u64,
    pub flows_reset: u64,
    /// SYNs refused with a RST: no backend reachable or none eligible.
    pub flows_refused: u64,
    /// SYNs dropped because the flow table is full (the client retries).
    pub table_full: u64,
    /// SYNs to a VIP port without a listener (answered with RST).
    pub no_listener: u64,
    /// Segments for no known flow (answered with RST unless they were RSTs).
    pub stray_segments: u64,
    /// Segments for a flow whose backend connection is still being set up (the client retransmits).
    pub pending_drops: u64,
    /// Segments the engines refused, by reason.
    pub segment_errors: BTreeMap<&'static str, u64>,
    pub arp_replies: u64,
    pub icmp_replies: u64,
    /// Frames for other addresses or protocols this core does not serve.
    pub ignored_frames: u64,
    /// Messages from core B naming a flow that is gone.
    pub stale_messages: u64,
    /// Messages held because the channel to core B was full.
    pub backpressure: u64,
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
    pub app_aborts: u64,
    /// Flows served without standby protection because their state could not be replicated.
    pub unprotected: u64,
    /// Relayed bytes that arrived beyond the expected offset (a bug if ever non-zero).
    pub relay_gaps: u64,
    /// Flows opened while replication was configured but no standby answered (served unprotected).
    pub degraded_flows: u64,
    /// Policy-replica flows that fell back to the backend gate because the standby went away.
    pub replica_fallbacks: u64,
    /// Bulk copies completed for standbys that (re)joined, and the flows they carried.
    pub snapshots: u64,
    pub snapshot_flows: u64,
}

fn count(map: &mut BTreeMap<&'static str, u64>, what: &'static str) {
    *map.entry(what).or_insert(0) += 1;
}

enum Phase {
    /// The SYN waits for core B to connect to the backend.
    Pending { syn: TcpRepr<'static>, aborted: bool },
    /// The client half's engine runs.
    Open(Box<Connection>),
}

struct ClientFlow {
    listener: u16,
    policy: AckPolicy,
    backend: Option<BackendId>,
    peer_mac: EthernetAddress,
    phase: Phase,
    /// Core B's id of the server half.
    server: Option<u64>,
    gate: Option<AckGate>,
    /// Client stream bytes handed to core B or the application.
    c2s_sent: u64,
    /// What the backend acknowledged (or the application committed) of the client stream, FIN as one.
    c2s_done: u64,
    fin_forwarded: bool,
    /// Backend bytes not yet in the engine's send buffer.
    s2c_backlog: Backlog,
    s2c_fin: bool,
    s2c_closed: bool,
    /// What the client acknowledged of the backend stream, as last told to core B.
    s2c_acked_told: u64,
    /// Replication of the flow: its SYN-ACK waits for the standby.
    standby: Standby,
    /// The server half's saved engine as core B sent it, for the standby's records.
    saved_server: Vec<u8>,
    /// Whether the standby has the client half as established (a second flow-opened record).
    standby_established: bool,
    /// FINs (received, queued) the standby knows of; a change sends it the flow again.
    fins_saved: (bool, bool),
    /// The server half changed (a FIN at core B): the standby gets the flow again.
    server_changed: bool,
    /// Stream offset just past the last backend byte taken (into the backlog or the engine); relayed bytes
    /// below it are ones the client already has (after a takeover) and are dropped.
    s2c_next: u64,
    /// The server half's latest progress from core B.
    server_progress: Option<HalfState>,
    /// Progress as last offered to the standby (client half, server half).
    progress_sent: (HalfState, HalfState),
    /// The flow waits in the progress queue.
    progress_queued: bool,
    /// Policy replica: stream offsets the standby confirmed storing (client stream, backend stream), and
    /// how far the backend stream was offered to it.
    c2s_stored: u64,
    s2c_stored: u64,
    s2c_offered: u64,
    /// The server half's ISN: client bytes are numbered in its space for the standby.
    server_iss: u32,
    /// Policy replica: relayed bytes go to the standby (from its confirmation of the flow until it is
    /// found detached; then the flow falls back to the backend gate for good, so the standby's copy of
    /// the stream never has a hole).
    replica_data: bool,
    /// Waits to be copied to a standby that joined (its server half's fresh save comes from core B first).
    resave: bool,
    /// Copied to a standby that joined mid-flow: it stays under the backend gate (the new standby never saw
    /// the bytes in flight before it joined).
    rejoined: bool,
    /// For the bulk copy: core B's `ToClient::Owed` (seq, stream offset, bytes owed the backend, how far
    /// the backend may hold an ACK, and the backend's bytes core B had not relayed yet with their offset).
    owed_c2s: Option<OwedCopy>,
    /// The bulk copy's data records still to offer after the flow's FlowOpened; the flow counts in
    /// `snapshot_pending` until they all went out (`copying`).
    copy_out: Vec<CopyOut>,
    copying: bool,
    /// The channel refused this flow's record (back-pressure): it is serviced again when room comes.
    repl_blocked: bool,
    dirty: bool,
    timer: Instant,
}

/// Core B's `ToClient::Owed`, kept until the flow's FlowOpened for the bulk copy went out.
struct OwedCopy {
    seq: u32,
    offset: u64,
    bytes: Vec<u8>,
    s2c_acked: u64,
    s2c_from: u64,
    s2c_unrelayed: Vec<u8>,
}

/// Bytes a bulk copy sends a standby that joined: ones a peer may hold an acknowledgment for while they
/// exist only in this box (after a takeover handed them over, or under policy `replica`).
struct CopyOut {
    dir: RelayDir,
    /// Sequence number of `bytes[0]` in the space of the half that transmits them.
    seq: u32,
    bytes: Vec<u8>,
    /// How many were offered so far.
    sent: usize,
}

/// Where a flow stands with the standby.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standby {
    /// No standby attached (or an application listener): nothing to wait for.
    NotReplicated,
    /// The flow-opened record could not be offered yet (back-pressure); it is offered again.
    ToOffer,
    /// Offered; the SYN-ACK waits for the confirmation.
    Waiting,
    /// The standby stores the flow.
    Confirmed,
}

impl ClientFlow {
    fn conn(&self) -> Option<&Connection> {
        match &self.phase {
            Phase::Open(c) => Some(c),
            Phase::Pending { .. } => None,
        }
    }
}

/// Core A of a box. See the module docs.
pub struct ClientCore<P> {
    cfg: Arc<ProxyConfig>,
    io: NetIo<P>,
    to_server: Sender<ToServer>,
    from_server: Receiver<ToClient>,
    outbox: VecDeque<ToServer>,
    flows: FlowTable<ClientKey, ClientFlow>,
    timers: TimerQueue,
    dirty: Vec<FlowId>,
    pools: Vec<Option<Pool>>,
    apps: Vec<Option<Box<dyn Application>>>,
    app_events: Vec<AppEvent>,
    replicator: Option<Box<dyn Replicator>>,
    scratch: Vec<u8>,
    chunks: ChunkPool,
    stats: ClientStats,
    started: bool,
    /// The control thread's requests and the run-time overrides they made (see `proxy::control`).
    ctl: super::control::CoreControl,
    /// Flows whose progress the standby has not heard yet, offered together at `progress_at`.
    progress_queue: Vec<FlowId>,
    progress_at: Instant,
    /// Whether a standby was attached at the last step (a newly attached one gets a bulk copy).
    was_attached: bool,
    /// A bulk copy in progress: its id, whether SnapshotBegin went out, and how many flows it copies.
    snapshot: Option<(u32, bool, u32)>,
    /// Flows the bulk copy still has to send.
    snapshot_pending: usize,
    snapshot_next_id: u32,
    /// A planned switchover stopped this core: frames are no longer taken in.
    intake_stopped: bool,
    /// Confirmations of stored bytes being applied (kept for its capacity).
    stored_scratch: Vec<Stored>,
    /// Flows whose records the channel refused: serviced again once confirmations free its window.
    repl_blocked: Vec<FlowId>,
}

impl<P> std::fmt::Debug for ClientCore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCore").field("flows", &self.flows.len()).field("stats", &self.stats).finish()
    }
}

/// Errors building a core from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("listeners[{0}]: {1}")]
    Pool(usize, crate::balance::PoolError),
    #[error("listeners[{0}]: policy app needs an application, and no application was given")]
    NoApplication(usize),
    #[error("flow table: {0}")]
    Table(#[from] crate::flow::CapacityError),
    #[error("snat ports: {0}")]
    Snat(#[from] crate::flow::SnatError),
    #[error("health checks: {0}")]
    Health(#[from] crate::balance::health::HealthError),
    #[error("server_net is not a valid IPv4 subnet")]
    Subnet,
    #[error("takeover: {0}")]
    Takeover(&'static str),
}

impl<P: Port> ClientCore<P> {
    /// A core A serving `cfg` on `port`. `apps[i]` serves listener `i` when its policy is `app`.
    pub fn new(
        cfg: Arc<ProxyConfig>,
        port: P,
        to_server: Sender<ToServer>,
        from_server: Receiver<ToClient>,
        mut apps: Vec<Option<Box<dyn Application>>>,
    ) -> Result<Self, CoreError> {
        apps.resize_with(cfg.listeners.len(), || None);
        let mut pools = Vec::with_capacity(cfg.listeners.len());
        for (i, l) in cfg.listeners.iter().enumerate() {
            match l.policy {
                AckPolicy::App => {
                    if apps.get(i).is_none_or(|a| a.is_none()) {
                        return Err(CoreError::NoApplication(i));
                    }
                    pools.push(None);
                }
                AckPolicy::None | AckPolicy::Backend | AckPolicy::Replica => {
                    let pool = Pool::new(l.balance, &l.backends, DEFAULT_TABLE_SIZE)
                        .map_err(|e| CoreError::Pool(i, e))?;
                    pools.push(Some(pool));
                }
            }
        }
        let flows = FlowTable::new(cfg.max_flows, cfg.flow_idle_timeout, cfg.seed)?;
        let burst = cfg.burst;
        let scratch = vec![0; usize::from(cfg.client_tcp.mss).max(1500) + 64];
        Ok(ClientCore {
            io: NetIo::new(port, burst),
            to_server,
            from_server,
            outbox: VecDeque::new(),
            flows,
            timers: TimerQueue::with_capacity(cfg.max_flows as usize),
            dirty: Vec::with_capacity(burst * 2),
            pools,
            apps,
            app_events: Vec::new(),
            replicator: None,
            started: false,
            progress_queue: Vec::new(),
            progress_at: Instant::FAR_FUTURE,
            was_attached: false,
            snapshot: None,
            snapshot_pending: 0,
            snapshot_next_id: 1,
            intake_stopped: false,
            stored_scratch: Vec::new(),
            repl_blocked: Vec::new(),
            scratch,
            chunks: ChunkPool::new(),
            stats: ClientStats::default(),
            ctl: super::control::CoreControl::new(cfg.listeners.len()),
            cfg,
        })
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Attaches the primary's replication: from now on every new flow's SYN-ACK waits for the standby.
    pub fn set_replicator(&mut self, r: Box<dyn Replicator>) {
        self.replicator = Some(r);
    }

    /// Whether a standby is attached and keeping up; `None` when this box runs without replication. A
    /// primary whose standby died reports `Some(false)`: degraded, serving on unprotected.
    pub fn standby_attached(&self) -> Option<bool> {
        self.replicator.as_ref().map(|r| r.standby_attached())
    }

    /// Announces this box as the holder of the VIP (gratuitous ARP), for a takeover.
    pub fn announce(&mut self, now: Instant) {
        let vip = Ipv4Address(self.cfg.vip.octets());
        let garp = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.cfg.client_mac,
            source_protocol_addr: vip,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: vip,
        };
        let mac = self.cfg.client_mac;
        self.io.emit(now, |b| build_arp_frame(b, mac, EthernetAddress::BROADCAST, None, &garp));
        self.io.flush(now);
    }

    /// Takes a flow over from a dead primary: `conn` is the restored client half, `server` core B's id of the
    /// restored server half. The engine is in resync mode; it is told to probe the client at once.
    pub fn install(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        server: u64,
        policy: AckPolicy,
        mut conn: Connection,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<u64, InsertError> {
        let vip = conn.local();
        let key = ClientKey { client, vip };
        let listener = self.cfg.listener(vip.port()).map(|(i, _)| i).unwrap_or(0);
        let start = conn.irs().wrapping_add(1);
        let c2s = offset_at(start, conn.rcv_nxt(), 0);
        // A half restored before its handshake completed has acknowledged nothing yet.
        let s2c = if conn.state().is_synchronized() {
            offset_at(conn.iss().wrapping_add(1), conn.snd_una(), 0)
        } else {
            0
        };
        let gate = if policy == AckPolicy::None {
            conn.set_ack_limit(None);
            None
        } else {
            let mut g = AckGate::new(policy, start, 0);
            g.jump_to(conn.rcv_nxt());
            conn.set_ack_limit(Some(g.allowed()));
            Some(g)
        };
        conn.probe();
        let send_queued = conn.send_queue_len() as u64;
        let flow = ClientFlow {
            listener,
            policy,
            backend: None,
            // Without a replicated MAC, frames are flooded until the client's first frame says where it is.
            peer_mac: peer_mac.map_or(EthernetAddress::BROADCAST, EthernetAddress),
            phase: Phase::Open(Box::new(conn)),
            server: Some(server),
            gate,
            c2s_sent: c2s,
            c2s_done: c2s,
            fin_forwarded: false,
            s2c_backlog: Backlog::new(),
            s2c_fin: false,
            s2c_closed: false,
            s2c_acked_told: s2c,
            standby: Standby::NotReplicated,
            saved_server: Vec::new(),
            standby_established: false,
            fins_saved: (false, false),
            server_changed: false,
            // The restored engine already holds the bytes it was handed (policy replica): take the relay
            // from past them.
            s2c_next: s2c + send_queued,
            server_progress: None,
            progress_sent: (HalfState::default(), HalfState::default()),
            progress_queued: false,
            c2s_stored: 0,
            s2c_stored: 0,
            s2c_offered: 0,
            server_iss: 0,
            replica_data: false,
            resave: false,
            rejoined: false,
            owed_c2s: None,
            copy_out: Vec::new(),
            copying: false,
            repl_blocked: false,
            dirty: false,
            timer: Instant::FAR_FUTURE,
        };
        let id = self.flows.insert(key, flow, now)?;
        self.stats.flows_opened += 1;
        self.ctl.count_opened(listener);
        self.mark(id);
        Ok(id.to_u64())
    }

    pub fn io_stats(&self) -> &super::IoStats {
        &self.io.stats
    }

    /// Flows in the table (pending ones included).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Bytes received from clients and not yet acknowledged to them, over all flows.
    pub fn withheld_bytes(&self) -> u64 {
        self.flows
            .iter()
            .filter_map(|(_, _, f)| {
                let c = f.conn()?;
                Some(u64::from(c.rcv_nxt().wrapping_sub(c.ack_sent())).min(u64::from(u32::MAX >> 1)))
            })
            .sum()
    }

    /// The port, for statistics of the backend.
    pub fn port(&self) -> &P {
        &self.io.port
    }

    /// The port itself, for a standby that probes the LAN through cores it built ahead of a takeover.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.io.port
    }

    /// One line per flow with its relay and engine state, for debugging a stuck flow.
    pub fn debug_flows(&self) -> String {
        let mut out = String::new();
        for (id, key, f) in self.flows.iter() {
            let conn = match &f.phase {
                Phase::Open(c) => format!(
                    "{:?} snd_una={} snd_max={} rcv_nxt={} ack_sent={} limit={:?} recv_avail={} sendq={} counters={:?}",
                    c.state(),
                    c.snd_una(),
                    c.snd_max(),
                    c.rcv_nxt(),
                    c.ack_sent(),
                    c.ack_limit(),
                    c.recv_available(),
                    c.send_queue_len(),
                    c.counters()
                ),
                Phase::Pending { .. } => "pending".into(),
            };
            out.push_str(&format!(
                "A {:?} {} c2s_sent={} c2s_done={} s2c_backlog={} s2c_told={} fin_fwd={} s2c_fin={} timer={:?} | {}\n",
                id, key.client, f.c2s_sent, f.c2s_done, f.s2c_backlog.len(), f.s2c_acked_told, f.fin_forwarded, f.s2c_fin, f.timer, conn
            ));
        }
        out
    }

    fn mark(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(id) {
            if !f.dirty {
                f.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) {
        if self.intake_stopped {
            self.stats.ignored_frames += 1;
            return;
        }
        let frame = match parse_frame_with(bytes, self.cfg.checksum) {
            Ok(f) => f,
            Err(e) => {
                self.io.stats.count_bad(e);
                if let Some(suppressed) = self.ctl.bad_input_log.allow(now) {
                    tracing::debug!(
                        port = "client",
                        error = e.as_str(),
                        suppressed,
                        "dropped a malformed frame"
                    );
                }
                return;
            }
        };
        let vip = Ipv4Address(self.cfg.vip.octets());
        let src_mac = frame.ethernet.src_addr;
        match frame.payload {
            FramePayload::Arp(arp) => {
                if arp.operation == ArpOperation::Request && arp.target_protocol_addr == vip {
                    let reply = ArpRepr {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: self.cfg.client_mac,
                        source_protocol_addr: vip,
                        target_hardware_addr: arp.source_hardware_addr,
                        target_protocol_addr: arp.source_protocol_addr,
                    };
                    let (mac, to) = (self.cfg.client_mac, arp.source_hardware_addr);
                    if self.io.emit(now, |b| build_arp_frame(b, mac, to, frame.ethernet.vlan, &reply)) {
                        self.stats.arp_replies += 1;
                    }
                } else {
                    self.stats.ignored_frames += 1;
                }
            }
            FramePayload::Ipv4 { ip, l4: Ipv4Payload::Icmp(icmp), .. } if ip.dst_addr == vip => {
                if let Some(reply) = icmp.reply() {
                    let mut hdr = FrameHeader::new(self.cfg.client_mac, src_mac, vip, ip.src_addr);
                    hdr.vlan = frame.ethernet.vlan;
                    if self.io.emit(now, |b| build_icmp_frame(b, &hdr, &reply)) {
                        self.stats.icmp_replies += 1;
                    }
                } else {
                    self.stats.ignored_frames += 1;
                }
            }
            FramePayload::Ipv4 { ip, l4: Ipv4Payload::Tcp(tcp), .. } if ip.dst_addr == vip => {
                self.handle_tcp(now, src_mac, Ipv4Addr::from(ip.src_addr.0), &tcp);
            }
            _ => self.stats.ignored_frames += 1,
        }
    }

    fn handle_tcp(&mut self, now: Instant, src_mac: EthernetAddress, src: Ipv4Addr, seg: &TcpRepr<'_>) {
        let key = ClientKey {
            client: SocketAddrV4::new(src, seg.src_port),
            vip: SocketAddrV4::new(self.cfg.vip, seg.dst_port),
        };
        if let Some((id, f)) = self.flows.find_mut(&key, now) {
            let result = match &mut f.phase {
                Phase::Pending { .. } => {
                    self.stats.pending_drops += 1;
                    return;
                }
                Phase::Open(conn) => conn.handle_segment(now, seg),
            };
            match result {
                Ok(()) => {
                    // Follow the client to a new MAC only on a segment the engine accepted: a forged one
                    // (a random-sequence RST from elsewhere on the LAN) must not divert the flow's frames.
                    f.peer_mac = src_mac;
                    self.mark(id);
                }
                Err(SegmentError::TimeWaitSyn) => {
                    // A new connection reuses the 4-tuple of one in TIME-WAIT: retire the old one.
                    count(&mut self.stats.segment_errors, "time_wait_syn");
                    self.remove(now, id, false);
                    self.new_flow(now, key, src_mac, seg);
                }
                Err(e) => {
                    count(&mut self.stats.segment_errors, segment_error_name(e));
                    self.mark(id);
                }
            }
            return;
        }
        if seg.flags.contains(TcpFlags::RST) {
            self.stats.stray_segments += 1;
        } else if seg.flags.contains(TcpFlags::SYN) && !seg.flags.contains(TcpFlags::ACK) {
            self.new_flow(now, key, src_mac, seg);
        } else {
            self.stats.stray_segments += 1;
            self.send_rst(now, src_mac, key, seg);
        }
    }

    /// Answers a segment with a RST (RFC 9293 §3.10.7.1), from the VIP.
    fn send_rst(&mut self, now: Instant, mac: EthernetAddress, key: ClientKey, seg: &TcpRepr<'_>) {
        let (seq, ack, flags) = if seg.flags.contains(TcpFlags::ACK) {
            (seg.ack, 0, TcpFlags::RST)
        } else {
            (0, seg.seq.wrapping_add(seg.segment_len() as u32), TcpFlags::RST | TcpFlags::ACK)
        };
        let rst = TcpRepr {
            src_port: key.vip.port(),
            dst_port: key.client.port(),
            seq,
            ack,
            flags,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        let hdr = FrameHeader::new(
            self.cfg.client_mac,
            mac,
            Ipv4Address(key.vip.ip().octets()),
            Ipv4Address(key.client.ip().octets()),
        );
        self.io.emit(now, |b| build_tcp_frame(b, &hdr, &rst));
    }

    fn new_flow(&mut self, now: Instant, key: ClientKey, mac: EthernetAddress, syn: &TcpRepr<'_>) {
        let Some((li, listener)) = self.cfg.listener(key.vip.port()) else {
            self.stats.no_listener += 1;
            self.send_rst(now, mac, key, syn);
            return;
        };
        if !self.ctl.admits(li) {
            // Draining: existing flows finish, new ones are refused at once (the client sees a RST).
            self.ctl.count_refused_draining(li);
            self.send_rst(now, mac, key, syn);
            return;
        }
        // The listener's policy, or what `set` made it; replica with no standby listening falls back to
        // backend (and the flow counts as degraded).
        let configured = self.ctl.policy(li).unwrap_or(listener.policy);
        let attached = self.replicator.as_ref().is_some_and(|r| r.standby_attached());
        let policy =
            if configured == AckPolicy::Replica { configured.effective(attached).policy } else { configured };
        let backend = match self.pools.get(usize::from(li)).and_then(|p| p.as_ref()) {
            Some(pool) => match pool.pick(key.client, key.vip) {
                Some(b) => pool.backend(b).map(|be| (b, be.addr)),
                None => None,
            },
            None => None,
        };
        if policy != AckPolicy::App && backend.is_none() {
            self.stats.flows_refused += 1;
            self.ctl.count_refused(li);
            self.send_rst(now, mac, key, syn);
            return;
        }
        let syn_static = TcpRepr { payload: &[], ..*syn };
        let flow = ClientFlow {
            listener: li,
            policy,
            backend: backend.map(|(b, _)| b),
            peer_mac: mac,
            phase: Phase::Pending { syn: syn_static, aborted: false },
            server: None,
            gate: None,
            c2s_sent: 0,
            c2s_done: 0,
            fin_forwarded: false,
            s2c_backlog: Backlog::new(),
            s2c_fin: false,
            s2c_closed: false,
            s2c_acked_told: 0,
            standby: Standby::NotReplicated,
            saved_server: Vec::new(),
            standby_established: false,
            fins_saved: (false, false),
            server_changed: false,
            s2c_next: 0,
            server_progress: None,
            progress_sent: (HalfState::default(), HalfState::default()),
            progress_queued: false,
            c2s_stored: 0,
            s2c_stored: 0,
            s2c_offered: 0,
            server_iss: 0,
            replica_data: false,
            resave: false,
            rejoined: false,
            owed_c2s: None,
            copy_out: Vec::new(),
            copying: false,
            repl_blocked: false,
            dirty: false,
            timer: Instant::FAR_FUTURE,
        };
        let id = match self.flows.insert(key, flow, now) {
            Ok(id) => id,
            Err(InsertError::Full) => {
                self.stats.table_full += 1;
                return;
            }
            Err(InsertError::Exists(_)) => {
                self.stats.pending_drops += 1;
                return;
            }
        };
        self.stats.flows_opened += 1;
        self.ctl.count_opened(li);
        match backend {
            Some((b, addr)) => {
                if let Some(Some(pool)) = self.pools.get_mut(usize::from(li)) {
                    pool.on_flow_opened(b);
                }
                self.outbox.push_back(ToServer::Open {
                    client_flow: id.to_u64(),
                    client: key.client,
                    vip: key.vip,
                    backend: addr,
                    client_mss: syn.options.mss.unwrap_or(536),
                    policy,
                });
            }
            // An application listener has no backend: the client half opens at once.
            None => self.open_client_half(now, id, u16::MAX, None),
        }
    }

    /// Creates the client half's engine from the held SYN; its SYN-ACK goes out on the next transmit.
    fn open_client_half(&mut self, now: Instant, id: FlowId, peer_mss: u16, server_half: Option<Vec<u8>>) {
        let Some(key) = self.flows.key(id).copied() else { return };
        let Some(f) = self.flows.get_mut(id) else { return };
        let Phase::Pending { syn, .. } = f.phase else { return };
        let mut tcp_cfg = self.cfg.client_tcp.clone();
        // Clamp our MSS to the backend's so segments map one to one across the relay.
        tcp_cfg.mss = tcp_cfg.mss.min(peer_mss).max(64);
        let iss = tcp::isn(&tcp_cfg.isn_secret, key.vip, key.client, now);
        let mut conn = match Connection::accept(now, &tcp_cfg, key.vip, key.client, &syn, iss) {
            Ok(c) => c,
            Err(e) => {
                count(&mut self.stats.segment_errors, segment_error_name(e));
                self.remove(now, id, true);
                return;
            }
        };
        if f.policy != AckPolicy::None {
            let gate = AckGate::new(f.policy, syn.seq.wrapping_add(1), 0);
            conn.set_ack_limit(Some(gate.allowed()));
            f.gate = Some(gate);
        }
        let attached = self.replicator.as_ref().is_some_and(|r| r.standby_attached());
        if self.replicator.is_some() && !attached {
            // No standby is listening: serve under the backend gate, and say so (never claim protection
            // that is not there).
            self.stats.degraded_flows += 1;
        }
        if let (Some(server_half), true) = (server_half, attached) {
            // Invariant 2: no SYN-ACK before the standby knows the flow. A limit at the client's ISN holds
            // the SYN itself unacknowledged.
            conn.set_ack_limit(Some(syn.seq));
            f.standby = Standby::ToOffer;
            f.server_iss = crate::tcp::SavedConnection::decode(&server_half).map_or(0, |(s, _)| s.iss);
            f.saved_server = server_half;
        }
        f.phase = Phase::Open(Box::new(conn));
        self.stats.flows_established += 1;
        if f.policy == AckPolicy::App {
            if let Some(Some(app)) = self.apps.get_mut(usize::from(f.listener)) {
                app.open(id.to_u64(), key.client);
            }
        }
        self.mark(id);
    }

    fn handle_message(&mut self, now: Instant, msg: ToClient) {
        match msg {
            ToClient::Connected { client_flow, server, backend_mss, server_half } => {
                let id = FlowId::from_u64(client_flow);
                let Some(f) = self.flows.get_mut(id) else {
                    self.stats.stale_messages += 1;
                    self.outbox.push_back(ToServer::Abort { server });
                    return;
                };
                f.server = Some(server);
                if let Phase::Pending { aborted: true, .. } = f.phase {
                    self.outbox.push_back(ToServer::Abort { server });
                    self.remove(now, id, false);
                    return;
                }
                self.open_client_half(now, id, backend_mss, Some(server_half));
            }
            ToClient::Refused { client_flow } => {
                let id = FlowId::from_u64(client_flow);
                let Some(f) = self.flows.get(id) else {
                    self.stats.stale_messages += 1;
                    return;
                };
                if let (Phase::Pending { syn, .. }, Some(key)) = (&f.phase, self.flows.key(id).copied()) {
                    let (syn, mac) = (*syn, f.peer_mac);
                    self.send_rst(now, mac, key, &syn);
                }
                self.stats.flows_refused += 1;
                if let Some(l) = self.flows.get(id).map(|f| f.listener) {
                    self.ctl.count_refused(l);
                }
                self.remove(now, id, false);
            }
            ToClient::Data { client_flow, offset, chunk } => {
                let id = FlowId::from_u64(client_flow);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        let r = take_relayed(&mut f.s2c_backlog, &mut f.s2c_next, offset, chunk);
                        self.stats.relay_gaps += u64::from(r.gap);
                        self.stats.bytes_to_clients += r.taken as u64;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToClient::Acked { client_flow, up_to } => {
                let id = FlowId::from_u64(client_flow);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.c2s_done = f.c2s_done.max(up_to);
                        if let Phase::Open(conn) = &mut f.phase {
                            let start = conn.irs().wrapping_add(1);
                            if let Some(gate) = &mut f.gate {
                                gate.on_received(conn.rcv_nxt());
                                gate.on_backend_acked(seq_at(start, f.c2s_done));
                            }
                        }
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToClient::Fin { client_flow } => {
                let id = FlowId::from_u64(client_flow);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.s2c_fin = true;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToClient::Abort { client_flow } => {
                let id = FlowId::from_u64(client_flow);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.server = None;
                        match &mut f.phase {
                            Phase::Open(conn) => conn.abort(),
                            Phase::Pending { aborted, .. } => *aborted = true,
                        }
                        self.stats.flows_reset += 1;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToClient::Saved { client_flow, server_half } => {
                let id = FlowId::from_u64(client_flow);
                if let Some(f) = self.flows.get_mut(id) {
                    f.saved_server = server_half;
                    f.server_changed = true;
                    self.mark(id);
                }
            }
            ToClient::Owed { client_flow, seq, offset, bytes, s2c_acked, s2c_from, s2c_unrelayed } => {
                let id = FlowId::from_u64(client_flow);
                if let Some(f) = self.flows.get_mut(id) {
                    if f.resave {
                        f.owed_c2s =
                            Some(OwedCopy { seq, offset, bytes, s2c_acked, s2c_from, s2c_unrelayed });
                        self.mark(id);
                    }
                }
            }
            ToClient::Progress { client_flow, server } => {
                let id = FlowId::from_u64(client_flow);
                if let Some(f) = self.flows.get_mut(id) {
                    f.server_progress = Some(server);
                    self.mark(id);
                }
            }
            ToClient::BackendHealth { listener, backend, healthy } => {
                if let Some(Some(pool)) = self.pools.get_mut(usize::from(listener)) {
                    let _ = pool.set_healthy(backend, healthy);
                }
            }
        }
    }

    fn handle_app_events(&mut self) {
        let mut events = std::mem::take(&mut self.app_events);
        for app in self.apps.iter_mut().flatten() {
            app.poll(&mut events);
        }
        for ev in events.drain(..) {
            match ev {
                AppEvent::Commit { flow, up_to } => {
                    let id = FlowId::from_u64(flow);
                    if let Some(f) = self.flows.get_mut(id) {
                        f.c2s_done = f.c2s_done.max(up_to.min(f.c2s_sent));
                        if let (Some(gate), Phase::Open(conn)) = (&mut f.gate, &f.phase) {
                            gate.on_app_commit(seq_at(conn.irs().wrapping_add(1), f.c2s_done));
                        }
                        self.mark(id);
                    }
                }
                AppEvent::Reply { flow, data } => {
                    let id = FlowId::from_u64(flow);
                    if let Some(f) = self.flows.get_mut(id) {
                        f.s2c_backlog.push(Chunk::from_vec(data), 0);
                        self.mark(id);
                    }
                }
                AppEvent::Close { flow } => {
                    let id = FlowId::from_u64(flow);
                    if let Some(f) = self.flows.get_mut(id) {
                        f.s2c_fin = true;
                        self.mark(id);
                    }
                }
                AppEvent::Abort { flow, .. } => {
                    let id = FlowId::from_u64(flow);
                    if let Some(Phase::Open(conn)) = self.flows.get_mut(id).map(|f| &mut f.phase) {
                        conn.abort();
                        self.stats.app_aborts += 1;
                        self.mark(id);
                    }
                }
            }
        }
        self.app_events = events;
    }

    /// Pumps bytes, moves the gate, transmits, re-arms the timer; removes the flow when it is over.
    fn service(&mut self, now: Instant, id: FlowId) {
        let server_room = self.cfg.server_tcp.send_buffer as u64;
        let Some(f) = self.flows.get_mut(id) else { return };
        f.dirty = false;
        let Phase::Open(conn) = &mut f.phase else { return };

        let mut over = false;
        let mut reset = false;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Reset | Event::TimedOut => reset = true,
                Event::Closed => over = true,
                // After a takeover the client had bytes this box never sent: drop them from what waits.
                Event::SendResynced { to, .. } => {
                    resync_backlog(&mut f.s2c_backlog, &mut f.s2c_next, conn.iss(), to)
                }
                Event::Connected | Event::PeerClosed => {}
            }
        }

        // Policy replica: relayed bytes go to the standby first; a standby that went away ends that.
        if f.replica_data && !self.replicator.as_ref().is_some_and(|r| r.standby_attached()) {
            f.replica_data = false;
            self.stats.replica_fallbacks += 1;
        }
        let front = f.s2c_next.saturating_sub(f.s2c_backlog.len() as u64);
        if f.replica_data {
            if let Some(r) = self.replicator.as_mut() {
                f.s2c_offered = f.s2c_offered.max(front);
                while f.s2c_offered < f.s2c_next {
                    let skip = usize::try_from(f.s2c_offered - front).unwrap_or(usize::MAX);
                    let piece = f.s2c_backlog.piece_at(skip);
                    let piece = piece.get(..piece.len().min(MAX_CHUNK)).unwrap_or(&[]);
                    if piece.is_empty() {
                        break;
                    }
                    let seq = seq_at(conn.iss().wrapping_add(1), f.s2c_offered);
                    let end = f.s2c_offered + piece.len() as u64;
                    match r.data(now, id.to_u64(), RelayDir::ServerToClient, seq, end, piece) {
                        Ok(()) => f.s2c_offered = end,
                        Err(ReplicateError::Busy) => {
                            if !f.repl_blocked {
                                f.repl_blocked = true;
                                self.repl_blocked.push(id);
                            }
                            break;
                        }
                        Err(ReplicateError::Unprotectable) => {
                            f.replica_data = false;
                            self.stats.unprotected += 1;
                            break;
                        }
                    }
                }
            }
        }

        // Backend → client: into the send buffer as space allows (under policy replica, only what the
        // standby was offered), then the FIN.
        let may_send =
            if f.replica_data { f.s2c_offered.saturating_sub(front) } else { f.s2c_backlog.len() as u64 };
        f.s2c_backlog.pump_at_most(usize::try_from(may_send).unwrap_or(usize::MAX), |b| conn.send(b));
        if f.s2c_fin && !f.s2c_closed && f.s2c_backlog.is_empty() {
            f.s2c_closed = true;
            conn.close();
        }

        // After a takeover the backend may hold bytes this box never relayed (the dead primary did): the
        // client half skips them — the client gets its ACK for them now.
        if f.c2s_done > f.c2s_sent
            && !f.fin_forwarded
            && conn.state().is_synchronized()
            && conn.recv_available() == 0
        {
            conn.advance_rcv_edge(seq_at(conn.irs().wrapping_add(1), f.c2s_done));
            f.c2s_sent = f.c2s_done;
        }

        // Client → backend (or application), within the room the server half has.
        if f.policy == AckPolicy::App {
            if let Some(Some(app)) = self.apps.get_mut(usize::from(f.listener)) {
                loop {
                    let (head, _) = conn.recv_peek();
                    if head.is_empty() {
                        break;
                    }
                    let len = head.len();
                    let took = match app.data(id.to_u64(), f.c2s_sent, head) {
                        Accepted::All => len,
                        Accepted::Partial(n) => n.min(len),
                    };
                    conn.recv_consume(took);
                    f.c2s_sent += took as u64;
                    self.stats.bytes_from_clients += took as u64;
                    if took < len {
                        break;
                    }
                }
                if !f.fin_forwarded && conn.is_recv_closed() && conn.recv_available() == 0 {
                    f.fin_forwarded = true;
                    app.end_of_stream(id.to_u64(), f.c2s_sent);
                }
            }
        } else if let Some(server) = f.server {
            let in_flight = f.c2s_sent.saturating_sub(f.c2s_done);
            let mut room = server_room.saturating_sub(in_flight);
            while room > 0 {
                let (head, _) = conn.recv_peek();
                let n = head.len().min(MAX_CHUNK).min(room as usize);
                if n == 0 {
                    break;
                }
                let chunk = self.chunks.copy_from(&head[..n]);
                if f.replica_data {
                    if let Some(r) = self.replicator.as_mut() {
                        let seq = seq_at(f.server_iss.wrapping_add(1), f.c2s_sent);
                        let end = f.c2s_sent + n as u64;
                        match r.data(now, id.to_u64(), RelayDir::ClientToServer, seq, end, &chunk) {
                            Ok(()) => {}
                            // The standby lags: the bytes wait in the engine, unacknowledged.
                            Err(ReplicateError::Busy) => {
                                if !f.repl_blocked {
                                    f.repl_blocked = true;
                                    self.repl_blocked.push(id);
                                }
                                break;
                            }
                            Err(ReplicateError::Unprotectable) => {
                                f.replica_data = false;
                                self.stats.unprotected += 1;
                            }
                        }
                    }
                }
                conn.recv_consume(n);
                f.c2s_sent += n as u64;
                room -= n as u64;
                self.stats.bytes_from_clients += n as u64;
                self.outbox.push_back(ToServer::Data { server, offset: f.c2s_sent - n as u64, chunk });
            }
            if !f.fin_forwarded && conn.is_recv_closed() && conn.recv_available() == 0 {
                f.fin_forwarded = true;
                self.outbox.push_back(ToServer::Fin { server });
            }
        }

        // Replication: offer the flow to the standby (again, after back-pressure).
        // Once the handshake is complete the standby gets the flow again, established (a record for a
        // known flow replaces its state), so a takeover resumes it without redoing the handshake.
        // So does every FIN (in either direction, at either core): a takeover must know a half is closing.
        let fins = (conn.is_recv_closed(), f.s2c_closed);
        let fin_changed = f.standby_established && (fins != f.fins_saved || f.server_changed);
        let established_pending = f.standby == Standby::Confirmed
            && (!f.standby_established || fin_changed)
            && conn.state().is_synchronized();
        // A bulk copy for a standby that joined: the flow as it is now, once core B sent its half as it is.
        let resave_ready = f.resave
            && f.server_changed
            && f.owed_c2s.is_some()
            && matches!(self.snapshot, Some((_, true, _)));
        if let (true, Some(r)) =
            (f.standby == Standby::ToOffer || established_pending || resave_ready, self.replicator.as_mut())
        {
            let server_half = &f.saved_server;
            // The saved engine, then the client's MAC: a standby that takes over can answer the client
            // before hearing from it (its ARP cache still names the VIP's virtual MAC, not ours).
            let mut client_half = Vec::with_capacity(crate::tcp::SAVED_LEN + 6);
            conn.save().encode(&mut client_half);
            client_half.extend_from_slice(&f.peer_mac.0);
            let (client, vip) = (conn.remote(), conn.local());
            let snat_and_backend = server_endpoints(server_half);
            let rec = FlowOpened {
                flow: id.to_u64(),
                client,
                vip,
                snat: snat_and_backend.0,
                backend: snat_and_backend.1,
                policy: f.policy,
                client_half: &client_half,
                server_half,
            };
            match r.flow_opened(now, &rec) {
                // The record is ordered before anything else about the flow on the channel: progress may
                // follow at once (nobody waits for its confirmation: the flow stays under the backend gate).
                Ok(()) if resave_ready => {
                    f.resave = false;
                    f.rejoined = true;
                    f.standby = Standby::Confirmed;
                    // A copy taken during the handshake is sent again once it completes.
                    f.standby_established = conn.state().is_synchronized();
                    f.fins_saved = fins;
                    f.server_changed = false;
                    // Then the bytes owed either way whose sender holds (or may get, without asking
                    // anyone again) an ACK for them: only this box has them, and the flow's record alone
                    // does not carry them. Bytes above that edge the sender still has.
                    let synced = conn.state().is_synchronized();
                    if let Some(owed) = f.owed_c2s.take() {
                        let OwedCopy { seq, offset, mut bytes, s2c_acked, s2c_from, s2c_unrelayed } = owed;
                        let acked = if synced {
                            offset_at(conn.irs().wrapping_add(1), conn.ack_sent(), f.c2s_sent)
                                .max(f.c2s_stored)
                        } else {
                            0
                        };
                        bytes.truncate(usize::try_from(acked.saturating_sub(offset)).unwrap_or(usize::MAX));
                        f.copy_out.push(CopyOut { dir: RelayDir::ClientToServer, seq, bytes, sent: 0 });
                        let (seq, mut bytes) = super::replicate::owed_bytes(conn, &f.s2c_backlog);
                        let offset = offset_at(conn.iss().wrapping_add(1), seq, f.s2c_next);
                        // Core B's unrelayed bytes continue the run (what it relayed since came here).
                        let end = offset + bytes.len() as u64;
                        if let Some(skip) = end.checked_sub(s2c_from) {
                            let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                            bytes.extend_from_slice(s2c_unrelayed.get(skip..).unwrap_or(&[]));
                        }
                        let keep = if synced { s2c_acked.saturating_sub(offset) } else { 0 };
                        bytes.truncate(usize::try_from(keep).unwrap_or(usize::MAX));
                        f.copy_out.push(CopyOut { dir: RelayDir::ServerToClient, seq, bytes, sent: 0 });
                    }
                    f.copying = true;
                }
                Ok(()) if established_pending => {
                    f.standby_established = true;
                    f.fins_saved = fins;
                    f.server_changed = false;
                }
                Ok(()) => {
                    f.standby = Standby::Waiting;
                    self.ctl.replication_offered(now, id.to_u64());
                }
                Err(ReplicateError::Busy) => {
                    if !f.repl_blocked {
                        f.repl_blocked = true;
                        self.repl_blocked.push(id);
                    }
                }
                Err(ReplicateError::Unprotectable) => {
                    self.stats.unprotected += 1;
                    f.standby = Standby::NotReplicated;
                    if f.resave {
                        f.resave = false;
                        self.snapshot_pending = self.snapshot_pending.saturating_sub(1);
                    }
                }
            }
        }

        // The bulk copy's bytes, in order, after the flow's record; back-pressure holds the copy open.
        if f.copying {
            let attached = self.replicator.as_ref().is_some_and(|r| r.standby_attached());
            if let (true, Some(r)) = (attached, self.replicator.as_mut()) {
                while let Some(c) = f.copy_out.first_mut() {
                    let rest = c.bytes.get(c.sent..).unwrap_or(&[]);
                    let piece = rest.get(..rest.len().min(MAX_CHUNK)).unwrap_or(&[]);
                    if piece.is_empty() {
                        f.copy_out.remove(0);
                        continue;
                    }
                    let seq = c.seq.wrapping_add(u32::try_from(c.sent).unwrap_or(0));
                    // End 0: these confirmations move no gate (the flow stays under the backend's).
                    match r.data(now, id.to_u64(), c.dir, seq, 0, piece) {
                        Ok(()) => c.sent += piece.len(),
                        Err(ReplicateError::Busy) => {
                            if !f.repl_blocked {
                                f.repl_blocked = true;
                                self.repl_blocked.push(id);
                            }
                            break;
                        }
                        Err(ReplicateError::Unprotectable) => {
                            self.stats.unprotected += 1;
                            f.copy_out.clear();
                        }
                    }
                }
            } else {
                // The standby left: the copy it was getting is moot.
                f.copy_out.clear();
            }
            if f.copy_out.is_empty() {
                f.copying = false;
                self.snapshot_pending = self.snapshot_pending.saturating_sub(1);
            }
        }

        // The standby went silent before confirming the flow: serve it degraded, as flows opened after
        // its death are, rather than hold the client's SYN-ACK for ever.
        if matches!(f.standby, Standby::ToOffer | Standby::Waiting)
            && self.replicator.as_ref().is_some_and(|r| !r.standby_attached())
        {
            f.standby = Standby::NotReplicated;
            self.stats.degraded_flows += 1;
        }

        // The gate: acknowledge only what the policy says is safe (and nothing, not even the SYN, before
        // the standby has the flow).
        if matches!(f.standby, Standby::ToOffer | Standby::Waiting) {
            conn.set_ack_limit(Some(conn.irs()));
        } else if let Some(gate) = &mut f.gate {
            gate.on_received(conn.rcv_nxt());
            let start = conn.irs().wrapping_add(1);
            match f.policy {
                AckPolicy::Backend => {
                    gate.on_backend_acked(seq_at(start, f.c2s_done));
                }
                // Safe once the standby has it, or once the backend has it (a FIN, a fallback).
                AckPolicy::Replica => {
                    gate.on_replica_stored(seq_at(start, f.c2s_stored.max(f.c2s_done)));
                }
                AckPolicy::None | AckPolicy::App => {}
            }
            conn.set_ack_limit(Some(gate.allowed()));
        } else if conn.ack_limit().is_some() {
            conn.set_ack_limit(None);
        }

        // Tell core B how far the client acknowledged the backend's bytes (it gates the backend's ACKs).
        if let Some(server) = f.server {
            // Closed counts too: the ACK that closes the client half (of our FIN) also acknowledges the
            // backend's last bytes, and the backend must hear of them, or its tail stays unacknowledged
            // until the server half gives up and resets it.
            if conn.state().is_synchronized() || conn.state() == State::Closed {
                let acked = offset_at(conn.iss().wrapping_add(1), conn.snd_una(), f.s2c_acked_told);
                if acked > f.s2c_acked_told && acked < (1 << 62) {
                    f.s2c_acked_told = acked;
                    self.outbox.push_back(ToServer::Acked { server, up_to: acked });
                }
            }
        }

        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Reset | Event::TimedOut => reset = true,
                Event::Closed => over = true,
                Event::SendResynced { to, .. } => {
                    resync_backlog(&mut f.s2c_backlog, &mut f.s2c_next, conn.iss(), to)
                }
                Event::Connected | Event::PeerClosed => {}
            }
        }

        // Transmit.
        let key = self.flows.key(id).copied();
        let Some(f) = self.flows.get_mut(id) else { return };
        let Phase::Open(conn) = &mut f.phase else { return };
        if let Some(key) = key {
            let hdr = FrameHeader::new(
                self.cfg.client_mac,
                f.peer_mac,
                Ipv4Address(key.vip.ip().octets()),
                Ipv4Address(key.client.ip().octets()),
            );
            // Each segment's payload goes from the send buffer straight into its frame.
            while self.io.emit_segment(now, &hdr, &mut self.scratch, |out| conn.poll_transmit(now, out)) {}
        }
        self.ctl.ack_probe(now, id.to_u64(), conn.rcv_nxt(), conn.ack_sent());
        if conn.state() == State::Closed {
            over = true;
        }

        // Progress for the standby: one pending entry per flow, offered at the next flush.
        if !f.progress_queued
            && f.standby == Standby::Confirmed
            && f.standby_established
            && f.server_progress.is_some()
            && conn.state().is_synchronized()
        {
            if let Some(r) = self.replicator.as_ref() {
                f.progress_queued = true;
                if self.progress_queue.is_empty() {
                    self.progress_at = now + r.progress_delay();
                }
                self.progress_queue.push(id);
            }
        }

        if reset || over {
            if reset {
                if let Some(server) = f.server.take() {
                    self.outbox.push_back(ToServer::Abort { server });
                }
                self.stats.flows_reset += 1;
                self.ctl.count_reset(f.listener);
            }
            self.remove(now, id, false);
            return;
        }
        if let Some(at) = conn.poll_timeout() {
            if at < f.timer {
                f.timer = at;
                self.timers.arm(at, id.index(), id.generation());
            }
        }
    }

    /// Forgets a flow; with `abort`, resets the server half too.
    fn remove(&mut self, _now: Instant, id: FlowId, abort: bool) {
        let Some((_, f)) = self.flows.remove(id) else { return };
        let (bytes_in, bytes_out) =
            f.conn().map_or((0, 0), |c| (c.counters().bytes_in, c.counters().bytes_out));
        self.ctl.count_closed(f.listener, bytes_in, bytes_out);
        if f.resave || f.copying {
            self.snapshot_pending = self.snapshot_pending.saturating_sub(1);
        }
        if matches!(f.standby, Standby::Waiting | Standby::Confirmed) {
            if let Some(r) = self.replicator.as_mut() {
                // A full channel loses only this forget: the standby then holds a dead flow until its
                // peers answer a takeover's probe with RST.
                let _ = r.flow_closed(_now, id.to_u64());
            }
        }
        if abort {
            if let Some(server) = f.server {
                self.outbox.push_back(ToServer::Abort { server });
            }
        }
        if let (Some(b), Some(Some(pool))) = (f.backend, self.pools.get_mut(usize::from(f.listener))) {
            pool.on_flow_closed(b);
        }
        if f.policy == AckPolicy::App {
            if let Some(Some(app)) = self.apps.get_mut(usize::from(f.listener)) {
                app.closed(id.to_u64());
            }
        }
        self.stats.flows_closed += 1;
    }

    /// A standby (re)joined: every live flow it does not know is copied to it (SnapshotBegin, each flow's
    /// FlowOpened with both halves saved now, SnapshotEnd), while traffic flows. Flows opened meanwhile
    /// are offered as usual. Core B is asked for each server half as it is now.
    fn start_snapshot(&mut self) {
        let mut ids = Vec::new();
        for (id, _, f) in self.flows.iter() {
            // A flow still in its handshake is copied too (a takeover resumes it from there).
            let open = f.conn().is_some_and(|c| c.state() != State::Closed);
            if open && f.policy != AckPolicy::App && f.standby == Standby::NotReplicated && !f.resave {
                if let Some(server) = f.server {
                    ids.push((id, server));
                }
            }
        }
        for &(id, server) in &ids {
            if let Some(f) = self.flows.get_mut(id) {
                f.resave = true;
                f.server_changed = false;
                f.owed_c2s = None;
                self.outbox.push_back(ToServer::Save { server });
            }
        }
        self.snapshot_pending += ids.len();
        let flows = u32::try_from(self.snapshot_pending).unwrap_or(u32::MAX);
        match &mut self.snapshot {
            Some((_, false, n)) => *n = flows,
            // A copy already under way takes the new flows too (its begin record named fewer).
            Some(_) => {}
            None => {
                self.snapshot = Some((self.snapshot_next_id, false, flows));
                self.snapshot_next_id = self.snapshot_next_id.wrapping_add(1);
            }
        }
        self.stats.snapshot_flows += ids.len() as u64;
    }

    /// Moves a bulk copy on: its begin record, then (once every flow went out) its end record.
    fn advance_snapshot(&mut self, now: Instant) -> usize {
        let Some((id, begun, flows)) = self.snapshot else { return 0 };
        let Some(r) = self.replicator.as_mut() else {
            self.snapshot = None;
            return 0;
        };
        if !begun {
            if r.snapshot_mark(now, true, id, flows).is_err() {
                return 0;
            }
            self.snapshot = Some((id, true, flows));
            let waiting: Vec<FlowId> =
                self.flows.iter().filter(|(_, _, f)| f.resave).map(|(id, _, _)| id).collect();
            for id in waiting {
                self.mark(id);
            }
            return 1;
        }
        if self.snapshot_pending == 0 && r.snapshot_mark(now, false, id, flows).is_ok() {
            self.snapshot = None;
            self.stats.snapshots += 1;
            return 1;
        }
        0
    }

    /// A planned switchover, first step: take no more frames in, and offer every replicated flow's progress
    /// now. Then wait for [`ClientCore::replication_synced`] before going silent.
    pub fn stop_intake(&mut self, now: Instant) {
        self.intake_stopped = true;
        let ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, _, f)| f.standby == Standby::Confirmed && !f.progress_queued)
            .map(|(id, _, _)| id)
            .collect();
        for id in ids {
            if let Some(f) = self.flows.get_mut(id) {
                f.progress_queued = true;
                self.progress_queue.push(id);
            }
        }
        self.progress_at = now;
    }

    /// Whether the standby has everything this core offered, and nothing from core B waits: the moment a
    /// planned switchover hands over.
    pub fn replication_synced(&self) -> bool {
        self.progress_queue.is_empty()
            && self.snapshot.is_none()
            && self.from_server.is_empty()
            && self.replicator.as_ref().is_none_or(|r| r.is_synced())
    }

    /// Offers the queued flows' progress to the standby; what the channel refuses (back-pressure) waits for
    /// the next flush. Returns records offered.
    fn flush_progress(&mut self, now: Instant) -> usize {
        let Some(r) = self.replicator.as_mut() else {
            self.progress_queue.clear();
            self.progress_at = Instant::FAR_FUTURE;
            return 0;
        };
        let mut offered = 0;
        let mut kept = 0;
        let mut busy = false;
        for i in 0..self.progress_queue.len() {
            let Some(&id) = self.progress_queue.get(i) else { break };
            let Some(f) = self.flows.get_mut(id) else { continue };
            if busy {
                if let Some(slot) = self.progress_queue.get_mut(kept) {
                    *slot = id;
                }
                kept += 1;
                continue;
            }
            let (Phase::Open(conn), Some(server)) = (&f.phase, f.server_progress) else {
                f.progress_queued = false;
                continue;
            };
            let client = HalfState::of(conn);
            if (client, server) == f.progress_sent {
                f.progress_queued = false;
                continue;
            }
            match r.progress(now, id.to_u64(), &client, &server) {
                Ok(()) => {
                    f.progress_sent = (client, server);
                    f.progress_queued = false;
                    offered += 1;
                }
                Err(ReplicateError::Busy) => {
                    busy = true;
                    if let Some(slot) = self.progress_queue.get_mut(kept) {
                        *slot = id;
                    }
                    kept += 1;
                }
                Err(ReplicateError::Unprotectable) => f.progress_queued = false,
            }
        }
        self.progress_queue.truncate(kept);
        self.progress_at = if kept == 0 { Instant::FAR_FUTURE } else { now + r.progress_delay() };
        offered
    }

    fn flush_outbox(&mut self) {
        while let Some(msg) = self.outbox.pop_front() {
            match self.to_server.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.stats.backpressure += 1;
                    self.outbox.push_front(msg);
                    break;
                }
                // Core B is gone (the box is stopping): nothing can be relayed any more.
                Err(TrySendError::Disconnected(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
    }
}

impl<P: Port> Steppable for ClientCore<P> {
    fn step(&mut self, now: Instant) -> StepOutcome {
        let mut work = 0;
        if !self.started {
            // Gratuitous ARP at start: the client LAN learns where the VIP lives.
            self.started = true;
            self.announce(now);
        }

        let rx = self.io.recv_burst(now);
        work += rx.len();
        for buf in &rx {
            self.handle_frame(now, buf.data());
        }
        self.io.recycle(rx);

        for _ in 0..self.cfg.burst.max(1) * 4 {
            match self.from_server.try_recv() {
                Ok(msg) => {
                    work += 1;
                    self.handle_message(now, msg);
                }
                Err(_) => break,
            }
        }
        work += self.serve_control(now);

        if self.apps.iter().any(Option::is_some) {
            self.handle_app_events();
        }

        let mut joined = false;
        let mut confirmations = 0;
        if let Some(r) = self.replicator.as_mut() {
            work += r.poll(now);
            let attached = r.standby_attached();
            joined = attached && !self.was_attached;
            self.was_attached = attached;
            let mut confirmed = Vec::new();
            while let Some(flow) = r.poll_confirmed() {
                confirmed.push(flow);
            }
            confirmations += confirmed.len();
            for flow in confirmed {
                let id = FlowId::from_u64(flow);
                if let Some(f) = self.flows.get_mut(id) {
                    if f.standby == Standby::Waiting {
                        f.standby = Standby::Confirmed;
                        f.replica_data = f.policy == AckPolicy::Replica && !f.rejoined;
                        work += 1;
                        self.mark(id);
                        self.ctl.replication_confirmed(now, flow);
                    }
                }
            }
        }

        if joined {
            self.start_snapshot();
        }

        if let Some(r) = self.replicator.as_mut() {
            let mut stored = std::mem::take(&mut self.stored_scratch);
            while let Some(s) = r.poll_stored() {
                stored.push(s);
            }
            confirmations += stored.len();
            for s in stored.drain(..) {
                let id = FlowId::from_u64(s.flow);
                let Some(f) = self.flows.get_mut(id) else { continue };
                work += 1;
                match s.dir {
                    RelayDir::ClientToServer => f.c2s_stored = f.c2s_stored.max(s.up_to),
                    RelayDir::ServerToClient => {
                        if s.up_to > f.s2c_stored {
                            f.s2c_stored = s.up_to;
                            if let Some(server) = f.server {
                                self.outbox.push_back(ToServer::Stored { server, up_to: s.up_to });
                            }
                        }
                    }
                }
                self.mark(id);
            }
            self.stored_scratch = stored;
            // Confirmations free the channel's window: flows it refused try again.
            if confirmations > 0 && !self.repl_blocked.is_empty() {
                let mut blocked = std::mem::take(&mut self.repl_blocked);
                for id in blocked.drain(..) {
                    if let Some(f) = self.flows.get_mut(id) {
                        f.repl_blocked = false;
                    }
                    self.mark(id);
                }
                self.repl_blocked = blocked;
            }
        }

        while let Some((slot, generation, at)) = self.timers.pop_due(now) {
            let id = FlowId::from_u64((u64::from(generation) << 32) | u64::from(slot));
            let Some(f) = self.flows.get_mut(id) else { continue };
            if f.timer != at {
                continue;
            }
            f.timer = Instant::FAR_FUTURE;
            if let Phase::Open(conn) = &mut f.phase {
                conn.handle_timeout(now);
            }
            work += 1;
            self.mark(id);
        }

        let mut dirty = std::mem::take(&mut self.dirty);
        let mut i = 0;
        // Servicing may dirty flows again (a TIME-WAIT replacement); loop until the list is drained.
        while i < dirty.len() {
            let id = dirty[i];
            self.service(now, id);
            i += 1;
            if !self.dirty.is_empty() {
                dirty.append(&mut self.dirty);
            }
        }
        dirty.clear();
        self.dirty = dirty;

        if now >= self.progress_at {
            work += self.flush_progress(now);
        }
        work += self.advance_snapshot(now);

        // The backstop for flows nothing else ended (the engines' own idle timeouts normally do).
        let outbox = &mut self.outbox;
        let expired = self.flows.expire(now, 64, |_, _, f| {
            if let Some(server) = f.server {
                outbox.push_back(ToServer::Abort { server });
            }
        });
        self.stats.flows_closed += expired as u64;

        self.io.flush(now);
        self.flush_outbox();

        let mut next = self.timers.next_deadline().min(self.progress_at);
        if let Some(r) = &self.replicator {
            next = next.min(r.poll_at());
        }
        if let Some(t) = self.io.poll_at() {
            next = next.min(t);
        }
        if let Some(t) = self.flows.next_expiry() {
            next = next.min(t);
        }
        StepOutcome { work, next_deadline: next }
    }
}

/// The SNAT address and the backend of a saved server half (its local and remote ends).
fn server_endpoints(server_half: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    match crate::tcp::SavedConnection::decode(server_half) {
        Ok((s, _)) => (s.local, s.remote),
        Err(_) => (
            SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        ),
    }
}
