//! Hostile input at the proxy (invariant 5 of DESIGN.md), end to end: while real smoltcp flows stream
//! through the proxy over lossy links, an attacker on the client LAN injects truncated frames, bad IPv4 and
//! TCP checksums, malformed TCP options, IPv4 fragments, RST and SYN floods with random sequence numbers
//! aimed at the real flows' 4-tuples, SYNs from spoofed sources, and segments for flows that do not exist.
//! Every one is a counted drop or answer; nothing panics; the real flows' bytes arrive intact and none is
//! reset.

use control::sim::scale::{
    Outcome, Payload, ScaleConfig, Sim, ATTACKER_MAC, PROXY_CLIENT_MAC, SERVICE_PORT, VIP,
};
use dataplane::gate::AckPolicy;
use dataplane::time::{Duration, Instant};
use dataplane::wire::{
    build_tcp_frame, checksum, EthernetAddress, FrameHeader, Ipv4Address, TcpFlags, TcpOptions, TcpRepr,
};
use std::net::Ipv4Addr;

/// A small deterministic generator (splitmix64), so the attack replays from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn segment(
    src: Ipv4Addr,
    sport: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    options: TcpOptions,
    payload: &[u8],
) -> Vec<u8> {
    let hdr = FrameHeader::new(
        EthernetAddress(ATTACKER_MAC),
        EthernetAddress(PROXY_CLIENT_MAC),
        Ipv4Address(src.octets()),
        Ipv4Address(VIP.octets()),
    );
    let repr = TcpRepr {
        src_port: sport,
        dst_port: SERVICE_PORT,
        seq,
        ack,
        flags,
        window: 1024,
        urgent: 0,
        options,
        payload,
    };
    let mut buf = vec![0u8; 1600];
    let n = build_tcp_frame(&mut buf, &hdr, &repr).expect("frame fits");
    buf.truncate(n);
    buf
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = checksum::finish(checksum::data(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn fix_tcp_checksum(f: &mut [u8]) {
    f[50] = 0;
    f[51] = 0;
    let src = Ipv4Address([f[26], f[27], f[28], f[29]]);
    let dst = Ipv4Address([f[30], f[31], f[32], f[33]]);
    let len = (f.len() - 34) as u16;
    let c = checksum::finish(checksum::combine(&[
        checksum::pseudo_header_ipv4(src, dst, 6, len),
        checksum::data(&f[34..]),
    ]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
}

/// One volley of every kind of bad input; `real` are the real flows' (client address, port).
fn volley(rng: &mut Rng, real: &[(Ipv4Addr, u16)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let src = Ipv4Addr::new(198, 18, 1, 200 + rng.below(40) as u8);
    let good = segment(
        src,
        30_000 + rng.below(1000) as u16,
        rng.next() as u32,
        rng.next() as u32,
        TcpFlags::ACK,
        TcpOptions::default(),
        b"hostile payload",
    );
    // Truncated anywhere (an Ethernet header cut short, an IP header cut short, a TCP header cut short).
    for _ in 0..3 {
        let cut = 1 + rng.below(good.len() as u64 - 2) as usize;
        out.push(good[..cut].to_vec());
    }
    // A bad IPv4 checksum, a bad TCP checksum.
    let mut f = good.clone();
    f[24] ^= 0x5a;
    out.push(f);
    let mut f = good.clone();
    let last = f.len() - 1;
    f[last] ^= 0x01;
    out.push(f);
    // Malformed options: an MSS option whose length byte is 0, then 40 (past the header), checksums right.
    for bad_len in [0u8, 40] {
        let opts = TcpOptions { mss: Some(1460), ..TcpOptions::default() };
        let mut f =
            segment(src, 31_000 + rng.below(1000) as u16, rng.next() as u32, 0, TcpFlags::SYN, opts, &[]);
        f[55] = bad_len;
        fix_tcp_checksum(&mut f);
        out.push(f);
    }
    // IPv4 fragments: more-fragments set, and a non-zero offset.
    for frag in [0x2000u16, 0x0010] {
        let mut f = good.clone();
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        fix_ip_checksum(&mut f);
        out.push(f);
    }
    // RSTs and SYNs with random sequence numbers on the real flows' 4-tuples (RFC 5961: challenge ACKs).
    for _ in 0..4 {
        if let Some(&(ip, port)) = real.get(rng.below(real.len() as u64) as usize) {
            out.push(segment(ip, port, rng.next() as u32, 0, TcpFlags::RST, TcpOptions::default(), &[]));
            out.push(segment(
                ip,
                port,
                rng.next() as u32,
                rng.next() as u32,
                TcpFlags::RST | TcpFlags::ACK,
                TcpOptions::default(),
                &[],
            ));
            out.push(segment(ip, port, rng.next() as u32, 0, TcpFlags::SYN, TcpOptions::default(), &[]));
            // Data with a random sequence number and acknowledgment on a real flow.
            out.push(segment(
                ip,
                port,
                rng.next() as u32,
                rng.next() as u32,
                TcpFlags::ACK | TcpFlags::PSH,
                TcpOptions::default(),
                b"injected",
            ));
        }
    }
    // Segments for flows that do not exist, and a SYN from a spoofed source (a half-open flood).
    for _ in 0..2 {
        out.push(segment(
            src,
            20_000 + rng.below(9000) as u16,
            rng.next() as u32,
            rng.next() as u32,
            TcpFlags::ACK,
            TcpOptions::default(),
            b"x",
        ));
    }
    out.push(segment(
        src,
        50_000 + rng.below(10_000) as u16,
        rng.next() as u32,
        0,
        TcpFlags::SYN,
        TcpOptions::default(),
        &[],
    ));
    out
}

#[test]
fn hostile_frames_are_counted_drops_and_real_flows_stay_intact() {
    let mut cfg = ScaleConfig::lossy(31, AckPolicy::Backend, 4, 2);
    cfg.backend_listeners = 256;
    cfg.max_flows = 1024;
    let mut sim = Sim::new(cfg, Vec::new(), None).unwrap();
    for i in 0..32u64 {
        sim.connect((i % 4) as usize, Payload::Echo(40_000 + i * 100), Instant::from_millis(i)).unwrap();
    }
    sim.release();
    let tuple = |i: u32| (control::sim::scale::client_ip((i % 4) as usize), 40_000 + (i / 4) as u16);
    let mut rng = Rng(0x5eed);
    let mut injected = 0;
    let mut volleys = 0;
    // A volley every 5 ms of virtual time while the real flows run.
    while !sim.all_done() && sim.now() < Instant::from_millis(60_000) {
        // Forged segments aim at the real flows once they are established (a SYN forged before the client's
        // own would take its 4-tuple first, as with any TCP server; that is not another flow's data).
        let real: Vec<(Ipv4Addr, u16)> = sim
            .conns()
            .filter(|c| c.established && c.outcome == Outcome::Running)
            .map(|c| tuple(c.id))
            .collect();
        let frames = volley(&mut rng, &real);
        injected += sim.inject(&frames);
        volleys += 1;
        let until = sim.now() + Duration::from_millis(5);
        sim.run_until(until, |s| s.all_done());
    }
    let (a, io) = (sim.core_a.stats().clone(), sim.core_a.io_stats().clone());
    eprintln!("{volleys} volleys, {injected} frames\nA {a:?}\nio {io:?}\nattacker got {}", sim.attacker_rx);
    let t = sim.tally();
    assert!(sim.all_done(), "{t:?}\n{}", sim.unfinished(8));
    assert!(volleys > 20, "the attack ran through the transfer: {volleys}");
    // The real flows: all complete, every byte intact, nothing acknowledged that the backend lacks.
    assert_eq!(t.complete, 32, "{t:?}\n{}", sim.unfinished(8));
    assert!(sim.conns().all(|c| c.outcome == Outcome::Complete));
    assert_eq!(t.bad, 0, "{t:?}");
    let body: u64 = (0..32u64).map(|i| 40_000 + i * 100).sum();
    assert_eq!((t.delivered, t.echoed), (body, body), "{t:?}");
    sim.check_invariant1();
    assert_eq!(sim.invariant1_violations, 0);
    assert_eq!(a.flows_reset, 0, "no real flow was reset by a forged RST: {a:?}");
    // Each kind of bad frame is counted by its reason.
    let bad = |k: &str| io.bad_frames.get(k).copied().unwrap_or(0);
    for k in ["ipv4_bad_checksum", "tcp_bad_checksum", "tcp_bad_option", "ipv4_fragment"] {
        assert!(bad(k) >= volleys as u64 / 2, "{k}: {:?}", io.bad_frames);
    }
    let truncated: u64 = io
        .bad_frames
        .iter()
        .filter(|(k, _)| k.contains("truncated") || k.contains("length"))
        .map(|(_, v)| v)
        .sum();
    assert!(truncated > 0, "{:?}", io.bad_frames);
    // Segments for unknown flows are strays (answered with RST); forged segments on real flows are refused.
    // (The attacker's link loses frames too, 1 %, so not quite two per volley.)
    assert!(a.stray_segments >= volleys as u64, "{a:?}");
    let refused: u64 = a.segment_errors.values().sum();
    assert!(refused >= volleys as u64, "{a:?}");
    assert!(sim.attacker_rx > 0, "the proxy answered the attacker (RSTs, challenge ACKs)");
}
