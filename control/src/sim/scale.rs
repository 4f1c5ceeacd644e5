//! A steppable simulator for scale and fault scenarios: many client hosts and several backends (all
//! smoltcp) around the proxy's two cores, on in-memory switches with a virtual clock.
//!
//! Where [`super::run`] runs one fixed scenario to its end, a [`Sim`] is driven by its caller: connections
//! are scheduled at virtual times, links go down and up through the switches' [`SegmentControl`]s, an
//! attacker port on the client LAN injects crafted frames, and the caller steps the whole topology until a
//! condition holds. Between steps everything is open to inspection, so a test asserts DESIGN.md's
//! invariants on the live state: [`Sim::check_invariant1`] compares what each client holds acknowledged
//! with what the backends hold, and the channel from core B to core A is tapped so a test sees each
//! health-check verdict as core A receives it.
//!
//! The loop only polls the hosts that have something due, so ten thousand connections over a few dozen
//! hosts step in seconds in a release build.

use super::smol::SmolHost;
use super::stream::{StreamReader, StreamReport, StreamWriter, HEADER_LEN};
use dataplane::app::{Accepted, AppEvent, AppFlowId, Application};
use dataplane::balance::health::HealthParams;
use dataplane::buf::Pool;
use dataplane::gate::AckPolicy;
use dataplane::port::mem::{self, FaultConfig, MemConfig, MemPort, SegmentControl};
use dataplane::port::Port;
use dataplane::proxy::msg::{ToClient, ToServer};
use dataplane::proxy::{ClientCore, ListenerConfig, ProxyConfig, ServerCore};
use dataplane::step::Steppable;
use dataplane::time::{Clock, Duration, Instant, VirtualClock};
use dataplane::wire::{ChecksumMode, EthernetAddress};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, Ipv4Address};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The VIP clients connect to, and the listener port on it.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SERVICE_PORT: u16 = 5001;
/// The proxy's addresses on the server LAN, and the first backend's (backend `i` is `.10 + i`).
pub const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const FIRST_BACKEND: u8 = 10;
/// The proxy's MAC on the client LAN (where an attacker addresses its frames).
pub const PROXY_CLIENT_MAC: [u8; 6] = [0x02, 0x48, 0x46, 0x00, 1, 1];
/// The attacker's MAC and address on the client LAN.
pub const ATTACKER_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x00, 0, 1];
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 250);

/// The shape of a topology.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub seed: u64,
    pub policy: AckPolicy,
    /// Client hosts on the client LAN (at most 200: they live in one /24 with the VIP).
    pub client_hosts: usize,
    /// Backends on the server LAN; 0 for a listener served by an application (policy `app`).
    pub backends: usize,
    /// Listening sockets each backend keeps (smoltcp accepts one connection per socket).
    pub backend_listeners: usize,
    /// Faults on every port's transmit direction, both LANs.
    pub faults: FaultConfig,
    pub max_flows: u32,
    /// Socket buffers of the smoltcp peers.
    pub peer_buffer: usize,
    /// Send and receive buffers of each of the proxy's TCP halves.
    pub proxy_buffer: usize,
    pub health: Option<HealthParams>,
}

impl ScaleConfig {
    /// A lossy topology for `policy` with `backends` backends, sized for small transfers.
    pub fn lossy(seed: u64, policy: AckPolicy, client_hosts: usize, backends: usize) -> ScaleConfig {
        ScaleConfig {
            seed,
            policy,
            client_hosts,
            backends,
            backend_listeners: 64,
            faults: FaultConfig {
                loss: 0.01,
                duplicate: 0.002,
                reorder: 0.005,
                reorder_delay: Duration::from_micros(300),
                delay: Duration::from_micros(100),
                jitter: Duration::from_micros(20),
                rate_bps: Some(10_000_000_000),
                ..FaultConfig::NONE
            },
            max_flows: 4096,
            peer_buffer: 8 * 1024,
            proxy_buffer: 32 * 1024,
            health: None,
        }
    }
}

fn host_mac(kind: u8, i: usize) -> [u8; 6] {
    let [_, _, hi, lo] = (i as u32).to_be_bytes();
    [0x02, 0x48, 0x46, kind, hi, lo]
}

/// The proxy configuration of a topology.
pub fn proxy_config(cfg: &ScaleConfig) -> ProxyConfig {
    let mut client_tcp = dataplane::tcp::Config::default();
    let mut server_tcp = dataplane::tcp::Config::default();
    client_tcp.isn_secret = [7; 16];
    server_tcp.isn_secret = [9; 16];
    for t in [&mut client_tcp, &mut server_tcp] {
        t.time_wait = Duration::from_secs(1);
        t.send_buffer = cfg.proxy_buffer;
        t.recv_buffer = cfg.proxy_buffer;
    }
    let backends =
        (0..cfg.backends).map(|i| (SocketAddrV4::new(backend_ip(i), SERVICE_PORT), 1)).collect::<Vec<_>>();
    ProxyConfig {
        vip: VIP,
        client_mac: EthernetAddress(PROXY_CLIENT_MAC),
        snat: SNAT,
        server_mac: EthernetAddress([0x02, 0x48, 0x46, 0x00, 1, 2]),
        server_net: (Ipv4Addr::new(198, 18, 2, 0), 24),
        gateway: None,
        listeners: vec![ListenerConfig {
            port: SERVICE_PORT,
            policy: cfg.policy,
            backends,
            balance: dataplane::balance::Algorithm::Maglev,
            health: cfg.health,
        }],
        client_tcp,
        server_tcp,
        max_flows: cfg.max_flows,
        flow_idle_timeout: Duration::from_secs(300),
        snat_ports: (10_000, 60_999),
        probe_ports: (61_000, 61_999),
        snat_quarantine: Duration::from_secs(2),
        burst: 32,
        checksum: ChecksumMode::Verify,
        seed: cfg.seed,
    }
}

/// Backend `i`'s address.
pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, FIRST_BACKEND.saturating_add(i as u8))
}

/// Client host `i`'s address.
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10u8.saturating_add(i as u8))
}

/// How a connection ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not started yet (scheduled for later).
    Waiting,
    Running,
    /// Everything it sent was delivered (echoed back intact, or acknowledged under `app`) and it closed.
    Complete,
    /// It ended (reset, or closed) before that.
    Broken,
}

/// What a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A checksummed stream of this many body bytes, echoed back by a backend.
    Echo(u64),
    /// `count` newline-terminated records of `len` bytes each (see [`record`]); nothing comes back.
    Records { len: usize, count: u64 },
}

/// Record `k` of stream `id`, `len` bytes (at least 20) with its newline: `"{id:08}:{k:08}:"`, filler, `\n`.
pub fn record(id: u32, k: u64, len: usize) -> Vec<u8> {
    let mut r = format!("{id:08}:{k:08}:").into_bytes();
    let body = len.max(20) - 1;
    let mut i = 0u64;
    while r.len() < body {
        r.push(b'a' + super::stream::byte_at(id, k.wrapping_mul(4096).wrapping_add(i)) % 26);
        i += 1;
    }
    r.truncate(body);
    r.push(b'\n');
    r
}

enum Writer {
    Echo(StreamWriter),
    Records { id: u32, len: usize, count: u64, pos: u64 },
}

impl Writer {
    fn total(&self) -> u64 {
        match self {
            Writer::Echo(w) => w.total(),
            Writer::Records { len, count, .. } => *len as u64 * count,
        }
    }

    fn is_done(&self, written: u64) -> bool {
        written >= self.total()
    }

    fn fill(&mut self, out: &mut [u8]) -> usize {
        match self {
            Writer::Echo(w) => w.fill(out),
            Writer::Records { id, len, count, pos } => {
                let total = *len as u64 * *count;
                let mut n = 0;
                let mut p = *pos;
                while n < out.len() && p < total {
                    let k = p / *len as u64;
                    let rec = record(*id, k, *len);
                    let from = (p % *len as u64) as usize;
                    let take = (rec.len() - from).min(out.len() - n);
                    out[n..n + take].copy_from_slice(&rec[from..from + take]);
                    n += take;
                    p += take as u64;
                }
                n
            }
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Writer::Echo(w) => w.advance(n),
            Writer::Records { pos, .. } => *pos += n as u64,
        }
    }
}

/// One client connection.
pub struct Conn {
    pub id: u32,
    pub local_port: u16,
    pub payload: Payload,
    pub start_at: Instant,
    handle: Option<SocketHandle>,
    writer: Writer,
    pub echo: StreamReader,
    pub outcome: Outcome,
    /// The handshake completed.
    pub established: bool,
    /// Bytes written into the socket, header included.
    pub written: u64,
    /// Bytes the proxy acknowledged (written minus what the socket still holds).
    pub acked: u64,
    closed_send: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("port", &self.local_port)
            .field("outcome", &self.outcome)
            .field("established", &self.established)
            .field("written", &self.written)
            .field("acked", &self.acked)
            .field("echo", self.echo.report())
            .finish()
    }
}

struct Client {
    host: SmolHost<MemPort>,
    conns: Vec<Conn>,
    next_port: u16,
    /// Socket buffers of its connections.
    buffer: usize,
    /// When smoltcp wants to run again.
    smol_next: Instant,
    /// Earliest start of a connection not yet started.
    next_start: Instant,
    kicked: bool,
}

struct BackendConn {
    handle: SocketHandle,
    reader: StreamReader,
    echo: VecDeque<u8>,
    received: u64,
}

struct Backend {
    host: SmolHost<MemPort>,
    conns: Vec<BackendConn>,
    listeners: usize,
    buffer: usize,
    /// Streams that ended here: report and bytes received.
    finished: Vec<(StreamReport, u64)>,
    /// Every stream id this backend has seen.
    ids: HashSet<u32>,
    smol_next: Instant,
}

impl Backend {
    fn add_listener(&mut self) {
        let handle = self.host.add_socket(self.buffer);
        let _ = self.host.sockets.get_mut::<tcp::Socket>(handle).listen(SERVICE_PORT);
        self.conns.push(BackendConn {
            handle,
            reader: StreamReader::new(),
            echo: VecDeque::new(),
            received: 0,
        });
    }

    /// Verifies and echoes; retires finished connections and keeps `listeners` sockets listening.
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        let mut work = false;
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let s = self.host.sockets.get_mut::<tcp::Socket>(c.handle);
            while !c.echo.is_empty() && s.can_send() {
                let (head, _) = c.echo.as_slices();
                let Ok(n) = s.send_slice(head) else { break };
                if n == 0 {
                    break;
                }
                c.echo.drain(..n);
                work = true;
            }
            while s.can_recv() {
                let Ok(n) = s.recv_slice(buf) else { break };
                if n == 0 {
                    break;
                }
                c.reader.feed(&buf[..n]);
                c.received += n as u64;
                c.echo.extend(&buf[..n]);
                work = true;
            }
            if let Some(id) = c.reader.report().id {
                self.ids.insert(id);
            }
            if !s.may_recv() && c.echo.is_empty() && s.state() == tcp::State::CloseWait {
                s.close();
                work = true;
            }
            let state = s.state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait) && s.recv_queue() == 0;
            if done && (c.received > 0 || state == tcp::State::TimeWait) {
                self.finished.push((c.reader.report().clone(), c.received));
                let handle = c.handle;
                self.conns.swap_remove(i);
                self.host.sockets.remove(handle);
                work = true;
                continue;
            }
            if state == tcp::State::Closed {
                // Reset before any data (a health probe, or a refused flow): listen again.
                let _ = s.listen(SERVICE_PORT);
            }
            i += 1;
        }
        let listening =
            self.conns.iter().filter(|c| c.received == 0 && c.reader.report().id.is_none()).count();
        for _ in listening..self.listeners {
            self.add_listener();
        }
        work
    }
}

/// Wraps an application to tell the simulator when it owes a commit: while it does, virtual time waits
/// for the application's real-time work (an `fsync`), as a disk that is infinitely fast would.
pub struct AppTap<A> {
    inner: A,
    owed: HashMap<AppFlowId, (u64, u64)>,
    busy: Arc<AtomicUsize>,
}

impl<A> std::fmt::Debug for AppTap<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTap").field("owed", &self.owed.len()).finish()
    }
}

impl<A: Application> AppTap<A> {
    pub fn new(inner: A) -> (Self, Arc<AtomicUsize>) {
        let busy = Arc::new(AtomicUsize::new(0));
        (AppTap { inner, owed: HashMap::new(), busy: busy.clone() }, busy)
    }

    fn publish(&self) {
        self.busy.store(self.owed.values().filter(|(want, got)| want > got).count(), Ordering::Release);
    }
}

impl<A: Application> Application for AppTap<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn open(&mut self, flow: AppFlowId, client: SocketAddrV4) {
        self.owed.insert(flow, (0, 0));
        self.inner.open(flow, client);
    }
    fn data(&mut self, flow: AppFlowId, offset: u64, bytes: &[u8]) -> Accepted {
        let r = self.inner.data(flow, offset, bytes);
        let took = match r {
            Accepted::All => bytes.len(),
            Accepted::Partial(n) => n.min(bytes.len()),
        };
        if let Some(nl) = bytes.get(..took).and_then(|b| b.iter().rposition(|&b| b == b'\n')) {
            let e = self.owed.entry(flow).or_insert((0, 0));
            e.0 = e.0.max(offset + nl as u64 + 1);
        }
        self.publish();
        r
    }
    fn end_of_stream(&mut self, flow: AppFlowId, len: u64) {
        self.inner.end_of_stream(flow, len);
    }
    fn closed(&mut self, flow: AppFlowId) {
        self.owed.remove(&flow);
        self.publish();
        self.inner.closed(flow);
    }
    fn poll(&mut self, out: &mut Vec<AppEvent>) {
        let from = out.len();
        self.inner.poll(out);
        for ev in out.iter().skip(from) {
            match ev {
                AppEvent::Commit { flow, up_to } => {
                    if let Some(e) = self.owed.get_mut(flow) {
                        e.1 = e.1.max(*up_to);
                    }
                }
                AppEvent::Abort { flow, .. } => {
                    self.owed.remove(flow);
                }
                _ => {}
            }
        }
        self.publish();
    }
}

/// A health verdict core A received from core B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSeen {
    pub at: Instant,
    pub backend: u16,
    pub healthy: bool,
}

/// Totals over all connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub conns: usize,
    pub waiting: usize,
    pub running: usize,
    pub complete: usize,
    pub broken: usize,
    /// Body bytes that reached the backends intact (echo payloads).
    pub delivered: u64,
    /// Bytes that arrived at a backend or back at a client corrupted, duplicated or out of place.
    pub bad: u64,
    pub echoed: u64,
}

/// The whole topology. See the module docs.
pub struct Sim {
    pub cfg: ScaleConfig,
    pub clock: VirtualClock,
    pub core_a: ClientCore<MemPort>,
    pub core_b: ServerCore<MemPort>,
    clients: Vec<Client>,
    backends: Vec<Backend>,
    /// Client LAN: port 0 is the proxy, 1..=hosts the clients, the last the attacker.
    pub client_ctl: SegmentControl,
    /// Server LAN: port 0 is the proxy, `1 + i` backend `i`.
    pub server_ctl: SegmentControl,
    attacker: MemPort,
    /// Frames the attacker received (the proxy's answers to it).
    pub attacker_rx: u64,
    tap_rx: crossbeam_channel::Receiver<ToClient>,
    tap_tx: crossbeam_channel::Sender<ToClient>,
    tap_held: VecDeque<ToClient>,
    pub health_seen: Vec<HealthSeen>,
    app_busy: Option<Arc<AtomicUsize>>,
    next_id: u32,
    /// Clients may close once their echo is complete (until then they hold their connections open).
    release: bool,
    pub iterations: u64,
    pub invariant1_checks: u64,
    pub invariant1_violations: u64,
    /// Most flows core A held at once.
    pub peak_flows: usize,
    /// The clock never moves past this (set by [`Sim::run_until`]).
    horizon: Instant,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.clock.now())
            .field("core_a", &self.core_a)
            .field("core_b", &self.core_b)
            .field("tally", &self.tally())
            .finish()
    }
}

impl Sim {
    /// Builds the topology. `apps` serve the listener when the policy is `app` (wrap them in [`AppTap`]).
    pub fn new(
        cfg: ScaleConfig,
        apps: Vec<Option<Box<dyn Application>>>,
        app_busy: Option<Arc<AtomicUsize>>,
    ) -> Result<Sim, super::SimError> {
        let clock = VirtualClock::new(Instant::ZERO);
        let pool = Pool::new(1 << 17, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM)
            .map_err(super::SimError::Pool)?;
        let lan = |name: &str, seed: u64| MemConfig { queue_len: 16384, ..MemConfig::new(name, seed) };
        let (mut client_lan, client_ctl) =
            mem::switch(&pool, &lan("client-lan", cfg.seed), cfg.client_hosts + 2);
        let (mut server_lan, server_ctl) =
            mem::switch(&pool, &lan("server-lan", cfg.seed ^ 0xabcd), cfg.backends + 1);
        for p in client_lan.iter_mut().chain(server_lan.iter_mut()) {
            p.set_faults(cfg.faults);
        }
        let proxy_client_port = client_lan.remove(0);
        let proxy_server_port = server_lan.remove(0);
        let attacker = client_lan.pop().ok_or(super::SimError::Pool(dataplane::buf::PoolError::Empty))?;

        let pcfg = Arc::new(proxy_config(&cfg));
        let (to_server, from_client) = crossbeam_channel::bounded::<ToServer>(8192);
        let (to_client, from_server) = crossbeam_channel::bounded::<ToClient>(8192);
        let (tap_tx, tap_rx) = crossbeam_channel::bounded::<ToClient>(8192);
        let core_a = ClientCore::new(pcfg.clone(), proxy_client_port, to_server, from_server, apps)?;
        let core_b = ServerCore::new(pcfg, proxy_server_port, tap_tx, from_client, clock.now())?;

        let clients = client_lan
            .into_iter()
            .enumerate()
            .map(|(i, port)| Client {
                host: SmolHost::new(
                    port,
                    host_mac(0x20, i),
                    client_ip(i),
                    24,
                    cfg.seed ^ (100 + i as u64),
                    clock.now(),
                ),
                conns: Vec::new(),
                next_port: 40_000,
                buffer: cfg.peer_buffer,
                smol_next: Instant::ZERO,
                next_start: Instant::FAR_FUTURE,
                kicked: true,
            })
            .collect();
        let mut backends: Vec<Backend> = server_lan
            .into_iter()
            .enumerate()
            .map(|(i, port)| Backend {
                host: SmolHost::new(
                    port,
                    host_mac(0x90, i),
                    backend_ip(i),
                    24,
                    cfg.seed ^ (7 + i as u64),
                    clock.now(),
                ),
                conns: Vec::new(),
                listeners: cfg.backend_listeners,
                buffer: cfg.peer_buffer,
                finished: Vec::new(),
                ids: HashSet::new(),
                smol_next: Instant::ZERO,
            })
            .collect();
        for b in &mut backends {
            for _ in 0..b.listeners {
                b.add_listener();
            }
        }
        Ok(Sim {
            buf: vec![0; 16 * 1024],
            cfg,
            clock,
            core_a,
            core_b,
            clients,
            backends,
            client_ctl,
            server_ctl,
            attacker,
            attacker_rx: 0,
            tap_rx,
            tap_tx: to_client,
            tap_held: VecDeque::new(),
            health_seen: Vec::new(),
            app_busy,
            next_id: 0,
            release: false,
            iterations: 0,
            invariant1_checks: 0,
            invariant1_violations: 0,
            peak_flows: 0,
            horizon: Instant::FAR_FUTURE,
        })
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Schedules a connection from client host `host` at `start_at`; returns its stream id.
    pub fn connect(&mut self, host: usize, payload: Payload, start_at: Instant) -> Option<u32> {
        let id = self.next_id;
        let c = self.clients.get_mut(host)?;
        let local_port = c.next_port;
        c.next_port = c.next_port.checked_add(1)?;
        self.next_id += 1;
        let writer = match payload {
            Payload::Echo(n) => Writer::Echo(StreamWriter::new(id, n)),
            Payload::Records { len, count } => Writer::Records { id, len: len.max(20), count, pos: 0 },
        };
        c.conns.push(Conn {
            id,
            local_port,
            payload,
            start_at,
            handle: None,
            writer,
            echo: StreamReader::new(),
            outcome: Outcome::Waiting,
            established: false,
            written: 0,
            acked: 0,
            closed_send: false,
        });
        c.next_start = c.next_start.min(start_at);
        Some(id)
    }

    /// Lets clients close their connections once their echo is complete (they hold them open until then).
    pub fn release(&mut self) {
        self.release = true;
        for c in &mut self.clients {
            c.kicked = true;
        }
    }

    pub fn conns(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.clients.iter().flat_map(|c| c.conns.iter())
    }

    /// Connections whose handshake completed and that have not ended.
    pub fn open_conns(&self) -> usize {
        self.conns().filter(|c| c.established && c.outcome == Outcome::Running).count()
    }

    /// Stream ids backend `i` has seen.
    pub fn backend_ids(&self, i: usize) -> Option<&HashSet<u32>> {
        self.backends.get(i).map(|b| &b.ids)
    }

    /// Sends raw frames from the attacker's port on the client LAN; returns how many the port took.
    pub fn inject(&mut self, frames: &[Vec<u8>]) -> usize {
        let now = self.clock.now();
        let mut batch = Vec::with_capacity(frames.len());
        for f in frames {
            if let Some(mut b) = self.attacker.alloc() {
                if b.extend_from_slice(f).is_ok() {
                    batch.push(b);
                }
            }
        }
        let mut sent = 0;
        while !batch.is_empty() {
            let n = self.attacker.send(now, &mut batch);
            sent += n;
            if n == 0 {
                break;
            }
        }
        sent
    }

    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for c in self.conns() {
            t.conns += 1;
            match c.outcome {
                Outcome::Waiting => t.waiting += 1,
                Outcome::Running => t.running += 1,
                Outcome::Complete => t.complete += 1,
                Outcome::Broken => t.broken += 1,
            }
            t.bad += c.echo.report().bad;
            t.echoed += c.echo.report().good;
        }
        for b in &self.backends {
            for (r, _) in &b.finished {
                t.delivered += r.good;
                t.bad += r.bad;
            }
            for c in &b.conns {
                t.delivered += c.reader.report().good;
                t.bad += c.reader.report().bad;
            }
        }
        t
    }

    /// Invariant 1 under `backend`: no client holds an ACK for a byte of its stream that no backend holds
    /// (received by the application or waiting in its socket). Returns the connections in violation now.
    pub fn check_invariant1(&mut self) -> usize {
        let mut held: HashMap<u32, u64> = HashMap::new();
        for b in &self.backends {
            for (r, n) in &b.finished {
                if let Some(id) = r.id {
                    *held.entry(id).or_insert(0) += n;
                }
            }
            for c in &b.conns {
                if let Some(id) = c.reader.report().id {
                    let queued = b.host.sockets.get::<tcp::Socket>(c.handle).recv_queue() as u64;
                    *held.entry(id).or_insert(0) += c.received + queued;
                }
            }
        }
        let mut bad = 0;
        for c in self.clients.iter().flat_map(|c| c.conns.iter()) {
            if matches!(c.payload, Payload::Echo(_)) && c.acked > held.get(&c.id).copied().unwrap_or(0) {
                bad += 1;
            }
        }
        self.invariant1_checks += 1;
        self.invariant1_violations += bad as u64;
        bad
    }

    /// Runs one pass over the topology at the current virtual time, then moves the clock; returns whether
    /// anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.clock.now();
        let mut work = false;
        let mut next = Instant::FAR_FUTURE;
        let release = self.release;
        for c in &mut self.clients {
            let port_at = c.host.device.port_mut().poll_at().unwrap_or(Instant::FAR_FUTURE);
            if c.kicked || port_at <= now || c.smol_next <= now || c.next_start <= now {
                c.kicked = false;
                // Poll and pump until quiet: a pump that read data may have more to write.
                for _ in 0..8 {
                    let (w, t) = c.host.poll(now);
                    c.smol_next = t;
                    let pumped = pump_client(c, now, release, &mut self.buf);
                    work |= w || pumped;
                    if !pumped {
                        break;
                    }
                }
            }
            let port_at = c.host.device.port_mut().poll_at().unwrap_or(Instant::FAR_FUTURE);
            next = next.min(c.smol_next).min(port_at).min(c.next_start);
        }
        for b in &mut self.backends {
            let port_at = b.host.device.port_mut().poll_at().unwrap_or(Instant::FAR_FUTURE);
            if port_at <= now || b.smol_next <= now {
                for _ in 0..8 {
                    let (w, t) = b.host.poll(now);
                    b.smol_next = t;
                    let pumped = b.pump(&mut self.buf);
                    work |= w || pumped;
                    if !pumped {
                        break;
                    }
                }
            }
            let port_at = b.host.device.port_mut().poll_at().unwrap_or(Instant::FAR_FUTURE);
            next = next.min(b.smol_next).min(port_at);
        }
        let a = self.core_a.step(now);
        let b = self.core_b.step(now);
        work |= a.work > 0 || b.work > 0;
        next = next.min(a.next_deadline).min(b.next_deadline);

        // The tap between core B and core A: forwards everything, notes health verdicts.
        while let Ok(msg) = self.tap_rx.try_recv() {
            if let ToClient::BackendHealth { backend, healthy, .. } = &msg {
                self.health_seen.push(HealthSeen { at: now, backend: backend.0, healthy: *healthy });
            }
            self.tap_held.push_back(msg);
        }
        while let Some(msg) = self.tap_held.pop_front() {
            match self.tap_tx.try_send(msg) {
                Ok(()) => work = true,
                Err(crossbeam_channel::TrySendError::Full(msg)) => {
                    self.tap_held.push_front(msg);
                    break;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => break,
            }
        }

        let mut rx = Vec::new();
        self.attacker.recv(now, &mut rx, 1024);
        self.attacker_rx += rx.len() as u64;
        next = next.min(self.attacker.poll_at().unwrap_or(Instant::FAR_FUTURE));

        self.iterations += 1;
        self.peak_flows = self.peak_flows.max(self.core_a.flow_count());
        if self.iterations % 32 == 0 {
            self.check_invariant1();
        }

        let app_busy = self.app_busy.as_ref().is_some_and(|b| b.load(Ordering::Acquire) > 0);
        if work {
            // Core-to-core messages are not deadlines: run again at once, but never stand still for long.
            if self.iterations % 64 == 0 {
                self.clock.advance(Duration::from_micros(1));
            }
        } else if app_busy {
            // The application's disk works in real time; let it, as if it were instant in virtual time.
            std::thread::sleep(std::time::Duration::from_micros(50));
        } else {
            self.clock.advance_to(next.max(now + Duration::from_micros(1)).min(self.horizon.max(now)));
        }
        work
    }

    /// Steps until `done` holds or virtual time reaches `limit`; returns whether `done` held.
    pub fn run_until(&mut self, limit: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        self.horizon = limit;
        let held = loop {
            if done(self) {
                break true;
            }
            if self.clock.now() >= limit {
                break false;
            }
            self.step();
        };
        self.horizon = Instant::FAR_FUTURE;
        held
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.clock.now() + d;
        self.run_until(until, |_| false);
    }

    /// Every connection has ended, complete or broken.
    pub fn all_done(&self) -> bool {
        self.conns().all(|c| matches!(c.outcome, Outcome::Complete | Outcome::Broken))
    }

    /// Every connection started has its whole echo back (or, under `app`, all its bytes acknowledged).
    pub fn all_delivered(&self) -> bool {
        self.conns().all(|c| match c.payload {
            Payload::Echo(_) => c.echo.is_complete() || c.outcome == Outcome::Broken,
            Payload::Records { .. } => c.writer.is_done(c.written) && c.acked == c.written,
        })
    }

    /// One line per unfinished connection (those not yet delivered first), with the proxy's view of it,
    /// for a failing test's message.
    pub fn unfinished(&self, max: usize) -> String {
        let undelivered = |c: &&Conn| match c.payload {
            Payload::Echo(_) => !c.echo.is_complete(),
            Payload::Records { .. } => c.acked < c.written || !c.writer.is_done(c.written),
        };
        let mut out = String::new();
        let a = self.core_a.debug_flows();
        let first = self.conns().filter(undelivered).take(max);
        let rest = self.conns().filter(|c| c.outcome != Outcome::Complete && !undelivered(c)).take(max);
        for c in first.chain(rest).take(max) {
            out.push_str(&format!("{c:?}\n"));
            let host = self.clients.iter().position(|cl| cl.conns.iter().any(|x| x.id == c.id)).unwrap_or(0);
            let needle = format!(" {}:{} ", client_ip(host), c.local_port);
            for line in a.lines().filter(|l| l.contains(&needle)) {
                out.push_str(&format!("    {line}\n"));
            }
            for (bi, b) in self.backends.iter().enumerate() {
                for bc in b.conns.iter().filter(|bc| bc.reader.report().id == Some(c.id)) {
                    let s = b.host.sockets.get::<tcp::Socket>(bc.handle);
                    out.push_str(&format!(
                        "    backend {bi}: {:?} {:?} received={} echo_pending={} sendq={} recvq={}\n",
                        s.remote_endpoint(),
                        s.state(),
                        bc.received,
                        bc.echo.len(),
                        s.send_queue(),
                        s.recv_queue()
                    ));
                    if let Some(ep) = s.remote_endpoint() {
                        let needle = format!(" {}:{}:{} ", backend_ip(bi), SERVICE_PORT, ep.port);
                        for line in self.core_b.debug_flows().lines().filter(|l| l.contains(&needle)) {
                            out.push_str(&format!("    {line}\n"));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Starts due connections, moves data, verifies echoes, closes finished streams.
fn pump_client(c: &mut Client, now: Instant, release: bool, buf: &mut [u8]) -> bool {
    let mut work = false;
    let mut next_start = Instant::FAR_FUTURE;
    let o = VIP.octets();
    let remote = (IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3])), SERVICE_PORT);
    for conn in &mut c.conns {
        if conn.outcome == Outcome::Waiting {
            if conn.start_at > now {
                next_start = next_start.min(conn.start_at);
                continue;
            }
            let handle = c.host.add_socket(c.buffer);
            let socket = c.host.sockets.get_mut::<tcp::Socket>(handle);
            let ok = socket.connect(c.host.iface.context(), remote, conn.local_port).is_ok();
            conn.handle = Some(handle);
            conn.outcome = if ok { Outcome::Running } else { Outcome::Broken };
            work = true;
        }
        if conn.outcome != Outcome::Running {
            continue;
        }
        let Some(handle) = conn.handle else { continue };
        let s = c.host.sockets.get_mut::<tcp::Socket>(handle);
        if s.state() == tcp::State::Established {
            conn.established = true;
        }
        while s.can_send() && !conn.writer.is_done(conn.written) {
            let n = conn.writer.fill(buf);
            let Ok(sent) = s.send_slice(&buf[..n]) else { break };
            if sent == 0 {
                break;
            }
            conn.writer.advance(sent);
            conn.written += sent as u64;
            work = true;
        }
        conn.acked = conn.written.saturating_sub(s.send_queue() as u64);
        let delivered = match conn.payload {
            Payload::Echo(_) => conn.echo.is_complete(),
            // Under `app` nothing comes back: delivered is "all acknowledged" (the file has it).
            Payload::Records { .. } => conn.writer.is_done(conn.written) && s.send_queue() == 0,
        };
        if release
            && delivered
            && !conn.closed_send
            && conn.writer.is_done(conn.written)
            && s.send_queue() == 0
        {
            s.close();
            conn.closed_send = true;
            work = true;
        }
        while s.can_recv() {
            let Ok(n) = s.recv_slice(buf) else { break };
            if n == 0 {
                break;
            }
            conn.echo.feed(&buf[..n]);
            work = true;
        }
        let state = s.state();
        if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
            conn.outcome = if delivered && conn.closed_send { Outcome::Complete } else { Outcome::Broken };
            work = true;
        } else if conn.closed_send && matches!(conn.payload, Payload::Records { .. }) {
            // The application keeps its side open; all the client's bytes are acknowledged: done.
            conn.outcome = Outcome::Complete;
        }
    }
    c.next_start = next_start;
    work
}

/// How many bytes of records the file holds for each stream id, after checking every line: each must be a
/// whole record exactly as its client wrote it, and no record may appear twice. Returns per stream the
/// number of leading records present (records `0..n` all there), or the first bad line.
pub fn check_records(text: &[u8], len: usize) -> Result<HashMap<u32, u64>, String> {
    let mut seen: HashMap<u32, HashSet<u64>> = HashMap::new();
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let parse = || -> Option<(u32, u64)> {
            let s = std::str::from_utf8(line.get(..18)?).ok()?;
            let id = s.get(0..8)?.parse().ok()?;
            let k = s.get(9..17)?.parse().ok()?;
            Some((id, k))
        };
        let Some((id, k)) = parse() else { return Err(format!("line {i}: unparsable {line:?}")) };
        if line != record(id, k, len).as_slice() {
            return Err(format!(
                "line {i}: record {id}/{k} torn or corrupted: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        if !seen.entry(id).or_default().insert(k) {
            return Err(format!("line {i}: record {id}/{k} appears twice"));
        }
    }
    Ok(seen
        .into_iter()
        .map(|(id, ks)| {
            let mut n = 0;
            while ks.contains(&n) {
                n += 1;
            }
            (id, n)
        })
        .collect())
}

/// Bytes of every stream header (for tests that count body bytes).
pub const STREAM_HEADER: u64 = HEADER_LEN as u64;
