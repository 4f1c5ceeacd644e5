//! Whole-pipeline throughput: the proxy's two cores (core A client-facing, core B server-facing) driven over
//! in-memory links by a ring-level TCP traffic generator, with a trivial L2 forwarder over the same links
//! and generator as the baseline in the same run.
//!
//! Run with `cargo run --release -p holdfast-benches --bin pipeline [-- --flows 1,10000,1000000 --secs 1]`,
//! or `scripts/bench.sh`. Each flow count runs in a child process of its own (`--one FLOWS`), so its memory
//! figures start from a fresh heap.
//!
//! The generator is not a TCP stack: it is a scripted peer on each side that builds frames with
//! `dataplane::wire` and answers what the proxy sends (SYN-ACKs, ACKs, FINs, ARP) the way a well-behaved
//! peer would, with as little work of its own as it can. Everything runs in one thread on a virtual
//! clock; each core's CPU time (the thread's, so preemption on a shared machine is not counted) is
//! measured around its own `step` calls only, so "per core" figures are the packets a core handled
//! divided by the time that core spent, as if it had a CPU of its own.
//!
//! Figures:
//! - established fast path, client → backend under policy `backend` (every byte's ACK withheld until the
//!   backend acknowledged it), 64 B and 1,460 B payloads, for each flow count: Mpps received per core;
//! - connections per second per core pair: SYN, handshake at both sides, FIN both ways, TIME-WAIT;
//! - bytes of state per flow: resident memory grown per established flow (after the handshakes, and after
//!   the data runs), the process's RSS, and `size_of` the engine;
//! - each figure beside the L2 forwarder's on the same generator and links, as a ratio. For connections,
//!   the forwarder's figure is its 64 B frame rate over the frames of a direct connection.

use dataplane::buf::{PacketBuf, Pool};
use dataplane::gate::AckPolicy;
use dataplane::port::mem::{self, MemConfig, MemPort};
use dataplane::port::Port;
use dataplane::proxy::{ClientCore, ListenerConfig, ProxyConfig, ServerCore};
use dataplane::step::Steppable;
use dataplane::time::{Clock, Duration, Instant, VirtualClock};
use dataplane::wire::{
    build_arp_frame, build_tcp_frame, parse_frame_with, ArpOperation, ArpRepr, ChecksumMode, EthernetAddress,
    FrameHeader, FramePayload, Ipv4Address, Ipv4Payload, TcpFlags, TcpOptions, TcpRepr,
};
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Res<T> = Result<T, Box<dyn Error>>;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const PORT: u16 = 80;
const PROXY_C_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const PROXY_S_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const GEN_C_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const GEN_S_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];
/// Source ports per client address; flow `i` comes from address `i / PORTS_PER_IP`.
const PORTS_PER_IP: u32 = 50_000;
/// Backends: the SNAT port space (51k) is per backend, so enough of them for every flow.
const BACKENDS: usize = 32;
const BURST: usize = 32;
/// Packet buffers shared by all links. The mem port's pool recycles buffers first in, first out, so a pool
/// much larger than the last-level cache makes every frame a cache miss that a NIC's per-core mempool
/// cache (last in, first out) would not; 8,192 buffers (16 MiB) cover every frame a round has in flight.
const POOL_BUFFERS: usize = 8192;
/// `--nic-rx-checksum`: the cores trust received checksums, as they would behind a NIC that verifies
/// them (every NIC the dataplane targets does); the default verifies each one in software.
static NIC_RX_CHECKSUM: AtomicBool = AtomicBool::new(false);

fn client_addr(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0xC613_0000 | (i / PORTS_PER_IP)), 10_000 + (i % PORTS_PER_IP) as u16)
}

fn flow_of(ip: Ipv4Address, port: u16) -> Option<u32> {
    let hi = u32::from_be_bytes(ip.0).checked_sub(0xC613_0000)?;
    let lo = u32::from(port.checked_sub(10_000)?);
    (lo < PORTS_PER_IP).then(|| hi * PORTS_PER_IP + lo)
}

fn backend_ip(b: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 10 + b as u8)
}

fn config(max_flows: u32, buffer: usize) -> ProxyConfig {
    let tcp = dataplane::tcp::Config {
        send_buffer: buffer,
        recv_buffer: buffer,
        time_wait: Duration::from_millis(5),
        delayed_ack: Duration::from_micros(200),
        isn_secret: [3; 16],
        ..Default::default()
    };
    ProxyConfig {
        vip: VIP,
        client_mac: EthernetAddress(PROXY_C_MAC),
        snat: SNAT,
        server_mac: EthernetAddress(PROXY_S_MAC),
        server_net: (Ipv4Addr::new(198, 18, 2, 0), 24),
        gateway: None,
        listeners: vec![ListenerConfig {
            port: PORT,
            policy: AckPolicy::Backend,
            backends: (0..BACKENDS).map(|b| (SocketAddrV4::new(backend_ip(b), PORT), 1)).collect(),
            balance: dataplane::balance::Algorithm::Maglev,
            health: None,
        }],
        client_tcp: tcp.clone(),
        server_tcp: tcp,
        max_flows,
        flow_idle_timeout: Duration::from_secs(3600),
        snat_ports: (10_000, 60_999),
        probe_ports: (61_000, 61_999),
        snat_quarantine: Duration::from_millis(5),
        burst: BURST,
        checksum: if NIC_RX_CHECKSUM.load(Ordering::Relaxed) {
            ChecksumMode::Skip
        } else {
            ChecksumMode::Verify
        },
        seed: 1,
    }
}

/// Client side of one flow, as the generator keeps it.
#[derive(Debug, Clone, Copy, Default)]
struct CFlow {
    state: u8,
    iss: u32,
    snd_nxt: u32,
    snd_una: u32,
    rcv_nxt: u32,
}
const IDLE: u8 = 0;
const SYN_SENT: u8 = 1;
const EST: u8 = 2;
const FIN_SENT: u8 = 3;

/// Server side of one flow (indexed by backend and SNAT port).
#[derive(Debug, Clone, Copy, Default)]
struct SFlow {
    iss: u32,
    rcv_nxt: u32,
    ack_due: bool,
    closed: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct GenCounters {
    data_segs: u64,
    /// Payload bytes the backends received in order (the forwarder's: every payload byte that came out).
    delivered: u64,
    conns_done: u64,
    resets: u64,
}

/// The generator's two ends.
#[derive(Debug)]
struct Generator {
    cport: MemPort,
    sport: MemPort,
    flows: Vec<CFlow>,
    servers: Vec<SFlow>,
    dirty: Vec<usize>,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    payload: Vec<u8>,
    seg: usize,
    /// Segments in flight per flow at most.
    window: u32,
    next: usize,
    /// Baseline mode: nothing answers, so every segment counts as acknowledged once sent.
    pretend_acked: bool,
    /// The links' buffers: the generator offers data only while a quarter of them are free, so it never
    /// loses a segment to an empty pool (a lost segment would stall its flow for good: the generator
    /// does not retransmit) and the figures count what was relayed, not what was offered.
    pool: Pool,
    n: CountersWrap,
}

#[derive(Debug, Default)]
struct CountersWrap(GenCounters);

impl Generator {
    fn emit(port: &mut MemPort, tx: &mut Vec<PacketBuf>, f: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let Some(mut b) = port.alloc() else { return };
        let room = b.tailroom();
        let Ok(space) = b.append(room) else { return };
        match f(space) {
            Some(len) => {
                b.truncate(len);
                tx.push(b);
            }
            None => drop(b),
        }
    }

    fn client_frame(&mut self, now: Instant, i: u32, seq: u32, ack: u32, flags: TcpFlags, len: usize) {
        let (ip, port) = client_addr(i);
        let hdr = FrameHeader::new(
            EthernetAddress(GEN_C_MAC),
            EthernetAddress(PROXY_C_MAC),
            Ipv4Address(ip.octets()),
            Ipv4Address(VIP.octets()),
        );
        let options = if flags.contains(TcpFlags::SYN) {
            TcpOptions { mss: Some(1460), ..TcpOptions::default() }
        } else {
            TcpOptions::default()
        };
        let payload = self.payload.get(..len).unwrap_or(&[]);
        let repr = TcpRepr {
            src_port: port,
            dst_port: PORT,
            seq,
            ack,
            flags,
            window: 65_535,
            urgent: 0,
            options,
            payload,
        };
        Self::emit(&mut self.cport, &mut self.tx, |b| build_tcp_frame(b, &hdr, &repr).ok());
        if self.tx.len() >= BURST {
            self.cport.send(now, &mut self.tx);
            self.tx.clear();
        }
    }

    /// Opens flows `range` (SYNs).
    fn open(&mut self, now: Instant, range: std::ops::Range<u32>) {
        for i in range {
            let Some(f) = self.flows.get_mut(i as usize) else { continue };
            f.iss = i.wrapping_mul(2_654_435_761);
            f.state = SYN_SENT;
            let iss = f.iss;
            self.client_frame(now, i, iss, 0, TcpFlags::SYN, 0);
        }
        self.flush_c(now);
    }

    fn flush_c(&mut self, now: Instant) {
        if !self.tx.is_empty() {
            self.cport.send(now, &mut self.tx);
            self.tx.clear();
        }
    }

    fn flush_s(&mut self, now: Instant) {
        if !self.tx.is_empty() {
            self.sport.send(now, &mut self.tx);
            self.tx.clear();
        }
    }

    /// Sends up to `budget` data segments, round robin over established flows with window left.
    fn send_data(&mut self, now: Instant, budget: usize) {
        let n = self.flows.len();
        let mut sent = 0;
        let mut scanned = 0;
        while sent < budget && scanned < n {
            let i = self.next;
            self.next = (self.next + 1) % n.max(1);
            scanned += 1;
            let Some(mut f) = self.flows.get(i).copied() else { continue };
            if f.state != EST {
                continue;
            }
            if self.pool.available() < POOL_BUFFERS / 4 {
                break;
            }
            if self.pretend_acked {
                f.snd_una = f.snd_nxt;
                if let Some(slot) = self.flows.get_mut(i) {
                    slot.snd_una = f.snd_nxt;
                }
            }
            let in_flight = f.snd_nxt.wrapping_sub(f.snd_una);
            let mut k = 0;
            let mut seq = f.snd_nxt;
            while in_flight + k * self.seg as u32 + (self.seg as u32) <= self.window * self.seg as u32
                && sent < budget
            {
                self.client_frame(now, i as u32, seq, f.rcv_nxt, TcpFlags::ACK | TcpFlags::PSH, self.seg);
                seq = seq.wrapping_add(self.seg as u32);
                k += 1;
                sent += 1;
            }
            if let Some(f) = self.flows.get_mut(i) {
                f.snd_nxt = seq;
            }
            self.n.0.data_segs += u64::from(k);
        }
        self.flush_c(now);
    }

    /// Answers what the proxy sent to the clients. With `close`, a flow closes as soon as it is set up.
    fn client_rx(&mut self, now: Instant, close: bool) {
        let mut rx = std::mem::take(&mut self.rx);
        self.cport.recv(now, &mut rx, 4096);
        for buf in rx.drain(..) {
            let Ok(frame) = parse_frame_with(buf.data(), ChecksumMode::Skip) else { continue };
            let Some((ip, seg)) = frame.tcp() else { continue };
            let Some(i) = flow_of(ip.dst_addr, seg.dst_port) else { continue };
            let Some(mut f) = self.flows.get(i as usize).copied() else { continue };
            if seg.flags.contains(TcpFlags::RST) {
                self.n.0.resets += 1;
                f.state = IDLE;
            } else if seg.flags.contains(TcpFlags::SYN) && f.state == SYN_SENT {
                f.rcv_nxt = seg.seq.wrapping_add(1);
                f.snd_una = seg.ack;
                f.snd_nxt = seg.ack;
                if close {
                    self.client_frame(now, i, f.snd_nxt, f.rcv_nxt, TcpFlags::ACK | TcpFlags::FIN, 0);
                    f.snd_nxt = f.snd_nxt.wrapping_add(1);
                    f.state = FIN_SENT;
                } else {
                    self.client_frame(now, i, f.snd_nxt, f.rcv_nxt, TcpFlags::ACK, 0);
                    f.state = EST;
                }
            } else {
                if seg.flags.contains(TcpFlags::ACK) && (seg.ack.wrapping_sub(f.snd_una) as i32) > 0 {
                    f.snd_una = seg.ack;
                }
                if seg.flags.contains(TcpFlags::FIN) {
                    f.rcv_nxt = seg.seq.wrapping_add(seg.payload.len() as u32 + 1);
                    self.client_frame(now, i, f.snd_nxt, f.rcv_nxt, TcpFlags::ACK, 0);
                    if f.state == FIN_SENT {
                        f.state = IDLE;
                        self.n.0.conns_done += 1;
                    }
                }
            }
            if let Some(slot) = self.flows.get_mut(i as usize) {
                *slot = f;
            }
        }
        self.rx = rx;
        self.flush_c(now);
    }

    /// Plays every backend: ARP, SYN-ACK, one cumulative ACK per flow per burst, FIN answered with FIN.
    fn server_rx(&mut self, now: Instant) {
        let mut rx = std::mem::take(&mut self.rx);
        self.sport.recv(now, &mut rx, 4096);
        for buf in rx.drain(..) {
            let Ok(frame) = parse_frame_with(buf.data(), ChecksumMode::Skip) else { continue };
            match frame.payload {
                FramePayload::Arp(arp) if arp.operation == ArpOperation::Request => {
                    let reply = ArpRepr {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: EthernetAddress(GEN_S_MAC),
                        source_protocol_addr: arp.target_protocol_addr,
                        target_hardware_addr: arp.source_hardware_addr,
                        target_protocol_addr: arp.source_protocol_addr,
                    };
                    let to = arp.source_hardware_addr;
                    Self::emit(&mut self.sport, &mut self.tx, |b| {
                        build_arp_frame(b, EthernetAddress(GEN_S_MAC), to, None, &reply).ok()
                    });
                }
                FramePayload::Ipv4 { l4: Ipv4Payload::Tcp(seg), .. } if self.pretend_acked => {
                    self.n.0.delivered += seg.payload.len() as u64;
                }
                FramePayload::Ipv4 { ip, l4: Ipv4Payload::Tcp(seg), .. } => {
                    let b = usize::from(ip.dst_addr.0[3]).wrapping_sub(10);
                    let idx = b * 65_536 + usize::from(seg.src_port);
                    let Some(s) = self.servers.get_mut(idx) else { continue };
                    if seg.flags.contains(TcpFlags::SYN) {
                        *s = SFlow {
                            iss: (idx as u32).wrapping_mul(40_503),
                            rcv_nxt: seg.seq.wrapping_add(1),
                            ack_due: false,
                            closed: false,
                        };
                        let repr = TcpRepr {
                            src_port: seg.dst_port,
                            dst_port: seg.src_port,
                            seq: s.iss,
                            ack: s.rcv_nxt,
                            flags: TcpFlags::SYN | TcpFlags::ACK,
                            window: 65_535,
                            urgent: 0,
                            options: TcpOptions { mss: Some(1460), ..TcpOptions::default() },
                            payload: &[],
                        };
                        let hdr = FrameHeader::new(
                            EthernetAddress(GEN_S_MAC),
                            EthernetAddress(PROXY_S_MAC),
                            ip.dst_addr,
                            ip.src_addr,
                        );
                        Self::emit(&mut self.sport, &mut self.tx, |b| build_tcp_frame(b, &hdr, &repr).ok());
                    } else if seg.flags.contains(TcpFlags::RST) {
                        s.closed = true;
                    } else if !s.closed {
                        if seg.seq == s.rcv_nxt {
                            s.rcv_nxt = s.rcv_nxt.wrapping_add(seg.payload.len() as u32);
                            self.n.0.delivered += seg.payload.len() as u64;
                        }
                        if seg.flags.contains(TcpFlags::FIN)
                            && seg.seq.wrapping_add(seg.payload.len() as u32) == s.rcv_nxt
                        {
                            s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
                            s.closed = true;
                            let repr = TcpRepr {
                                src_port: seg.dst_port,
                                dst_port: seg.src_port,
                                seq: s.iss.wrapping_add(1),
                                ack: s.rcv_nxt,
                                flags: TcpFlags::ACK | TcpFlags::FIN,
                                window: 65_535,
                                urgent: 0,
                                options: TcpOptions::default(),
                                payload: &[],
                            };
                            let hdr = FrameHeader::new(
                                EthernetAddress(GEN_S_MAC),
                                EthernetAddress(PROXY_S_MAC),
                                ip.dst_addr,
                                ip.src_addr,
                            );
                            Self::emit(&mut self.sport, &mut self.tx, |b| {
                                build_tcp_frame(b, &hdr, &repr).ok()
                            });
                        } else if !seg.payload.is_empty() && !s.ack_due {
                            s.ack_due = true;
                            self.dirty.push(idx);
                        }
                    }
                }
                _ => {}
            }
            if self.tx.len() >= BURST {
                self.flush_s(now);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            let Some(s) = self.servers.get_mut(idx) else { continue };
            s.ack_due = false;
            let (b, sport) = (idx / 65_536, (idx % 65_536) as u16);
            let repr = TcpRepr {
                src_port: PORT,
                dst_port: sport,
                seq: s.iss.wrapping_add(1),
                ack: s.rcv_nxt,
                flags: TcpFlags::ACK,
                window: 65_535,
                urgent: 0,
                options: TcpOptions::default(),
                payload: &[],
            };
            let hdr = FrameHeader::new(
                EthernetAddress(GEN_S_MAC),
                EthernetAddress(PROXY_S_MAC),
                Ipv4Address(backend_ip(b).octets()),
                Ipv4Address(SNAT.octets()),
            );
            Self::emit(&mut self.sport, &mut self.tx, |buf| build_tcp_frame(buf, &hdr, &repr).ok());
            if self.tx.len() >= BURST {
                self.flush_s(now);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        self.rx = rx;
        self.flush_s(now);
    }
}

/// The system under test: the proxy's cores, or the L2 forwarder baseline.
enum Dut {
    Proxy(Box<ClientCore<MemPort>>, Box<ServerCore<MemPort>>),
    Forwarder(Box<Forwarder>),
}

/// The baseline: moves every frame from one port to the other, swapping MAC addresses so the generator's
/// ends see frames from the "proxy". No parsing beyond that, no state.
#[derive(Debug)]
struct Forwarder {
    a: MemPort,
    b: MemPort,
    rx: Vec<PacketBuf>,
    frames: u64,
}

impl Forwarder {
    fn pass(
        from: &mut MemPort,
        to: &mut MemPort,
        rx: &mut Vec<PacketBuf>,
        now: Instant,
        dst: [u8; 6],
        src: [u8; 6],
    ) -> usize {
        from.recv(now, rx, BURST);
        let n = rx.len();
        for b in rx.iter_mut() {
            if let Some(h) = b.data_mut().get_mut(..12) {
                h[..6].copy_from_slice(&dst);
                h[6..].copy_from_slice(&src);
            }
        }
        to.send(now, rx);
        rx.clear();
        n
    }

    fn step(&mut self, now: Instant) -> usize {
        let mut n = 0;
        loop {
            let k = Self::pass(&mut self.a, &mut self.b, &mut self.rx, now, GEN_S_MAC, PROXY_S_MAC)
                + Self::pass(&mut self.b, &mut self.a, &mut self.rx, now, GEN_C_MAC, PROXY_C_MAC);
            n += k;
            if k == 0 {
                break;
            }
        }
        self.frames += n as u64;
        n
    }
}

struct Bench {
    clock: VirtualClock,
    gen: Generator,
    dut: Dut,
    time_a: std::time::Duration,
    time_b: std::time::Duration,
    buffer: usize,
    pool: Pool,
}

fn build(flows: u32, seg: usize, buffer: usize, forwarder: bool) -> Res<Bench> {
    let pool = Pool::new(POOL_BUFFERS, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM)
        .map_err(|e| format!("{e:?}"))?;
    let link = |name: &str| MemConfig { queue_len: 8192, ..MemConfig::new(name, 1) };
    let (cport, pa, _) = mem::link(&pool, &link("client"));
    let (sport, pb, _) = mem::link(&pool, &link("server"));
    let clock = VirtualClock::new(Instant::ZERO);
    let dut = if forwarder {
        Dut::Forwarder(Box::new(Forwarder { a: pa, b: pb, rx: Vec::with_capacity(BURST), frames: 0 }))
    } else {
        let cfg = Arc::new(config(flows.saturating_add(flows / 8).max(1024), buffer));
        let (to_server, from_client) = crossbeam_channel::bounded(1 << 16);
        let (to_client, from_server) = crossbeam_channel::bounded(1 << 16);
        let a = ClientCore::new(cfg.clone(), pa, to_server, from_server, Vec::new())?;
        let b = ServerCore::new(cfg, pb, to_client, from_client, clock.now())?;
        Dut::Proxy(Box::new(a), Box::new(b))
    };
    let gen = Generator {
        cport,
        sport,
        flows: vec![CFlow::default(); flows as usize],
        servers: vec![SFlow::default(); BACKENDS * 65_536],
        dirty: Vec::new(),
        rx: Vec::with_capacity(4096),
        tx: Vec::with_capacity(BURST),
        payload: vec![0x5a; 1460],
        seg,
        window: (buffer / seg.max(1)).clamp(1, 32) as u32,
        next: 0,
        pretend_acked: forwarder,
        pool: pool.clone(),
        n: CountersWrap::default(),
    };
    Ok(Bench {
        clock,
        gen,
        dut,
        time_a: std::time::Duration::ZERO,
        time_b: std::time::Duration::ZERO,
        buffer,
        pool,
    })
}

impl Bench {
    /// One round: the cores (or the forwarder) run until quiet, the generator answers both sides.
    fn round(&mut self, close: bool) {
        let now = self.clock.now();
        for _ in 0..4 {
            let work = match &mut self.dut {
                Dut::Proxy(a, b) => {
                    let t = cpu_now();
                    let wa = a.step(now).work;
                    let t2 = cpu_now();
                    let wb = b.step(now).work;
                    self.time_b += cpu_now().saturating_sub(t2);
                    self.time_a += t2.saturating_sub(t);
                    wa + wb
                }
                Dut::Forwarder(f) => {
                    let t = cpu_now();
                    let n = f.step(now);
                    self.time_a += cpu_now().saturating_sub(t);
                    n
                }
            };
            self.gen.server_rx(now);
            self.gen.client_rx(now, close);
            if work == 0 {
                break;
            }
        }
        self.clock.advance(Duration::from_micros(20));
    }

    fn flows(&self) -> usize {
        match &self.dut {
            Dut::Proxy(a, _) => a.flow_count(),
            Dut::Forwarder(_) => 0,
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// This thread's CPU time: what a core's `step` calls are measured in, so that time the thread spent
/// preempted (this machine's cores are shared) is not counted. A reading costs a system call, of which
/// about half lands inside the measured interval: a bias of a few percent against the cores.
fn cpu_now() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The median of a measurement's windows.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Opens every flow through the proxy's handshakes, a few per round as a client population would (a
/// burst larger than the core's receive budget per round only overflows the ring), resending lost SYNs.
fn establish(b: &mut Bench, flows: u32) -> Res<()> {
    let chunk = 64u32;
    let mut opened = 0;
    let mut rounds = 0u64;
    loop {
        if opened < flows {
            let to = (opened + chunk).min(flows);
            let now = b.clock.now();
            b.gen.open(now, opened..to);
            opened = to;
        }
        b.round(false);
        rounds += 1;
        if opened >= flows && b.gen.flows.iter().all(|f| f.state == EST) {
            return Ok(());
        }
        if rounds % 50_000 == 0 {
            let lost: Vec<u32> = (0..flows)
                .filter(|&i| b.gen.flows.get(i as usize).is_some_and(|f| f.state == SYN_SENT))
                .collect();
            let now = b.clock.now();
            for i in lost {
                if let Some(f) = b.gen.flows.get(i as usize).copied() {
                    b.gen.client_frame(now, i, f.iss, 0, TcpFlags::SYN, 0);
                }
            }
            b.gen.flush_c(now);
        }
        if rounds > 500_000 {
            let est = b.gen.flows.iter().filter(|f| f.state == EST).count();
            return Err(format!("only {est} of {flows} flows established").into());
        }
    }
}

/// Each measurement is split into this many windows and the median counts, so one window disturbed by
/// other work on the machine does not move the figure.
const SUB_WINDOWS: u32 = 5;
/// Longest warm-up of a fast-path measurement.
const WARMUP_CAP: std::time::Duration = std::time::Duration::from_secs(5);

/// Established fast path with `seg`-byte segments over the flows `b` has open: data segments relayed
/// per second of core A's time and of core B's (or of the forwarder's), in millions.
fn fast_path(b: &mut Bench, seg: usize, secs: f64) -> Res<(f64, f64)> {
    b.gen.seg = seg;
    b.gen.window = (b.buffer / seg.max(1)).clamp(1, 32) as u32;
    // Warm up until every flow has carried a window of this size (its rings have grown and their pages
    // are faulted in: steady state, not first touch), or for WARMUP_CAP at most (1M flows take longer;
    // their figures then include growth).
    let want = b.gen.flows.len() as u64 * u64::from(b.gen.window) * seg as u64;
    let (d0, wall) = (b.gen.n.0.delivered, std::time::Instant::now());
    let mut rounds = 0u32;
    while rounds < 200 || (b.gen.n.0.delivered - d0 < want && wall.elapsed() < WARMUP_CAP) {
        let now = b.clock.now();
        b.gen.send_data(now, 256);
        b.round(false);
        rounds += 1;
    }
    let mpps = |n: u64, t: f64| if t > 0.0 { n as f64 / t / 1e6 } else { 0.0 };
    let (mut a, mut bb) = (Vec::new(), Vec::new());
    for _ in 0..SUB_WINDOWS {
        let bytes0 = b.gen.n.0.delivered;
        let (ta0, tb0) = (b.time_a, b.time_b);
        let wall = std::time::Instant::now();
        while wall.elapsed().as_secs_f64() < secs / f64::from(SUB_WINDOWS) {
            for _ in 0..50 {
                let now = b.clock.now();
                b.gen.send_data(now, 256);
                b.round(false);
            }
        }
        // Segments of `seg` bytes relayed: the proxy's core B may put several in one frame.
        let segs = (b.gen.n.0.delivered - bytes0) / seg.max(1) as u64;
        a.push(mpps(segs, (b.time_a - ta0).as_secs_f64()));
        bb.push(mpps(segs, (b.time_b - tb0).as_secs_f64()));
    }
    if b.gen.n.0.resets > 0 {
        return Err(format!("{} resets during the run", b.gen.n.0.resets).into());
    }
    if std::env::var_os("PIPELINE_DEBUG").is_some() {
        eprintln!("{seg} B windows: core A {a:.3?} core B {bb:.3?}");
    }
    Ok((median(a), median(bb)))
}

/// One flow count, run in a process of its own so that its memory figures start from nothing: the
/// proxy's figures at 64 B and 1,460 B, the forwarder's at both, and resident memory per flow.
#[derive(Debug, Clone, Copy, Default)]
struct FlowRun {
    a64: f64,
    b64: f64,
    fwd64: f64,
    a1460: f64,
    b1460: f64,
    fwd1460: f64,
    /// Resident bytes grown per flow: after the handshakes, and after both data runs.
    idle: f64,
    busy: f64,
    /// The whole process's resident memory at the end, generator included.
    rss: u64,
    /// Wall seconds the handshakes took.
    setup_secs: f64,
}

impl FlowRun {
    const FIELDS: usize = 10;

    fn run(flows: u32, secs: f64, buffer: usize) -> Res<Self> {
        let mut r = FlowRun::default();
        let mut b = build(flows, 64, buffer, false)?;
        let rss0 = rss_bytes();
        let t = std::time::Instant::now();
        establish(&mut b, flows)?;
        r.setup_secs = t.elapsed().as_secs_f64();
        let per_flow = |bytes: u64| bytes.saturating_sub(rss0) as f64 / f64::from(flows.max(1));
        r.idle = per_flow(rss_bytes());
        let debug = std::env::var_os("PIPELINE_DEBUG").is_some();
        if debug {
            eprintln!("after the handshakes: packet pool {:?}", b.pool.stats());
        }
        (r.a64, r.b64) = fast_path(&mut b, 64, secs)?;
        if debug {
            eprintln!("after 64 B: packet pool {:?}", b.pool.stats());
        }
        (r.a1460, r.b1460) = fast_path(&mut b, 1460, secs)?;
        r.busy = per_flow(rss_bytes());
        if std::env::var_os("PIPELINE_DEBUG").is_some() {
            if let Dut::Proxy(a, b) = &b.dut {
                eprintln!(
                    "core A: {:?} {:?}\ncore B: {:?} {:?}",
                    a.stats(),
                    a.io_stats(),
                    b.stats(),
                    b.io_stats()
                );
            }
            eprintln!("packet pool: {:?}", b.pool.stats());
        }
        r.rss = rss_bytes();
        drop(b);
        let mut f = build(flows, 64, buffer, true)?;
        for fl in &mut f.gen.flows {
            fl.state = EST;
        }
        r.fwd64 = fast_path(&mut f, 64, secs)?.0;
        r.fwd1460 = fast_path(&mut f, 1460, secs)?.0;
        Ok(r)
    }

    fn to_line(self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {}",
            self.a64,
            self.b64,
            self.fwd64,
            self.a1460,
            self.b1460,
            self.fwd1460,
            self.idle,
            self.busy,
            self.rss,
            self.setup_secs
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let v: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        if v.len() != Self::FIELDS {
            return None;
        }
        Some(FlowRun {
            a64: v[0],
            b64: v[1],
            fwd64: v[2],
            a1460: v[3],
            b1460: v[4],
            fwd1460: v[5],
            idle: v[6],
            busy: v[7],
            rss: v[8] as u64,
            setup_secs: v[9],
        })
    }
}

/// Frames a connection of the generator's script puts on the wire without a proxy: SYN, SYN-ACK, FIN
/// (with the client's ACK), FIN, ACK. An L2 forwarder's connection rate is its frame rate over this.
const FRAMES_PER_DIRECT_CONN: f64 = 5.0;

/// Connections per second per core pair: (over the pair's summed time, over the busier core's time,
/// resets, frames both cores received per connection).
fn conn_rate(secs: f64, buffer: usize) -> Res<(f64, f64, u64, f64)> {
    let space = 1_000_000u32;
    let mut b = build(space, 64, buffer, false)?;
    let mut next = 0u32;
    let (mut pair, mut busier) = (Vec::new(), Vec::new());
    let (first_done, rx0) = (b.gen.n.0.conns_done, b.rx_frames());
    for _ in 0..SUB_WINDOWS {
        let (ta0, tb0) = (b.time_a, b.time_b);
        let done0 = b.gen.n.0.conns_done;
        let wall = std::time::Instant::now();
        while wall.elapsed().as_secs_f64() < secs / f64::from(SUB_WINDOWS) {
            // Keep a few thousand handshakes in progress.
            if b.flows() < 4096 {
                let now = b.clock.now();
                let to = next + 256;
                b.gen.open(now, next..to);
                next = to % (space - 256);
            }
            b.round(true);
        }
        let done = (b.gen.n.0.conns_done - done0) as f64;
        let ta = (b.time_a - ta0).as_secs_f64();
        let tb = (b.time_b - tb0).as_secs_f64();
        if ta > 0.0 && tb > 0.0 {
            pair.push(done / (ta + tb));
            busier.push(done / ta.max(tb));
        }
    }
    let done = b.gen.n.0.conns_done - first_done;
    let frames = (b.rx_frames() - rx0) as f64 / done.max(1) as f64;
    if std::env::var_os("PIPELINE_DEBUG").is_some() {
        if let Dut::Proxy(a, b) = &b.dut {
            eprintln!("core A: {:?}\ncore B: {:?}", a.stats(), b.stats());
        }
    }
    Ok((median(pair), median(busier), b.gen.n.0.resets, frames))
}

impl Bench {
    /// Frames both cores received so far.
    fn rx_frames(&self) -> u64 {
        match &self.dut {
            Dut::Proxy(a, b) => a.io_stats().rx_frames + b.io_stats().rx_frames,
            Dut::Forwarder(f) => f.frames,
        }
    }
}

fn main() -> Res<()> {
    let mut flows_list = vec![1u32, 10_000, 1_000_000];
    let mut secs = 1.0;
    let mut buffer = 16 * 1024;
    let mut conn_only = false;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--flows" => {
                flows_list = args
                    .get(i + 1)
                    .ok_or("--flows N,N,...")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                i += 1;
            }
            "--secs" => {
                secs = args.get(i + 1).ok_or("--secs S")?.parse()?;
                i += 1;
            }
            "--buffer" => {
                buffer = args.get(i + 1).ok_or("--buffer BYTES")?.parse()?;
                i += 1;
            }
            "--conn-only" => conn_only = true,
            "--nic-rx-checksum" => NIC_RX_CHECKSUM.store(true, Ordering::Relaxed),
            "--one" => {
                // A child of the run below: one flow count, one line of figures.
                let n: u32 = args.get(i + 1).ok_or("--one FLOWS")?.parse()?;
                println!("{}", FlowRun::run(n, secs, buffer)?.to_line());
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 1;
    }
    println!(
        "holdfast pipeline: core A + core B over in-memory links, policy backend, one thread, virtual clock"
    );
    println!("per-core Mpps = data segments relayed / CPU time of that core's step calls (median of");
    println!(
        "{SUB_WINDOWS} windows); baseline = the same generator through an L2 forwarder on the same links,"
    );
    println!("in the same run");
    if NIC_RX_CHECKSUM.load(Ordering::Relaxed) {
        println!("received checksums are trusted (--nic-rx-checksum), as behind a NIC that verifies them");
    }
    println!();
    println!(
        "{:>8} {:>7} | {:>11} {:>11} | {:>11} | {:>7} {:>7}",
        "flows", "payload", "core A Mpps", "core B Mpps", "L2 fwd Mpps", "A/fwd", "B/fwd"
    );
    let exe = std::env::current_exe()?;
    let mut runs = Vec::new();
    for &flows in flows_list.iter().filter(|_| !conn_only) {
        let mut child = std::process::Command::new(&exe);
        if NIC_RX_CHECKSUM.load(Ordering::Relaxed) {
            child.arg("--nic-rx-checksum");
        }
        let out = child
            .args(["--buffer", &buffer.to_string(), "--secs", &secs.to_string(), "--one", &flows.to_string()])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(r) = FlowRun::parse(text.trim()) else {
            println!("{flows:>8}: run failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            continue;
        };
        let pct = |x: f64, fwd: f64| if fwd > 0.0 { x / fwd * 100.0 } else { 0.0 };
        for (seg, a, b, fwd) in [(64, r.a64, r.b64, r.fwd64), (1460, r.a1460, r.b1460, r.fwd1460)] {
            println!(
                "{flows:>8} {seg:>6}B | {a:>11.3} {b:>11.3} | {fwd:>11.3} | {:>6.1}% {:>6.1}%",
                pct(a, fwd),
                pct(b, fwd)
            );
        }
        runs.push((flows, r));
    }
    println!();
    for (flows, r) in &runs {
        println!(
            "state at {flows} flows: {:.0} B/flow resident after the handshakes ({:.1} s to open them), {:.0} B/flow \
             after both data runs; process RSS {:.0} MiB",
            r.idle,
            r.setup_secs,
            r.busy,
            r.rss as f64 / f64::from(1u32 << 20)
        );
    }
    println!(
        "(size_of tcp::Connection = {} B per half, two halves per flow; send/receive rings grow on demand up to {} B each)",
        std::mem::size_of::<dataplane::tcp::Connection>(),
        buffer
    );
    println!();
    let (pair, busier, resets, frames) = conn_rate(secs, buffer)?;
    // The forwarder's 64 B frame rate from the smallest run stands for its per-frame cost.
    let fwd_conn = runs.first().map_or(0.0, |(_, r)| r.fwd64 * 1e6 / FRAMES_PER_DIRECT_CONN);
    let ratio = if fwd_conn > 0.0 { busier / fwd_conn * 100.0 } else { 0.0 };
    println!(
        "connections (SYN, both handshakes, FIN both ways, TIME-WAIT), per core pair: {busier:.0}/s limited by \
         the busier core, {pair:.0}/s over both cores' time; {frames:.1} frames received per connection; {resets} resets"
    );
    println!(
        "  baseline: L2 forwarder at {:.0} conn/s ({FRAMES_PER_DIRECT_CONN} frames of a direct connection at its 64 B \
         frame rate): proxy/fwd {ratio:.1}%",
        fwd_conn
    );
    Ok(())
}
