//! Core A: the client-facing protocol core.
//!
//! Owns the client port and the client half of every flow. Per step: receive a burst of frames (ARP and
//! ICMP for the VIP answered here, TCP fed to the flows' engines), take core B's messages, run due timers,
//! then service every flow that was touched: pump bytes between the engine and core B (or the hosted
//! application), move the ack gate, and transmit what the engine has to say.

use super::msg::{ToClient, ToServer, MAX_CHUNK};
use super::netio::NetIo;
use super::replicate::{FlowOpened, ReplicateError, Replicator};
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
    s2c_backlog: VecDeque<u8>,
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
    dirty: bool,
    timer: Instant,
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
    stats: ClientStats,
    started: bool,
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
    #[error(
        "listeners[{0}]: policy replica needs a standby and replication, which this build does not have yet"
    )]
    ReplicaUnsupported(usize),
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
                AckPolicy::Replica => return Err(CoreError::ReplicaUnsupported(i)),
                AckPolicy::App => {
                    if apps.get(i).is_none_or(|a| a.is_none()) {
                        return Err(CoreError::NoApplication(i));
                    }
                    pools.push(None);
                }
                AckPolicy::None | AckPolicy::Backend => {
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
            scratch,
            stats: ClientStats::default(),
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
            s2c_backlog: VecDeque::new(),
            s2c_fin: false,
            s2c_closed: false,
            s2c_acked_told: s2c,
            standby: Standby::NotReplicated,
            saved_server: Vec::new(),
            standby_established: false,
            fins_saved: (false, false),
            server_changed: false,
            s2c_next: s2c,
            dirty: false,
            timer: Instant::FAR_FUTURE,
        };
        let id = self.flows.insert(key, flow, now)?;
        self.stats.flows_opened += 1;
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
        let frame = match parse_frame_with(bytes, self.cfg.checksum) {
            Ok(f) => f,
            Err(e) => {
                self.io.stats.count_bad(e);
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
        let policy = listener.policy;
        let backend = match self.pools.get(usize::from(li)).and_then(|p| p.as_ref()) {
            Some(pool) => match pool.pick(key.client, key.vip) {
                Some(b) => pool.backend(b).map(|be| (b, be.addr)),
                None => None,
            },
            None => None,
        };
        if policy != AckPolicy::App && backend.is_none() {
            self.stats.flows_refused += 1;
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
            s2c_backlog: VecDeque::new(),
            s2c_fin: false,
            s2c_closed: false,
            s2c_acked_told: 0,
            standby: Standby::NotReplicated,
            saved_server: Vec::new(),
            standby_established: false,
            fins_saved: (false, false),
            server_changed: false,
            s2c_next: 0,
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
                self.remove(now, id, false);
            }
            ToClient::Data { client_flow, offset, chunk } => {
                let id = FlowId::from_u64(client_flow);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        let r = take_relayed(&mut f.s2c_backlog, &mut f.s2c_next, offset, &chunk);
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
                        f.s2c_backlog.extend(data.iter());
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

        // Backend → client: into the send buffer as space allows, then the FIN.
        while !f.s2c_backlog.is_empty() {
            let (head, _) = f.s2c_backlog.as_slices();
            let n = conn.send(head);
            if n == 0 {
                break;
            }
            f.s2c_backlog.drain(..n);
        }
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
                let chunk = head[..n].to_vec();
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
        if let (true, Some(r)) =
            (f.standby == Standby::ToOffer || established_pending, self.replicator.as_mut())
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
                Ok(()) if established_pending => {
                    f.standby_established = true;
                    f.fins_saved = fins;
                    f.server_changed = false;
                }
                Ok(()) => f.standby = Standby::Waiting,
                Err(ReplicateError::Busy) => {}
                Err(ReplicateError::Unprotectable) => {
                    self.stats.unprotected += 1;
                    f.standby = Standby::NotReplicated;
                }
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
            if f.policy == AckPolicy::Backend {
                gate.on_backend_acked(seq_at(conn.irs().wrapping_add(1), f.c2s_done));
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
            while let Some(t) = conn.poll_transmit(now, &mut self.scratch) {
                let payload = self.scratch.get(..t.payload_len).unwrap_or(&[]);
                let repr = TcpRepr { payload, ..t.repr };
                self.io.emit(now, |b| build_tcp_frame(b, &hdr, &repr));
            }
        }
        if conn.state() == State::Closed {
            over = true;
        }

        if reset || over {
            if reset {
                if let Some(server) = f.server.take() {
                    self.outbox.push_back(ToServer::Abort { server });
                }
                self.stats.flows_reset += 1;
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

        if self.apps.iter().any(Option::is_some) {
            self.handle_app_events();
        }

        if let Some(r) = self.replicator.as_mut() {
            work += r.poll(now);
            let mut confirmed = Vec::new();
            while let Some(flow) = r.poll_confirmed() {
                confirmed.push(flow);
            }
            for flow in confirmed {
                let id = FlowId::from_u64(flow);
                if let Some(f) = self.flows.get_mut(id) {
                    if f.standby == Standby::Waiting {
                        f.standby = Standby::Confirmed;
                        work += 1;
                        self.mark(id);
                    }
                }
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

        let mut next = self.timers.next_deadline();
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
