//! Test support for the TCP engine: a smoltcp peer on an in-memory `Medium::Ip` device, a seeded lossy,
//! reordering, duplicating link in each direction, a virtual clock, and a checker that inspects every
//! segment the engine emits (ack limit, window right edge, SACK blocks).
//!
//! The engine's segments are turned into IPv4/TCP bytes, and the peer's bytes back into our `TcpRepr`,
//! with smoltcp's own wire types, so these tests do not depend on holdfast's parser or emitter.

#![allow(dead_code, clippy::unwrap_used)]

use dataplane::tcp::{self, seq, Connection, Event};
use dataplane::time::{Duration, Instant};
use dataplane::wire::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp as stcp;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr as STcpRepr, TcpSeqNumber, TcpTimestampRepr,
};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddrV4;

pub const ENG_IP: [u8; 4] = [198, 18, 0, 1];
pub const PEER_IP: [u8; 4] = [198, 18, 0, 2];
pub const ENG_PORT: u16 = 80;
pub const PEER_PORT: u16 = 40000;

pub fn eng_addr() -> SocketAddrV4 {
    SocketAddrV4::new(ENG_IP.into(), ENG_PORT)
}
pub fn peer_addr() -> SocketAddrV4 {
    SocketAddrV4::new(PEER_IP.into(), PEER_PORT)
}

/// The byte at `offset` of the stream in direction `dir` (0: engine to peer, 1: peer to engine).
pub fn pattern(dir: u8, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(dir) << 61);
    (x >> 29) as u8 ^ (offset as u8)
}

/// The stream repeats with this prime period, so an offset error shows unless it is a multiple of it.
const PERIOD: u64 = 1_000_003;
const MAX_SLICE: usize = 64 * 1024;

fn tables() -> &'static [Vec<u8>; 2] {
    static T: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let make =
            |d: u8| (0..PERIOD + MAX_SLICE as u64).map(|i| pattern(d, i % PERIOD)).collect::<Vec<u8>>();
        [make(0), make(1)]
    })
}

/// `len` (at most 64 KiB) bytes of the stream in direction `dir` from `offset`.
pub fn pattern_slice(dir: u8, offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PERIOD) as usize;
    &tables()[usize::from(dir)][start..start + len.min(MAX_SLICE)]
}

thread_local! {
    static PEER_MS: Cell<u32> = const { Cell::new(0) };
}

fn peer_tsval() -> u32 {
    PEER_MS.with(|c| c.get())
}

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}

/// smoltcp 0.12 computes its SACK blocks in `usize` from a sign-extended sequence number and overflows
/// (a debug-build panic inside smoltcp) when out-of-order data straddles 2^32 in its receive space. Keep
/// our ISS clear of that point; wrap-around on the engine's side is covered by its own tests.
fn peer_safe_iss(iss: u32) -> u32 {
    iss % 0xf000_0000
}

/// Which options the peer's side supports (the others are stripped from both SYNs).
#[derive(Clone, Copy, Debug)]
pub struct PeerOpts {
    pub wscale: bool,
    pub sack: bool,
    pub timestamps: bool,
}

impl PeerOpts {
    pub const ALL: PeerOpts = PeerOpts { wscale: true, sack: true, timestamps: true };
    pub const NONE: PeerOpts = PeerOpts { wscale: false, sack: false, timestamps: false };
}

/// Faults of one direction of the link.
#[derive(Clone, Copy, Debug)]
pub struct LinkFaults {
    pub loss: f64,
    pub dup: f64,
    pub delay: Duration,
    /// Extra random delay, up to this much: packets sent close together overtake each other.
    pub jitter: Duration,
}

impl LinkFaults {
    pub fn clean() -> Self {
        LinkFaults { loss: 0.0, dup: 0.0, delay: Duration::from_millis(5), jitter: Duration::ZERO }
    }
    pub fn lossy(loss: f64) -> Self {
        LinkFaults { loss, dup: 0.01, delay: Duration::from_millis(5), jitter: Duration::from_micros(1500) }
    }
}

pub struct Link {
    pub faults: LinkFaults,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    counter: u64,
    rng: ChaCha8Rng,
    /// While set, everything sent is dropped (a dead box's port).
    pub cut: bool,
    pub sent: u64,
    pub dropped: u64,
}

impl Link {
    pub fn new(faults: LinkFaults, seed: u64) -> Self {
        Link {
            faults,
            queue: BinaryHeap::new(),
            counter: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cut: false,
            sent: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: Instant, bytes: Vec<u8>) {
        self.sent += 1;
        if self.cut || self.rng.random_bool(self.faults.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.faults.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter_ns = self.faults.jitter.as_nanos() as u64;
            let j = if jitter_ns > 0 { self.rng.random_range(0..jitter_ns) } else { 0 };
            let at = now + self.faults.delay + Duration::from_nanos(j);
            self.counter += 1;
            self.queue.push(Reverse((at, self.counter, bytes.clone())));
        }
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_at()? <= now {
            self.queue.pop().map(|Reverse((_, _, b))| b)
        } else {
            None
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

/// The peer's in-memory NIC.
#[derive(Default)]
pub struct PeerDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
}

pub struct PeerRx(Vec<u8>);
pub struct PeerTx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for PeerRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PeerTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for PeerDevice {
    type RxToken<'a> = PeerRx;
    type TxToken<'a> = PeerTx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(PeerRx, PeerTx<'_>)> {
        let b = self.rx.pop_front()?;
        Some((PeerRx(b), PeerTx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<PeerTx<'_>> {
        Some(PeerTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        // smoltcp sizes segments from the MSS without taking off the timestamp option, and its interface
        // then drops the 1,512-byte result against a 1,500-byte MTU: leave room for options.
        c.max_transmission_unit = 1600;
        c.checksum = ChecksumCapabilities::ignored();
        c
    }
}

/// Serialises one of the engine's segments as IPv4/TCP bytes, with smoltcp's emitter.
pub fn emit(repr: &TcpRepr<'_>, payload: &[u8], opts: PeerOpts) -> Vec<u8> {
    let f = repr.flags;
    let control = if f.contains(TcpFlags::SYN) {
        TcpControl::Syn
    } else if f.contains(TcpFlags::RST) {
        TcpControl::Rst
    } else if f.contains(TcpFlags::FIN) {
        TcpControl::Fin
    } else if f.contains(TcpFlags::PSH) {
        TcpControl::Psh
    } else {
        TcpControl::None
    };
    let mut sack_ranges = [None; 3];
    for (slot, &(l, r)) in sack_ranges.iter_mut().zip(repr.options.sack.as_slice()) {
        *slot = Some((l, r));
    }
    let syn = f.contains(TcpFlags::SYN);
    let s = STcpRepr {
        src_port: repr.src_port,
        dst_port: repr.dst_port,
        control,
        seq_number: TcpSeqNumber(repr.seq as i32),
        ack_number: f.contains(TcpFlags::ACK).then_some(TcpSeqNumber(repr.ack as i32)),
        window_len: repr.window,
        window_scale: repr.options.window_scale.filter(|_| !syn || opts.wscale),
        max_seg_size: repr.options.mss,
        sack_permitted: repr.options.sack_permitted && opts.sack,
        sack_ranges,
        timestamp: repr
            .options
            .timestamps
            .filter(|_| !syn || opts.timestamps)
            .map(|t| TcpTimestampRepr::new(t.tsval, t.tsecr)),
        payload,
    };
    let src = Ipv4Address::new(ENG_IP[0], ENG_IP[1], ENG_IP[2], ENG_IP[3]);
    let dst = Ipv4Address::new(PEER_IP[0], PEER_IP[1], PEER_IP[2], PEER_IP[3]);
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: s.buffer_len(),
        hop_limit: 64,
    };
    let mut bytes = vec![0u8; ip.buffer_len() + s.buffer_len()];
    // Checksums are not what these tests check, and computing them dominated debug-build runs.
    let caps = ChecksumCapabilities::ignored();
    let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
    ip.emit(&mut p, &caps);
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    s.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
    bytes
}

/// Parses the peer's IPv4/TCP bytes into our `TcpRepr` (borrowing the payload) and hands it to `f`.
pub fn parse<R>(bytes: &[u8], opts: PeerOpts, f: impl FnOnce(&TcpRepr<'_>) -> R) -> Option<R> {
    // Checksums are not what these tests check, and computing them dominated debug-build runs.
    let caps = ChecksumCapabilities::ignored();
    let p = Ipv4Packet::new_checked(bytes).ok()?;
    let ip = Ipv4Repr::parse(&p, &caps).ok()?;
    let t = TcpPacket::new_checked(p.payload()).ok()?;
    let s = STcpRepr::parse(&t, &IpAddress::Ipv4(ip.src_addr), &IpAddress::Ipv4(ip.dst_addr), &caps).ok()?;
    let mut flags = TcpFlags::NONE;
    match s.control {
        TcpControl::Syn => flags |= TcpFlags::SYN,
        TcpControl::Fin => flags |= TcpFlags::FIN,
        TcpControl::Rst => flags |= TcpFlags::RST,
        TcpControl::Psh => flags |= TcpFlags::PSH,
        TcpControl::None => {}
    }
    if s.ack_number.is_some() {
        flags |= TcpFlags::ACK;
    }
    let syn = flags.contains(TcpFlags::SYN);
    let mut sack = SackBlocks::default();
    for &(l, r) in s.sack_ranges.iter().flatten() {
        sack.push(l, r);
    }
    let repr = TcpRepr {
        src_port: s.src_port,
        dst_port: s.dst_port,
        seq: s.seq_number.0 as u32,
        ack: s.ack_number.map_or(0, |a| a.0 as u32),
        flags,
        window: s.window_len,
        urgent: 0,
        options: TcpOptions {
            mss: s.max_seg_size,
            window_scale: s.window_scale.filter(|_| !syn || opts.wscale),
            sack_permitted: s.sack_permitted && opts.sack,
            sack,
            timestamps: s.timestamp.map(|t| Timestamps { tsval: t.tsval, tsecr: t.tsecr }),
        },
        payload: s.payload,
    };
    Some(f(&repr))
}

/// Checks every segment the engine emits against the withheld-ACK contract.
#[derive(Debug, Default)]
pub struct Checker {
    /// The ack limit in force (mirrors what the test set on the engine).
    pub limit: Option<u32>,
    last_right: Option<u32>,
    pub segments: u64,
    pub acks_checked: u64,
    pub sack_blocks_seen: u64,
    pub held_sack_blocks: u64,
}

impl Checker {
    pub fn check(&mut self, eng: &Connection, repr: &TcpRepr<'_>) {
        self.segments += 1;
        let f = repr.flags;
        if !f.contains(TcpFlags::ACK) {
            return;
        }
        if let Some(l) = self.limit {
            assert!(seq::le(repr.ack, l), "ACK {} beyond the limit {} ({:?})", repr.ack, l, repr);
            self.acks_checked += 1;
        }
        if f.contains(TcpFlags::SYN) || f.contains(TcpFlags::RST) {
            return;
        }
        let ws = eng.negotiated().2;
        let right = repr.ack.wrapping_add(u32::from(repr.window) << ws);
        if let Some(prev) = self.last_right {
            assert!(seq::ge(right, prev), "window right edge shrank from {prev} to {right} ({repr:?})");
        }
        self.last_right = Some(right);
        for &(l, r) in repr.options.sack.as_slice() {
            assert!(seq::lt(l, r) && seq::ge(l, repr.ack), "bad SACK block {l}..{r} with ack {}", repr.ack);
            self.sack_blocks_seen += 1;
            if l == repr.ack {
                self.held_sack_blocks += 1;
            }
        }
    }

    /// Forgets the edge history (a restored engine is a new sender of windows).
    pub fn reset_edges(&mut self) {
        self.last_right = None;
    }
}

/// One side's application: pushes a pattern stream and verifies the one it receives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    pub to_send: u64,
    pub sent: u64,
    pub received: u64,
    pub close_when_sent: bool,
    pub closed: bool,
}

/// The engine, the smoltcp peer, two links and a virtual clock.
pub struct Harness {
    pub now: Instant,
    pub cfg: tcp::Config,
    pub eng: Connection,
    pub iface: Interface,
    pub dev: PeerDevice,
    pub sockets: SocketSet<'static>,
    pub handle: SocketHandle,
    pub to_peer: Link,
    pub to_eng: Link,
    pub opts: PeerOpts,
    pub checker: Checker,
    pub eng_app: Stream,
    pub peer_app: Stream,
    /// While false the engine's application reads nothing.
    pub eng_reads: bool,
    /// While false the peer's application reads nothing.
    pub peer_reads: bool,
    pub events: Vec<Event>,
    pub wake: Option<Instant>,
    pub dead: bool,
    /// Prints every refused segment and a periodic summary (env HFT_DEBUG).
    pub debug: bool,
    pub steps: u64,
    pub creeps: u64,
    frame: Vec<u8>,
    scratch: Vec<u8>,
}

pub fn peer_socket(opts: PeerOpts) -> stcp::Socket<'static> {
    let mut s = stcp::Socket::new(
        stcp::SocketBuffer::new(vec![0u8; 256 * 1024]),
        stcp::SocketBuffer::new(vec![0u8; 256 * 1024]),
    );
    if opts.timestamps {
        s.set_tsval_generator(Some(peer_tsval));
    }
    s.set_nagle_enabled(false);
    s
}

impl Harness {
    fn build(
        cfg: tcp::Config,
        eng: Connection,
        opts: PeerOpts,
        faults: (LinkFaults, LinkFaults),
        seed: u64,
        sock: stcp::Socket<'static>,
    ) -> Harness {
        let mut dev = PeerDevice::default();
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = seed;
        let mut iface = Interface::new(ic, &mut dev, smol_now(Instant::ZERO));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(
                IpAddress::Ipv4(Ipv4Address::new(PEER_IP[0], PEER_IP[1], PEER_IP[2], PEER_IP[3])),
                24,
            ))
            .unwrap();
        });
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        Harness {
            now: Instant::ZERO,
            cfg,
            eng,
            iface,
            dev,
            sockets,
            handle,
            to_peer: Link::new(faults.0, seed ^ 0x1111),
            to_eng: Link::new(faults.1, seed ^ 0x2222),
            opts,
            checker: Checker::default(),
            eng_app: Stream::default(),
            peer_app: Stream::default(),
            eng_reads: true,
            peer_reads: true,
            events: Vec::new(),
            wake: None,
            dead: false,
            debug: std::env::var_os("HFT_DEBUG").is_some(),
            steps: 0,
            creeps: 0,
            frame: vec![0u8; 2048],
            scratch: vec![0u8; 64 * 1024],
        }
    }

    /// The engine connects to a listening smoltcp peer.
    pub fn active(cfg: tcp::Config, opts: PeerOpts, faults: LinkFaults, seed: u64) -> Harness {
        let iss = peer_safe_iss(tcp::isn(&cfg.isn_secret, eng_addr(), peer_addr(), Instant::ZERO));
        let eng = Connection::connect(Instant::ZERO, &cfg, eng_addr(), peer_addr(), iss);
        let mut sock = peer_socket(opts);
        sock.listen(PEER_PORT).unwrap();
        Harness::build(cfg, eng, opts, (faults, faults), seed, sock)
    }

    /// smoltcp connects; the engine accepts the first SYN it sees (with `limit` set before anything goes
    /// out). The engine is a placeholder until that SYN arrives.
    pub fn passive(
        cfg: tcp::Config,
        opts: PeerOpts,
        faults: LinkFaults,
        seed: u64,
        limit: Option<u32>,
    ) -> Harness {
        let mut sock = peer_socket(opts);
        let placeholder = Connection::connect(Instant::ZERO, &cfg, eng_addr(), peer_addr(), 0);
        let mut h = {
            let mut dev = PeerDevice::default();
            let mut ic = IfaceConfig::new(HardwareAddress::Ip);
            ic.random_seed = seed;
            let mut iface = Interface::new(ic, &mut dev, smol_now(Instant::ZERO));
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(
                    IpAddress::Ipv4(Ipv4Address::new(PEER_IP[0], PEER_IP[1], PEER_IP[2], PEER_IP[3])),
                    24,
                ))
                .unwrap();
            });
            sock.connect(
                iface.context(),
                (IpAddress::Ipv4(Ipv4Address::new(ENG_IP[0], ENG_IP[1], ENG_IP[2], ENG_IP[3])), ENG_PORT),
                PEER_PORT,
            )
            .unwrap();
            let mut h = Harness::build(cfg, placeholder, opts, (faults, faults), seed, sock);
            h.iface = iface;
            h.dev = dev;
            h
        };
        // Get the SYN across, untouched by faults, and accept it.
        h.poll_peer();
        let syn = h.dev_tx_take();
        assert_eq!(syn.len(), 1, "smoltcp sends one SYN");
        let iss = peer_safe_iss(tcp::isn(&h.cfg.isn_secret, eng_addr(), peer_addr(), h.now));
        let cfg = h.cfg.clone();
        let now = h.now;
        h.eng = parse(&syn[0], opts, |r| Connection::accept(now, &cfg, eng_addr(), peer_addr(), r, iss))
            .unwrap()
            .unwrap();
        h.eng.set_ack_limit(limit);
        h.checker.limit = limit;
        h
    }

    fn dev_tx_take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.dev.tx)
    }

    pub fn sock(&mut self) -> &mut stcp::Socket<'static> {
        self.sockets.get_mut::<stcp::Socket>(self.handle)
    }

    pub fn set_limit(&mut self, limit: Option<u32>) {
        self.checker.limit = limit;
        self.eng.set_ack_limit(limit);
    }

    fn poll_peer(&mut self) {
        PEER_MS.with(|c| c.set(self.now.as_millis() as u32));
        self.iface.poll(smol_now(self.now), &mut self.dev, &mut self.sockets);
    }

    /// Drains the engine's output onto the link, checking every segment.
    pub fn flush_engine(&mut self) {
        if self.dead {
            return;
        }
        let mut burst = 0u32;
        while let Some(t) = self.eng.poll_transmit(self.now, &mut self.frame) {
            burst += 1;
            assert!(burst < 10_000, "engine output does not stop: {t:?}");
            self.checker.check(&self.eng, &t.repr);
            let bytes = emit(&t.repr, &self.frame[..t.payload_len], self.opts);
            self.to_peer.send(self.now, bytes);
        }
        self.take_events();
    }

    /// Collects the engine's events; must run before the application feeds more bytes, since a resync
    /// moves where the next byte goes.
    pub fn take_events(&mut self) {
        while let Some(e) = self.eng.poll_event() {
            if let Event::SendResynced { unbuffered, .. } = e {
                // The peer already has these bytes: the application skips them in its stream.
                self.eng_app.sent += u64::from(unbuffered);
            }
            self.events.push(e);
        }
    }

    fn flush_peer(&mut self) {
        self.poll_peer();
        for b in self.dev_tx_take() {
            self.to_eng.send(self.now, b);
        }
    }

    /// Moves application bytes on both sides.
    pub fn run_apps(&mut self) {
        if !self.dead {
            self.take_events();
            // Engine side.
            while self.eng_app.sent < self.eng_app.to_send {
                let room = self.eng.send_capacity().min(self.scratch.len()) as u64;
                let n = (self.eng_app.to_send - self.eng_app.sent).min(room) as usize;
                if n == 0 {
                    break;
                }
                let k = self.eng.send(pattern_slice(0, self.eng_app.sent, n));
                self.eng_app.sent += k as u64;
                if k < n {
                    break;
                }
            }
            if self.eng_app.close_when_sent
                && !self.eng_app.closed
                && self.eng_app.sent == self.eng_app.to_send
            {
                self.eng.close();
                self.eng_app.closed = true;
            }
            if self.eng_reads {
                loop {
                    let n = self.eng.recv(&mut self.scratch);
                    if n == 0 {
                        break;
                    }
                    let off = self.peer_app.received;
                    assert!(
                        self.scratch[..n] == *pattern_slice(1, off, n),
                        "engine received wrong bytes in {off}..{}",
                        off + n as u64
                    );
                    self.peer_app.received += n as u64;
                }
            }
        }
        // Peer side.
        let mut buf = std::mem::take(&mut self.scratch);
        loop {
            let sent = self.peer_app.sent;
            let to_send = self.peer_app.to_send;
            if sent >= to_send || !self.sock().can_send() {
                break;
            }
            let room = (self.sock().send_capacity() - self.sock().send_queue()).min(buf.len()) as u64;
            let n = (to_send - sent).min(room) as usize;
            if n == 0 {
                break;
            }
            let k = self.sock().send_slice(pattern_slice(1, sent, n)).unwrap_or(0);
            self.peer_app.sent += k as u64;
            if k == 0 {
                break;
            }
        }
        if self.peer_app.close_when_sent
            && !self.peer_app.closed
            && self.peer_app.sent == self.peer_app.to_send
        {
            self.sock().close();
            self.peer_app.closed = true;
        }
        if self.peer_reads {
            while self.sock().can_recv() {
                let n = self.sock().recv_slice(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let off = self.eng_app.received;
                assert!(
                    buf[..n] == *pattern_slice(0, off, n),
                    "peer received wrong bytes in {off}..{}",
                    off + n as u64
                );
                self.eng_app.received += n as u64;
            }
        }
        self.scratch = buf;
    }

    /// Delivers everything due at `now` on both links.
    fn deliver(&mut self) {
        while let Some(b) = self.to_peer.pop_due(self.now) {
            self.dev.rx.push_back(b);
        }
        while let Some(b) = self.to_eng.pop_due(self.now) {
            if self.dead {
                continue;
            }
            let now = self.now;
            let eng = &mut self.eng;
            let dbg = self.debug;
            let _ = parse(&b, self.opts, |r| {
                let res = eng.handle_segment(now, r);
                if dbg && res.is_err() {
                    eprintln!(
                        "{now} in seq={} ack={} len={} flags={:?} ts={:?} recent={} -> {res:?}",
                        r.seq,
                        r.ack,
                        r.payload.len(),
                        r.flags,
                        r.options.timestamps,
                        eng.save().ts_recent
                    );
                }
                res
            });
        }
    }

    /// Applications move bytes and both sides send what they have.
    pub fn pump(&mut self) {
        self.run_apps();
        self.flush_engine();
        self.flush_peer();
        self.flush_engine();
    }

    /// Moves time to the next event and runs inputs and timers due then. Returns false when nothing at all
    /// is scheduled.
    pub fn advance(&mut self) -> bool {
        let smol_next = self
            .iface
            .poll_delay(smol_now(self.now), &self.sockets)
            .map(|d| self.now + Duration::from_micros(d.total_micros()));
        let eng_next = if self.dead { None } else { self.eng.poll_timeout() };
        let next = [smol_next, eng_next, self.to_peer.next_at(), self.to_eng.next_at(), self.wake]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        // smoltcp may ask to be polled "now" again; let time creep so the loop always progresses.
        self.steps += 1;
        if next <= self.now {
            self.creeps += 1;
        }
        self.now = if next > self.now { next } else { self.now + Duration::from_micros(10) };
        if self.wake.is_some_and(|w| w <= self.now) {
            self.wake = None;
        }
        self.deliver();
        if !self.dead && self.eng.poll_timeout().is_some_and(|t| t <= self.now) {
            self.eng.handle_timeout(self.now);
        }
        true
    }

    /// Pumps and advances until `done` holds; panics with a summary after `limit` of virtual time or when
    /// nothing is scheduled any more.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Harness) -> bool) {
        let end = self.now + limit;
        let mut report = self.now;
        loop {
            if self.debug && self.now >= report {
                report = self.now + Duration::from_millis(500);
                let now = self.now;
                eprintln!("{now}: {}", self.summary());
            }
            self.pump();
            if done(self) {
                return;
            }
            if self.now >= end {
                let now = self.now;
                panic!("no completion by {now}: {}", self.summary());
            }
            if !self.advance() {
                let now = self.now;
                panic!("stalled at {now}: {}", self.summary());
            }
        }
    }

    pub fn transfers_done(&self) -> bool {
        self.eng_app.received == self.eng_app.to_send && self.peer_app.received == self.peer_app.to_send
    }

    pub fn summary(&mut self) -> String {
        let st = self.sock().state();
        format!(
            "q {}/{}/{} steps {} creeps {} engine {:?} una={} max={} wnd={} cwnd={} rcv_nxt={} acked={} ctr={:?}; peer {:?}; eng_app {:?}; peer_app {:?}; links sent/dropped {}/{} {}/{}",
            self.to_peer.queue.len(),
            self.to_eng.queue.len(),
            self.dev.rx.len(),
            self.steps,
            self.creeps,
            self.eng.state(),
            self.eng.snd_una(),
            self.eng.snd_max(),
            self.eng.snd_wnd(),
            self.eng.cwnd(),
            self.eng.rcv_nxt(),
            self.eng.ack_sent(),
            self.eng.counters(),
            st,
            self.eng_app,
            self.peer_app,
            self.to_peer.sent,
            self.to_peer.dropped,
            self.to_eng.sent,
            self.to_eng.dropped
        )
    }

    /// Runs the handshake to ESTABLISHED on both sides.
    pub fn establish(&mut self) {
        self.run_until(Duration::from_secs(30), |h| {
            h.eng.state() == tcp::State::Established && h.sock().state() == stcp::State::Established
        });
    }
}
