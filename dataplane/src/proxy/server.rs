//! Core B: the server-facing protocol core.
//!
//! Owns the server port and the server half of every flow: SNAT source ports, ARP resolution of backends
//! (and the gateway), the active-open engine toward each backend, its ack gate, and the listeners' TCP
//! health checks. Core A asks it to open a flow; it answers once the backend accepted (or refused), then
//! relays bytes and acknowledgments both ways.

use super::chunk::{Backlog, ChunkPool};
use super::msg::{ToClient, ToServer, MAX_CHUNK};
use super::netio::NetIo;
use super::replicate::HalfState;
use super::timers::TimerQueue;
use super::{offset_at, resync_backlog, segment_error_name, seq_at, take_relayed, ProxyConfig};
use crate::balance::health::{HealthAction, HealthChecker, HealthEvent, Reply};
use crate::flow::{FlowId, FlowTable, ServerKey, SnatPorts};
use crate::gate::{AckGate, AckPolicy};
use crate::neigh::{Lookup, NeighCache, NeighConfig, Resolved, Subnet};
use crate::port::Port;
use crate::step::{StepOutcome, Steppable};
use crate::tcp::{self, Connection, Event, State};
use crate::time::Instant;
use crate::wire::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame_with, ArpOperation, ArpRepr,
    EthernetAddress, FrameHeader, FramePayload, Ipv4Address, Ipv4Payload, TcpFlags, TcpOptions, TcpRepr,
};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use super::client::CoreError;

mod control;

/// Counters of core B.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub flows_opened: u64,
    pub flows_connected: u64,
    /// Backend refused or never answered, or no SNAT port was free.
    pub flows_refused: u64,
    pub flows_closed: u64,
    pub flows_reset: u64,
    pub snat_exhausted: u64,
    /// Backend connections retried from another SNAT port after the backend reset the first attempt.
    pub syn_retries: u64,
    /// Relayed bytes that arrived beyond the expected offset (a bug if ever non-zero).
    pub relay_gaps: u64,
    pub table_full: u64,
    pub stray_segments: u64,
    /// Server halves closed on reaching TIME-WAIT (their SNAT port's quarantine stands in for it).
    pub time_wait_closed: u64,
    /// Retransmitted backend FINs to a quarantined port, acknowledged without a flow (no RST).
    pub quarantine_acks: u64,
    pub segment_errors: BTreeMap<&'static str, u64>,
    pub arp_replies: u64,
    pub arp_requests: u64,
    /// Frames not sent because the next hop's MAC is unknown (TCP retransmits them).
    pub unresolved: u64,
    pub icmp_replies: u64,
    pub ignored_frames: u64,
    pub stale_messages: u64,
    pub backpressure: u64,
    pub health_probes: u64,
    pub bytes_from_backends: u64,
    pub bytes_to_backends: u64,
}

fn count(map: &mut BTreeMap<&'static str, u64>, what: &'static str) {
    *map.entry(what).or_insert(0) += 1;
}

struct ServerFlow {
    client_flow: u64,
    policy: AckPolicy,
    client_mss: u16,
    /// FINs (received, queued) the standby has been told about through core A.
    fins_saved: (bool, bool),
    /// Connection attempts made toward the backend for this flow (from different SNAT ports).
    attempt: u8,
    conn: Box<Connection>,
    gate: Option<AckGate>,
    connected: bool,
    /// Backend stream bytes handed to core A.
    s2c_sent: u64,
    /// What the client acknowledged of the backend stream (FIN as one).
    s2c_done: u64,
    /// What the standby stored of the backend stream (policy replica).
    s2c_stored: u64,
    fin_forwarded: bool,
    /// Client bytes not yet in the engine's send buffer.
    c2s_backlog: Backlog,
    /// Stream offset just past the last client byte taken; relayed bytes below it are dropped.
    c2s_next: u64,
    c2s_fin: bool,
    c2s_closed: bool,
    /// What the backend acknowledged of the client stream, as last told to core A.
    c2s_acked_told: u64,
    /// This half's progress as last told to core A (for the standby).
    progress_told: HalfState,
    next_hop: [u8; 4],
    dirty: bool,
    timer: Instant,
}

/// Core B of a box. See the module docs.
pub struct ServerCore<P> {
    cfg: Arc<ProxyConfig>,
    io: NetIo<P>,
    to_client: Sender<ToClient>,
    from_client: Receiver<ToServer>,
    outbox: VecDeque<ToClient>,
    flows: FlowTable<ServerKey, ServerFlow>,
    snat: SnatPorts,
    neigh: NeighCache<FlowId>,
    health: Vec<Option<HealthChecker>>,
    timers: TimerQueue,
    dirty: Vec<FlowId>,
    arp_requests: Vec<[u8; 4]>,
    /// Flows whose next hop is being resolved beyond what the ARP cache queues.
    arp_waiting: Vec<FlowId>,
    scratch: Vec<u8>,
    chunks: ChunkPool,
    stats: ServerStats,
    started: bool,
    /// The control thread's requests (see `proxy::control`).
    ctl: super::control::CoreControl,
    /// Whether core A replicates flows (then it hears each server half's progress).
    report_progress: bool,
    /// A planned switchover stopped this core: frames are no longer taken in.
    intake_stopped: bool,
}

impl<P> std::fmt::Debug for ServerCore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCore").field("flows", &self.flows.len()).field("stats", &self.stats).finish()
    }
}

impl<P: Port> ServerCore<P> {
    pub fn new(
        cfg: Arc<ProxyConfig>,
        port: P,
        to_client: Sender<ToClient>,
        from_client: Receiver<ToServer>,
        now: Instant,
    ) -> Result<Self, CoreError> {
        let flows = FlowTable::new(cfg.max_flows, cfg.flow_idle_timeout, cfg.seed ^ 0x5eed)?;
        let (lo, hi) = cfg.snat_ports;
        let snat = SnatPorts::new(lo, hi, 0, 1, cfg.snat_quarantine)?;
        let (net, len) = cfg.server_net;
        let subnet = Subnet::new(net.octets(), len).ok_or(CoreError::Subnet)?;
        let neigh = NeighCache::new(NeighConfig::default(), subnet, cfg.gateway.map(|g| g.octets()))
            .map_err(|_| CoreError::Subnet)?;
        let mut health = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            match l.health {
                Some(params) if !l.backends.is_empty() => {
                    let addrs: Vec<SocketAddrV4> = l.backends.iter().map(|b| b.0).collect();
                    let (plo, phi) = cfg.probe_ports;
                    health.push(Some(HealthChecker::new(params, &addrs, plo, phi, now)?));
                }
                _ => health.push(None),
            }
        }
        let burst = cfg.burst;
        let scratch = vec![0; usize::from(cfg.server_tcp.mss).max(1500) + 64];
        Ok(ServerCore {
            io: NetIo::new(port, burst),
            to_client,
            from_client,
            outbox: VecDeque::new(),
            flows,
            snat,
            neigh,
            health,
            timers: TimerQueue::with_capacity(cfg.max_flows as usize),
            dirty: Vec::with_capacity(burst * 2),
            arp_requests: Vec::new(),
            arp_waiting: Vec::new(),
            scratch,
            chunks: ChunkPool::new(),
            stats: ServerStats::default(),
            ctl: super::control::CoreControl::new(0),
            started: false,
            report_progress: false,
            intake_stopped: false,
            cfg,
        })
    }

    /// Takes a flow over from a dead primary: `conn` is the restored server half (in resync mode). Returns
    /// the flow's id; core A's id follows with [`ServerCore::link`] once the client half is installed.
    pub fn install(
        &mut self,
        now: Instant,
        policy: AckPolicy,
        mut conn: Connection,
    ) -> Result<u64, CoreError> {
        let local = conn.local();
        let backend = conn.remote();
        self.snat.reserve(self.cfg.snat.octets(), backend, local.port(), now).map_err(CoreError::Snat)?;
        let start = conn.irs().wrapping_add(1);
        let s2c = offset_at(start, conn.rcv_nxt(), 0);
        let c2s = if conn.state().is_synchronized() {
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
        let flow = ServerFlow {
            client_flow: u64::MAX,
            policy,
            client_mss: u16::MAX,
            fins_saved: (false, false),
            attempt: 0,
            conn: Box::new(conn),
            gate,
            connected: true,
            s2c_sent: s2c,
            s2c_done: s2c,
            s2c_stored: s2c,
            fin_forwarded: false,
            c2s_backlog: Backlog::new(),
            // Past the bytes the restored engine was handed (policy replica).
            c2s_next: c2s + send_queued,
            c2s_fin: false,
            c2s_closed: false,
            c2s_acked_told: c2s,
            progress_told: HalfState::default(),
            next_hop: self.cfg.next_hop(*backend.ip()).octets(),
            dirty: false,
            timer: Instant::FAR_FUTURE,
        };
        match self.flows.insert(ServerKey { backend, snat_port: local.port() }, flow, now) {
            Ok(id) => {
                self.stats.flows_opened += 1;
                self.stats.flows_connected += 1;
                Ok(id.to_u64())
            }
            Err(_) => {
                let _ = self.snat.release(self.cfg.snat.octets(), backend, local.port(), now);
                self.stats.table_full += 1;
                Err(CoreError::Takeover("flow table full"))
            }
        }
    }

    /// Ends a takeover: SNAT ports the dead primary may have used last (it hands them out in order, and the
    /// standby only knows the ones of replicated flows) rest in quarantine, so a new flow never reuses a
    /// port on which a backend still holds a half-open connection.
    pub fn finish_takeover(&mut self, now: Instant) {
        let snat_ip = self.cfg.snat.octets();
        let (lo, hi) = self.cfg.snat_ports;
        let highest = self.flows.iter().map(|(_, k, _)| k.snat_port).max().unwrap_or(lo);
        let until = highest.saturating_add(256).min(hi);
        let backends: Vec<SocketAddrV4> =
            self.cfg.listeners.iter().flat_map(|l| l.backends.iter().map(|b| b.0)).collect();
        for backend in backends {
            for port in lo..=until {
                if self.snat.reserve(snat_ip, backend, port, now).is_ok() {
                    let _ = self.snat.release(snat_ip, backend, port, now);
                }
            }
        }
    }

    /// Ties an installed server half to core A's id of its client half, and starts it.
    pub fn link(&mut self, server: u64, client_flow: u64) {
        let id = FlowId::from_u64(server);
        if let Some(f) = self.flows.get_mut(id) {
            f.client_flow = client_flow;
            self.mark(id);
        }
    }

    /// Announces this box as the holder of the SNAT address (gratuitous ARP), for a takeover.
    pub fn announce(&mut self, now: Instant) {
        let snat = self.snat_addr();
        let garp = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.cfg.server_mac,
            source_protocol_addr: snat,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: snat,
        };
        let mac = self.cfg.server_mac;
        self.io.emit(now, |b| build_arp_frame(b, mac, EthernetAddress::BROADCAST, None, &garp));
        self.io.flush(now);
    }

    /// Makes core B report each server half's progress to core A, which replicates it (call it when core
    /// A has a replicator).
    pub fn set_report_progress(&mut self, on: bool) {
        self.report_progress = on;
    }

    /// For a planned switchover: from now on no frame is taken in (the peers retransmit to the box that
    /// takes over), so the state the standby receives stops moving.
    pub fn stop_intake(&mut self) {
        self.intake_stopped = true;
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    pub fn io_stats(&self) -> &super::IoStats {
        &self.io.stats
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn port(&self) -> &P {
        &self.io.port
    }

    /// One line per flow with its relay and engine state, for debugging a stuck flow.
    pub fn debug_flows(&self) -> String {
        let mut out = String::new();
        for (id, key, f) in self.flows.iter() {
            let c = &f.conn;
            out.push_str(&format!(
                "B {:?} {}:{} s2c_sent={} s2c_done={} c2s_backlog={} c2s_told={} fin_fwd={} c2s_fin={} timer={:?} | {:?} snd_una={} snd_max={} rcv_nxt={} ack_sent={} limit={:?} recv_avail={} sendq={} counters={:?}\n",
                id, key.backend, key.snat_port, f.s2c_sent, f.s2c_done, f.c2s_backlog.len(), f.c2s_acked_told, f.fin_forwarded, f.c2s_fin, f.timer,
                c.state(), c.snd_una(), c.snd_max(), c.rcv_nxt(), c.ack_sent(), c.ack_limit(), c.recv_available(), c.send_queue_len(), (c.poll_timeout(), c.snd_wnd(), c.cwnd(), c.rto(), c.counters().timeouts, c.counters().window_probes, c.counters().retransmitted_segs)
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

    fn snat_addr(&self) -> Ipv4Address {
        Ipv4Address(self.cfg.snat.octets())
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
                        port = "server",
                        error = e.as_str(),
                        suppressed,
                        "dropped a malformed frame"
                    );
                }
                return;
            }
        };
        let snat = self.snat_addr();
        let src_mac = frame.ethernet.src_addr;
        match frame.payload {
            FramePayload::Arp(arp) => {
                let (ip, mac) = (arp.source_protocol_addr.0, arp.source_hardware_addr.0);
                let for_us = arp.target_protocol_addr == snat;
                // Learn from what is addressed to us; only refresh what we know from the rest, so a flood
                // of ARP cannot fill the cache (a takeover's gratuitous ARP refreshes).
                let waiting: Vec<FlowId> = if for_us {
                    match self.neigh.learn(ip, mac, now) {
                        Ok(drain) => drain.collect(),
                        Err(_) => Vec::new(),
                    }
                } else {
                    self.neigh.update(ip, mac, now).map(|d| d.collect()).unwrap_or_default()
                };
                for id in waiting {
                    self.mark(id);
                }
                if !self.arp_waiting.is_empty() {
                    for id in std::mem::take(&mut self.arp_waiting) {
                        self.mark(id);
                    }
                }
                if for_us && arp.operation == ArpOperation::Request {
                    let reply = ArpRepr {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: self.cfg.server_mac,
                        source_protocol_addr: snat,
                        target_hardware_addr: arp.source_hardware_addr,
                        target_protocol_addr: arp.source_protocol_addr,
                    };
                    let (mine, to) = (self.cfg.server_mac, arp.source_hardware_addr);
                    if self.io.emit(now, |b| build_arp_frame(b, mine, to, frame.ethernet.vlan, &reply)) {
                        self.stats.arp_replies += 1;
                    }
                }
            }
            FramePayload::Ipv4 { ip, l4: Ipv4Payload::Icmp(icmp), .. } if ip.dst_addr == snat => {
                if let Some(reply) = icmp.reply() {
                    let mut hdr = FrameHeader::new(self.cfg.server_mac, src_mac, snat, ip.src_addr);
                    hdr.vlan = frame.ethernet.vlan;
                    if self.io.emit(now, |b| build_icmp_frame(b, &hdr, &reply)) {
                        self.stats.icmp_replies += 1;
                    }
                }
            }
            FramePayload::Ipv4 { ip, l4: Ipv4Payload::Tcp(tcp), .. } if ip.dst_addr == snat => {
                self.handle_tcp(now, src_mac, Ipv4Addr::from(ip.src_addr.0), &tcp);
            }
            _ => self.stats.ignored_frames += 1,
        }
    }

    fn handle_tcp(&mut self, now: Instant, src_mac: EthernetAddress, src: Ipv4Addr, seg: &TcpRepr<'_>) {
        let backend = SocketAddrV4::new(src, seg.src_port);
        let key = ServerKey { backend, snat_port: seg.dst_port };
        if let Some((id, f)) = self.flows.find_mut(&key, now) {
            match f.conn.handle_segment(now, seg) {
                Ok(()) => {}
                Err(e) => count(&mut self.stats.segment_errors, segment_error_name(e)),
            }
            self.mark(id);
            return;
        }
        let (plo, phi) = self.cfg.probe_ports;
        if (plo..=phi).contains(&seg.dst_port) {
            let reply = if seg.flags.contains(TcpFlags::RST) {
                Some(Reply::Rst)
            } else if seg.flags.contains(TcpFlags::SYN | TcpFlags::ACK) {
                Some(Reply::SynAck)
            } else {
                None
            };
            if let Some(reply) = reply {
                let mut events = Vec::new();
                for (li, checker) in self.health.iter_mut().enumerate() {
                    if let Some(ev) = checker.as_mut().and_then(|c| c.on_reply(backend, seg.dst_port, reply))
                    {
                        events.push((li, ev));
                    }
                }
                for (li, ev) in events {
                    self.health_event(li, ev);
                }
                if reply == Reply::SynAck {
                    // Close the probe's half-open connection at the backend.
                    self.send_rst(now, src_mac, backend, seg.dst_port, seg);
                }
                return;
            }
        }
        if self.snat.is_quarantined(self.cfg.snat.octets(), backend, seg.dst_port) {
            // A half closed at TIME-WAIT: the port's quarantine is its TIME-WAIT. The one thing that comes
            // is the backend's FIN again (our last ACK was lost); ACK it as TIME-WAIT would. Nothing gets
            // a RST here: the backend's old connection may still be closing.
            if seg.flags.contains(TcpFlags::FIN) && seg.flags.contains(TcpFlags::ACK) {
                self.stats.quarantine_acks += 1;
                self.send_time_wait_ack(now, src_mac, backend, seg);
            }
            return;
        }
        self.stats.stray_segments += 1;
        if !seg.flags.contains(TcpFlags::RST) {
            self.send_rst(now, src_mac, backend, seg.dst_port, seg);
        }
    }

    /// Acknowledges a segment (a retransmitted FIN) for a connection that is gone, from its SNAT port.
    fn send_time_wait_ack(
        &mut self,
        now: Instant,
        mac: EthernetAddress,
        to: SocketAddrV4,
        seg: &TcpRepr<'_>,
    ) {
        let ack = TcpRepr {
            src_port: seg.dst_port,
            dst_port: to.port(),
            seq: seg.ack,
            ack: seg.seq.wrapping_add(seg.segment_len() as u32),
            flags: TcpFlags::ACK,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        let hdr = FrameHeader::new(self.cfg.server_mac, mac, self.snat_addr(), Ipv4Address(to.ip().octets()));
        self.io.emit(now, |b| build_tcp_frame(b, &hdr, &ack));
    }

    fn send_rst(
        &mut self,
        now: Instant,
        mac: EthernetAddress,
        to: SocketAddrV4,
        port: u16,
        seg: &TcpRepr<'_>,
    ) {
        let (seq, ack, flags) = if seg.flags.contains(TcpFlags::ACK) {
            (seg.ack, 0, TcpFlags::RST)
        } else {
            (0, seg.seq.wrapping_add(seg.segment_len() as u32), TcpFlags::RST | TcpFlags::ACK)
        };
        let rst = TcpRepr {
            src_port: port,
            dst_port: to.port(),
            seq,
            ack,
            flags,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        let hdr = FrameHeader::new(self.cfg.server_mac, mac, self.snat_addr(), Ipv4Address(to.ip().octets()));
        self.io.emit(now, |b| build_tcp_frame(b, &hdr, &rst));
    }

    fn health_event(&mut self, listener: usize, ev: HealthEvent) {
        let (backend, healthy) = match ev {
            HealthEvent::Down(b) => (b, false),
            HealthEvent::Up(b) => (b, true),
        };
        self.outbox.push_back(ToClient::BackendHealth { listener: listener as u16, backend, healthy });
    }

    fn run_health_checks(&mut self, now: Instant) -> usize {
        let mut actions = Vec::new();
        for (li, checker) in self.health.iter_mut().enumerate() {
            if let Some(c) = checker {
                while let Some(a) = c.poll(now) {
                    actions.push((li, a));
                }
            }
        }
        let n = actions.len();
        for (li, action) in actions {
            match action {
                HealthAction::Event(ev) => self.health_event(li, ev),
                HealthAction::SendProbe(probe) => {
                    let hop = self.cfg.next_hop(*probe.addr.ip()).octets();
                    let Lookup::Known(mac) = self.neigh.lookup(hop, now) else {
                        // No MAC yet: the probe counts as unanswered, as it would on a dead link.
                        continue;
                    };
                    let local = SocketAddrV4::new(self.cfg.snat, probe.src_port);
                    let syn = TcpRepr {
                        src_port: probe.src_port,
                        dst_port: probe.addr.port(),
                        seq: tcp::isn(&self.cfg.server_tcp.isn_secret, local, probe.addr, now),
                        ack: 0,
                        flags: TcpFlags::SYN,
                        window: 1024,
                        urgent: 0,
                        options: TcpOptions { mss: Some(536), ..TcpOptions::default() },
                        payload: &[],
                    };
                    let hdr = FrameHeader::new(
                        self.cfg.server_mac,
                        EthernetAddress(mac),
                        self.snat_addr(),
                        Ipv4Address(probe.addr.ip().octets()),
                    );
                    if self.io.emit(now, |b| build_tcp_frame(b, &hdr, &syn)) {
                        self.stats.health_probes += 1;
                    }
                }
            }
        }
        n
    }

    fn handle_message(&mut self, now: Instant, msg: ToServer) {
        match msg {
            ToServer::Open { client_flow, client: _, vip: _, backend, client_mss, policy } => {
                self.open(now, client_flow, backend, client_mss, policy, 0);
            }
            ToServer::Data { server, offset, chunk } => {
                let id = FlowId::from_u64(server);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        let r = take_relayed(&mut f.c2s_backlog, &mut f.c2s_next, offset, chunk);
                        self.stats.relay_gaps += u64::from(r.gap);
                        self.stats.bytes_to_backends += r.taken as u64;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToServer::Acked { server, up_to } => {
                let id = FlowId::from_u64(server);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.s2c_done = f.s2c_done.max(up_to);
                        let start = f.conn.irs().wrapping_add(1);
                        if let Some(gate) = &mut f.gate {
                            gate.on_received(f.conn.rcv_nxt());
                            gate.on_backend_acked(seq_at(start, f.s2c_done));
                        }
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToServer::Stored { server, up_to } => {
                let id = FlowId::from_u64(server);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.s2c_stored = f.s2c_stored.max(up_to);
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToServer::Save { server } => {
                let id = FlowId::from_u64(server);
                match self.flows.get(id) {
                    Some(f) => {
                        let mut server_half = Vec::with_capacity(crate::tcp::SAVED_LEN);
                        f.conn.save().encode(&mut server_half);
                        self.outbox.push_back(ToClient::Saved { client_flow: f.client_flow, server_half });
                        let (seq, bytes) = super::replicate::owed_bytes(&f.conn, &f.c2s_backlog);
                        let offset = offset_at(f.conn.iss().wrapping_add(1), seq, f.c2s_next);
                        // What the backend was acknowledged, or may be without asking anyone again.
                        let s2c_acked = if f.conn.state().is_synchronized() {
                            offset_at(f.conn.irs().wrapping_add(1), f.conn.ack_sent(), f.s2c_sent)
                                .max(f.s2c_stored)
                        } else {
                            0
                        };
                        // The backend may hold an ACK for bytes still in the receive buffer, too.
                        let (head, tail) = f.conn.recv_peek();
                        let mut s2c_unrelayed = Vec::with_capacity(head.len() + tail.len());
                        s2c_unrelayed.extend_from_slice(head);
                        s2c_unrelayed.extend_from_slice(tail);
                        self.outbox.push_back(ToClient::Owed {
                            client_flow: f.client_flow,
                            seq,
                            offset,
                            bytes,
                            s2c_acked,
                            s2c_from: f.s2c_sent,
                            s2c_unrelayed,
                        });
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToServer::Fin { server } => {
                let id = FlowId::from_u64(server);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.c2s_fin = true;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
            ToServer::Abort { server } => {
                let id = FlowId::from_u64(server);
                match self.flows.get_mut(id) {
                    Some(f) => {
                        f.conn.abort();
                        f.client_flow = u64::MAX;
                        self.stats.flows_reset += 1;
                        self.mark(id);
                    }
                    None => self.stats.stale_messages += 1,
                }
            }
        }
    }

    fn open(
        &mut self,
        now: Instant,
        client_flow: u64,
        backend: SocketAddrV4,
        client_mss: u16,
        policy: AckPolicy,
        attempt: u8,
    ) {
        let snat_ip = self.cfg.snat.octets();
        let port = match self.snat.allocate(snat_ip, backend, now) {
            Ok(p) => p,
            Err(_) => {
                self.stats.snat_exhausted += 1;
                self.stats.flows_refused += 1;
                self.outbox.push_back(ToClient::Refused { client_flow });
                return;
            }
        };
        let local = SocketAddrV4::new(self.cfg.snat, port);
        let mut tcp_cfg = self.cfg.server_tcp.clone();
        tcp_cfg.mss = tcp_cfg.mss.min(client_mss).max(64);
        let iss = tcp::isn(&tcp_cfg.isn_secret, local, backend, now);
        let conn = Connection::connect(now, &tcp_cfg, local, backend, iss);
        let flow = ServerFlow {
            client_flow,
            policy,
            client_mss,
            fins_saved: (false, false),
            attempt,
            conn: Box::new(conn),
            gate: None,
            connected: false,
            s2c_sent: 0,
            s2c_done: 0,
            s2c_stored: 0,
            fin_forwarded: false,
            c2s_backlog: Backlog::new(),
            c2s_next: 0,
            c2s_fin: false,
            c2s_closed: false,
            c2s_acked_told: 0,
            progress_told: HalfState::default(),
            next_hop: self.cfg.next_hop(*backend.ip()).octets(),
            dirty: false,
            timer: Instant::FAR_FUTURE,
        };
        match self.flows.insert(ServerKey { backend, snat_port: port }, flow, now) {
            Ok(id) => {
                self.stats.flows_opened += 1;
                self.mark(id);
            }
            Err(_) => {
                let _ = self.snat.release(snat_ip, backend, port, now);
                self.stats.table_full += 1;
                self.stats.flows_refused += 1;
                self.outbox.push_back(ToClient::Refused { client_flow });
            }
        }
    }

    fn service(&mut self, now: Instant, id: FlowId) {
        let client_room = self.cfg.client_tcp.send_buffer as u64;
        let Some(f) = self.flows.get_mut(id) else { return };
        f.dirty = false;
        let conn = &mut f.conn;

        let mut refused = false;
        let mut reset = false;
        let mut over = false;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Connected => {
                    f.connected = true;
                    if f.policy != AckPolicy::None {
                        let gate = AckGate::new(f.policy, conn.irs().wrapping_add(1), 0);
                        conn.set_ack_limit(Some(gate.allowed()));
                        f.gate = Some(gate);
                    }
                    self.stats.flows_connected += 1;
                    let mut server_half = Vec::with_capacity(crate::tcp::SAVED_LEN);
                    conn.save().encode(&mut server_half);
                    self.outbox.push_back(ToClient::Connected {
                        client_flow: f.client_flow,
                        server: id.to_u64(),
                        backend_mss: conn.negotiated().0,
                        server_half,
                    });
                }
                Event::Reset | Event::TimedOut => {
                    if f.connected {
                        reset = true;
                    } else {
                        refused = true;
                    }
                }
                Event::Closed => over = true,
                Event::SendResynced { to, .. } => {
                    resync_backlog(&mut f.c2s_backlog, &mut f.c2s_next, conn.iss(), to)
                }
                Event::PeerClosed => {}
            }
        }

        // Client → backend: into the send buffer as space allows, then the FIN.
        f.c2s_backlog.pump(|b| conn.send(b));
        if f.c2s_fin && !f.c2s_closed && f.c2s_backlog.is_empty() {
            f.c2s_closed = true;
            conn.close();
        }

        // After a takeover the client may hold backend bytes this box never relayed (the dead primary
        // did): the server half skips them.
        if f.s2c_done > f.s2c_sent
            && !f.fin_forwarded
            && conn.state().is_synchronized()
            && conn.recv_available() == 0
        {
            conn.advance_rcv_edge(seq_at(conn.irs().wrapping_add(1), f.s2c_done));
            f.s2c_sent = f.s2c_done;
        }

        // Backend → client, within the room the client half has.
        if f.connected && f.client_flow != u64::MAX {
            let in_flight = f.s2c_sent.saturating_sub(f.s2c_done);
            let mut room = client_room.saturating_sub(in_flight);
            while room > 0 {
                let (head, _) = conn.recv_peek();
                let n = head.len().min(MAX_CHUNK).min(room as usize);
                if n == 0 {
                    break;
                }
                let chunk = self.chunks.copy_from(&head[..n]);
                conn.recv_consume(n);
                f.s2c_sent += n as u64;
                room -= n as u64;
                self.stats.bytes_from_backends += n as u64;
                self.outbox.push_back(ToClient::Data {
                    client_flow: f.client_flow,
                    offset: f.s2c_sent - n as u64,
                    chunk,
                });
            }
            if !f.fin_forwarded && conn.is_recv_closed() && conn.recv_available() == 0 {
                f.fin_forwarded = true;
                self.outbox.push_back(ToClient::Fin { client_flow: f.client_flow });
            }
            if self.report_progress && conn.state().is_synchronized() {
                let p = HalfState::of(conn);
                if p != f.progress_told {
                    f.progress_told = p;
                    self.outbox.push_back(ToClient::Progress { client_flow: f.client_flow, server: p });
                }
            }
            // Tell core A how far the backend acknowledged the client's bytes (it gates the client's ACKs).
            let acked = offset_at(conn.iss().wrapping_add(1), conn.snd_una(), f.c2s_acked_told);
            if acked > f.c2s_acked_told && acked < (1 << 62) {
                f.c2s_acked_told = acked;
                self.outbox.push_back(ToClient::Acked { client_flow: f.client_flow, up_to: acked });
            }
        }

        if let Some(gate) = &mut f.gate {
            gate.on_received(conn.rcv_nxt());
            let start = conn.irs().wrapping_add(1);
            match f.policy {
                AckPolicy::Backend => {
                    gate.on_backend_acked(seq_at(start, f.s2c_done));
                }
                // Safe once the standby has it, or once the client has it (a FIN, a fallback).
                AckPolicy::Replica => {
                    gate.on_replica_stored(seq_at(start, f.s2c_stored.max(f.s2c_done)));
                }
                AckPolicy::None | AckPolicy::App => {}
            }
            conn.set_ack_limit(Some(gate.allowed()));
        }

        // A FIN either way changes what a standby must resume: send core A the half as it is now.
        let fins = (conn.is_recv_closed(), f.c2s_closed);
        if f.connected && f.client_flow != u64::MAX && fins != f.fins_saved && (fins.0 || fins.1) {
            f.fins_saved = fins;
            let mut server_half = Vec::with_capacity(crate::tcp::SAVED_LEN);
            conn.save().encode(&mut server_half);
            self.outbox.push_back(ToClient::Saved { client_flow: f.client_flow, server_half });
        }

        // Transmit, once the next hop's MAC is known.
        let hop = f.next_hop;
        let key = self.flows.key(id).copied();
        let mac = match self.neigh.resolve(hop, id, now) {
            Resolved::Send(mac, _) => Some(mac),
            Resolved::Queued { dropped } => {
                // More flows wait for this address than the cache queues: the one pushed out waits here,
                // and every waiting flow is serviced again when an ARP answer arrives.
                if let Some(other) = dropped {
                    self.arp_waiting.push(other);
                }
                None
            }
            // Unreachable: let the engine run its timers; its frames are dropped until it gives up.
            Resolved::Unreachable(_) => Some([0; 6]),
        };
        let Some(f) = self.flows.get_mut(id) else { return };
        let conn = &mut f.conn;
        if let (Some(mac), Some(key)) = (mac, key) {
            let hdr = FrameHeader::new(
                self.cfg.server_mac,
                EthernetAddress(mac),
                Ipv4Address(self.cfg.snat.octets()),
                Ipv4Address(key.backend.ip().octets()),
            );
            if mac == [0; 6] {
                while conn.poll_transmit(now, &mut self.scratch).is_some() {
                    self.stats.unresolved += 1;
                }
            } else {
                // Each segment's payload goes from the send buffer straight into its frame.
                while self.io.emit_segment(now, &hdr, &mut self.scratch, |out| conn.poll_transmit(now, out)) {
                }
            }
        }
        if conn.state() == State::Closed {
            over = true;
        }
        // TIME-WAIT ends here rather than after its timer, once everything is settled: the backend's FIN
        // acknowledged (no ACK withheld), nothing left to relay, and the client's ACK of that FIN heard
        // (so core A has nothing more to tell this half). The SNAT port's quarantine, longer than
        // TIME-WAIT, keeps the 4-tuple unused meanwhile, and a retransmitted FIN is answered from it.
        // A busy core B's table then holds live flows, not a TIME-WAIT backlog of conn/s x TIME-WAIT.
        if conn.state() == State::TimeWait
            && conn.ack_sent() == conn.rcv_nxt()
            && conn.recv_available() == 0
            && f.fin_forwarded
            && f.s2c_done > f.s2c_sent
            && self.cfg.snat_quarantine >= self.cfg.server_tcp.time_wait
        {
            self.stats.time_wait_closed += 1;
            over = true;
        }

        // A backend that resets our SYN may still hold an old connection on that SNAT port (one the dead
        // primary opened just before a takeover): try again from another port before refusing the client.
        if refused && f.attempt < 2 && f.client_flow != u64::MAX && conn.counters().segs_in > 0 {
            let (client_flow, mss, policy, attempt) = (f.client_flow, f.client_mss, f.policy, f.attempt + 1);
            let backend = self.flows.key(id).map(|k| k.backend);
            self.remove(now, id);
            if let Some(backend) = backend {
                self.stats.syn_retries += 1;
                self.open(now, client_flow, backend, mss, policy, attempt);
            }
            return;
        }
        if refused || reset || over {
            let client_flow = f.client_flow;
            if client_flow != u64::MAX {
                if refused {
                    self.stats.flows_refused += 1;
                    self.outbox.push_back(ToClient::Refused { client_flow });
                } else if reset {
                    self.stats.flows_reset += 1;
                    self.outbox.push_back(ToClient::Abort { client_flow });
                }
            }
            self.remove(now, id);
            return;
        }
        if let Some(at) = conn.poll_timeout() {
            if at < f.timer {
                f.timer = at;
                self.timers.arm(at, id.index(), id.generation());
            }
        }
    }

    fn remove(&mut self, now: Instant, id: FlowId) {
        if let Some((key, _)) = self.flows.remove(id) {
            let _ = self.snat.release(self.cfg.snat.octets(), key.backend, key.snat_port, now);
            self.stats.flows_closed += 1;
        }
    }

    fn flush_outbox(&mut self) {
        while let Some(msg) = self.outbox.pop_front() {
            match self.to_client.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.stats.backpressure += 1;
                    self.outbox.push_front(msg);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
    }

    fn send_arp_requests(&mut self, now: Instant) {
        let mut requests = std::mem::take(&mut self.arp_requests);
        self.neigh.poll(now, &mut requests);
        for ip in requests.drain(..) {
            let req = ArpRepr {
                operation: ArpOperation::Request,
                source_hardware_addr: self.cfg.server_mac,
                source_protocol_addr: self.snat_addr(),
                target_hardware_addr: EthernetAddress::UNSPECIFIED,
                target_protocol_addr: Ipv4Address(ip),
            };
            let mac = self.cfg.server_mac;
            if self.io.emit(now, |b| build_arp_frame(b, mac, EthernetAddress::BROADCAST, None, &req)) {
                self.stats.arp_requests += 1;
            }
        }
        self.arp_requests = requests;
    }
}

impl<P: Port> Steppable for ServerCore<P> {
    fn step(&mut self, now: Instant) -> StepOutcome {
        let mut work = 0;
        if !self.started {
            // Resolve every backend's next hop before the first client arrives.
            self.started = true;
            let hops: Vec<[u8; 4]> = self
                .cfg
                .listeners
                .iter()
                .flat_map(|l| l.backends.iter().map(|b| self.cfg.next_hop(*b.0.ip()).octets()))
                .collect();
            for hop in hops {
                let _ = self.neigh.lookup(hop, now);
            }
            // Gratuitous ARP at start: the server LAN learns where the SNAT address lives.
            self.announce(now);
        }

        let rx = self.io.recv_burst(now);
        work += rx.len();
        for buf in &rx {
            self.handle_frame(now, buf.data());
        }
        self.io.recycle(rx);

        for _ in 0..self.cfg.burst.max(1) * 4 {
            match self.from_client.try_recv() {
                Ok(msg) => {
                    work += 1;
                    self.handle_message(now, msg);
                }
                Err(_) => break,
            }
        }
        work += self.serve_control(now);

        while let Some((slot, generation, at)) = self.timers.pop_due(now) {
            let id = FlowId::from_u64((u64::from(generation) << 32) | u64::from(slot));
            let Some(f) = self.flows.get_mut(id) else { continue };
            if f.timer != at {
                continue;
            }
            f.timer = Instant::FAR_FUTURE;
            f.conn.handle_timeout(now);
            work += 1;
            self.mark(id);
        }

        let mut dirty = std::mem::take(&mut self.dirty);
        let mut i = 0;
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

        work += self.run_health_checks(now);
        self.send_arp_requests(now);

        let outbox = &mut self.outbox;
        let snat = &mut self.snat;
        let snat_ip = self.cfg.snat.octets();
        let expired = self.flows.expire(now, 64, |_, key, f| {
            let _ = snat.release(snat_ip, key.backend, key.snat_port, now);
            if f.client_flow != u64::MAX {
                outbox.push_back(ToClient::Abort { client_flow: f.client_flow });
            }
        });
        self.stats.flows_closed += expired as u64;

        self.io.flush(now);
        self.flush_outbox();

        let mut next = self.timers.next_deadline().min(self.neigh.next_deadline());
        for c in self.health.iter().flatten() {
            next = next.min(c.next_deadline());
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
